"""Compiled models side by side: size, encoder latency, decoder latency per token, real-time factor, accuracy.

Systems, all from the same reference model and the same calibration set (made by the calibration stages'
cores from synthetic speech):

* torch fp32: the HF model (decoder with its KV cache), the transcribe_fp32 stage's reference;
* ORT fp32: the ONNX export in the NPU's I/O layout, not quantized;
* ORT INT8 dynamic; dynamic keeping fc2 in float (the params.yaml default); static (QDQ, calibrated,
  ``compile.onnxruntime`` defaults otherwise) -- each built by the compile stage's own ``run``.

The ORT decoder has no KV cache (it re-runs the whole sequence each step, as the NPU decoder is driven), so
its per-token time grows with the length; the torch decoder's does not. Timing: ``--repeats`` passes over the
evaluation clips (after one warm-up clip), systems in rotating order; encoder ms = median per clip, decoder
ms/token = decoder time / decoder calls, real-time factor = (encoder + decoder time) / audio duration, each
the median over the passes.
Accuracy: cosine vs torch fp32 on held-out calibration entries (the compile stage's numerics metric), the
share of evaluation decodes with exactly the fp32 tokens, and the error rate (WER, CER for zh/ja/th) against
the clips' reference text. ``--evaluate-metrics metrics/evaluate.json`` adds the score stage's figures
from a pipeline run.
"""
from __future__ import annotations

import argparse
import copy
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import (
    Table,
    command,
    default_params,
    median,
    print_tables,
    reference_model,
    synth_audio,
    write_params,
)

log = logging.getLogger(__name__)

MODULE = "bench.compiled_models"
DEFAULT_LANGUAGES = ("de_de", "en_us", "es_419")
# name -> compile.onnxruntime overrides (None: ONNX export without quantization)
MODES: dict[str, dict | None] = {
    "ORT fp32": None,
    "ORT INT8 dynamic": {"mode": "dynamic", "keep_float": []},
    "ORT INT8 dynamic, fc2 float (default)": {"mode": "dynamic", "keep_float": ["fc2"]},
    "ORT INT8 static (minmax, fc2 float)": {"mode": "static", "keep_float": ["fc2"]},
}


@dataclass
class Timing:
    encoder_s: list[float]
    decoder_s: list[float]
    decoder_calls: list[int]
    tokens: list[list[int]]
    texts: list[str]

    def per_token_ms(self) -> float:
        return 1000 * sum(self.decoder_s) / max(1, sum(self.decoder_calls))


# ---------------------------------------------------------------------------------------------- building

def calibration_sets(model: Any, processor: Any, clips: Sequence[Any], out: Path, params: Any) -> tuple[Path, Path]:
    """The calibrate_encoder / calibrate_decoder outputs for ``clips`` (their list file and JSON)."""
    from stages import calibrate_decoder as dec_stage
    from stages import calibrate_encoder as enc_stage
    from whisper_npu import specs
    from whisper_npu.calibration import sequences as cal

    enc_stage.build_encoder_set(list(clips), processor.feature_extractor, model.config, out / "encoder")
    tasks = cal.task_mix(clips, params.calibration.translate_ratio, params.seed)
    samples = dec_stage.plan_samples(clips, tasks, "generated")
    (out / "decoder").mkdir(parents=True, exist_ok=True)
    dec_stage.write_decoder_set(model, processor, samples, out / "decoder", params.calibration, params.seed)
    return out / "encoder" / specs.ENCODER_LIST, out / "decoder" / specs.DECODER_JSON


def export_fp32(model: Any, out: Path, opset: int, stem: str) -> tuple[Path, Path]:
    """ONNX fp32 encoder and decoder folders that ``load_ort_backend`` reads (minimal provenance.json)."""
    from whisper_npu import specs
    from whisper_npu.artifacts import EMBED_POSITIONS, EMBED_TOKENS, PROVENANCE
    from whisper_npu.compilers.onnxruntime import export as onnx_export
    from whisper_npu.core.files import write_json

    dirs = []
    for comp in ("encoder", "decoder"):
        d = out / comp
        d.mkdir(parents=True, exist_ok=True)
        name = f"{stem}_{comp}.onnx"
        onnx_export.export_onnx(onnx_export.npu_module(model, comp), specs.component_spec(comp, model.config), d / name,
                                opset)
        artifacts = {"model": name}
        if comp == "decoder":
            tokens, positions = specs.embedding_tables(model)
            np.save(d / EMBED_TOKENS, tokens)
            np.save(d / EMBED_POSITIONS, positions)
            artifacts.update(embed_tokens=EMBED_TOKENS, embed_positions=EMBED_POSITIONS)
        write_json(d / PROVENANCE, {"component": comp, "backend": "onnxruntime", "artifacts": artifacts,
                                    "quantization": {"mode": "fp32"}})
        dirs.append(d)
    return dirs[0], dirs[1]


def compile_mode(overrides: dict, base_params: dict, store: Path, toolchain: Path, calib: tuple[Path, Path],
                 out: Path) -> tuple[Path, Path, dict]:
    """compile@encoder and compile@decoder through the stage's own ``run``; returns dirs and metrics."""
    from stages import compile as compile_stage
    from whisper_npu.core.files import read_json

    params = copy.deepcopy(base_params)
    params["compile"]["backend"] = "onnxruntime"
    params["compile"]["onnxruntime"].update(overrides)
    out.mkdir(parents=True, exist_ok=True)
    params_path = write_params(out / "params.yaml", params)
    metrics = {}
    for comp, calib_path in zip(("encoder", "decoder"), calib):
        compile_stage.run(comp, params_path, toolchain, store, calib_path, out / comp, out / f"metrics_{comp}.json")
        metrics[comp] = read_json(out / f"metrics_{comp}.json")
    return out / "encoder", out / "decoder", metrics


# ---------------------------------------------------------------------------------------------- timing

def time_backend(backend: Any, features: Sequence[np.ndarray], langs: Sequence[str], cfg: Any) -> Timing:
    """Encoder and greedy decoder wall time per clip (one untimed warm-up on the first clip)."""
    from whisper_npu.decoding.greedy import greedy_decode

    states = backend.encoder(features[0])
    greedy_decode(backend.decoder, states, cfg.prompt(langs[0], "transcribe"), cfg)
    t = Timing([], [], [], [], [])
    for feats, lang in zip(features, langs):
        start = time.perf_counter()
        states = backend.encoder(feats)
        mid = time.perf_counter()
        tokens, stop = greedy_decode(backend.decoder, states, cfg.prompt(lang, "transcribe"), cfg)
        end = time.perf_counter()
        t.encoder_s.append(mid - start)
        t.decoder_s.append(end - mid)
        # one call for the prompt, one per generated token, except after the last one when the length
        # limits (not the model) stopped decoding
        t.decoder_calls.append(1 + len(tokens) - (stop != "eot"))
        t.tokens.append(tokens)
    return t


def error_rate(texts: Sequence[str], clips: Sequence[Any]) -> float | None:
    """Mean over languages of WER (CER for zh/ja/th) against the clips' reference transcription."""
    from whisper_npu.eval import metrics as M

    per_lang = []
    for lang in sorted({c.lang for c in clips}):
        pairs = [(c.text, h) for c, h in zip(clips, texts) if c.lang == lang and c.text]
        if pairs:
            per_lang.append(M.error_rate([r for r, _ in pairs], [h for _, h in pairs], lang))
    vals = [v for v in per_lang if v is not None]
    return float(statistics.mean(vals)) if vals else None


def _size_mb(*paths: Path) -> float:
    return sum(p.stat().st_size for p in paths) / 1e6


# ---------------------------------------------------------------------------------------------- table

def evaluate_note(path: Path | None) -> list[str]:
    """One line from the score stage's metrics file (metrics/evaluate.json), if given and present."""
    if path is None or not path.is_file():
        return []
    from whisper_npu.core.files import read_json

    m = read_json(path)
    o = m.get("overall", {})
    fp, co = o.get("fp32", {}), o.get("compiled") or {}
    # WER and CER languages, real and synthetic speech are summarised apart (never one mean across them)
    rates = "; ".join(f"{unit} {speech} fp32 {g.get('fp32')} -> compiled {g.get('compiled')}"
                      for unit, groups in m.get("summary", {}).items() for speech, g in groups.items())
    return [f"{path} (score stage, compiled = {m.get('backends', {}).get('compiled')}, {o.get('clips')} clips): "
            f"{rates}, BLEU {fp.get('bleu')} -> {co.get('bleu')}, RTF {fp.get('rtf')} -> {co.get('rtf')}, "
            f"exact text match {(o.get('agreement') or {}).get('exact_match')}"]


def table(rows: list[dict], cmd: str, model_name: str, n_clips: int, notes: list[str]) -> Table:
    t = Table(f"Compiled models ({model_name}, {n_clips} evaluation clips)",
              ["system", "size MB (enc + dec)", "encoder ms", "decoder ms/token", "RTF", "encoder cosine",
               "decoder logits cosine (top-1)", "same tokens as fp32", "error rate"], command=cmd, digits=3)
    for r in rows:
        dec = None if r["dec_cos"] is None else (f"{r['dec_cos']:.4f}"
                                                 + (f" ({r['top1']:.2f})" if r["top1"] is not None else ""))
        size = (f"{r['size_enc']:.1f} (whole model)" if r["size_dec"] is None
                else f"{r['size_enc']:.1f} + {r['size_dec']:.1f}")
        t.add(r["name"], size, f"{r['enc_ms']:.0f}", f"{r['tok_ms']:.1f}", f"{r['rtf']:.3f}",
              None if r["enc_cos"] is None else f"{r['enc_cos']:.4f}", dec, r["same"],
              None if r["err"] is None else f"{r['err']:.3f}")
    t.notes += ["cosine: vs torch fp32 on the compile stage's held-out calibration entries (mean); decoder under "
                "teacher forcing (top-1 = share of positions with the same argmax)",
                "torch fp32 size: model.safetensors (encoder + decoder + shared embeddings, one file); ORT decoder "
                "sizes exclude the embedding tables run on the CPU",
                "ORT decoders have no KV cache (full sequence per step, as the NPU runs it): ms/token grows with "
                "length; torch uses its KV cache", *notes]
    return t


def run(argv: Sequence[str] | None = None) -> list[Table]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=("base", "tiny"), default="base")
    p.add_argument("--languages", nargs="+", default=list(DEFAULT_LANGUAGES))
    p.add_argument("--calib-per-language", type=int, default=4)
    p.add_argument("--eval-per-language", type=int, default=2)
    p.add_argument("--max-new-tokens", type=int, default=None, help="decode cap (default: transcribe.max_new_tokens)")
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES), metavar="MODE")
    p.add_argument("--repeats", type=int, default=3, help="timing passes over the clips (median)")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--evaluate-metrics", type=Path, default=Path("metrics/evaluate.json"))
    p.add_argument("--workdir", type=Path, default=None)
    p.add_argument("--quick", action="store_true", help="tiny model, 1 language, 2+1 clips, 8 tokens")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = p.parse_args(argv)
    if args.quick:
        args.model, args.languages, args.calib_per_language, args.eval_per_language = "tiny", ["es_419"], 2, 1
        args.repeats = 1
        args.max_new_tokens = args.max_new_tokens or 8

    import torch

    from stages import toolchain
    from whisper_npu.artifacts import artifact
    from whisper_npu.audio.clips import read_clips
    from whisper_npu.audio.features import npu_features
    from whisper_npu.audio.prepare import read_wav
    from whisper_npu.decoding.greedy import DecodeConfig, tokenizer_text
    from whisper_npu.model.store import hf_dir, load_hf
    from whisper_npu.params.full import load_params
    from whisper_npu.runtimes.onnxruntime import load_ort_backend
    from whisper_npu.runtimes.torch_ref import TorchBackend

    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-compiled-") as tmp:
        workdir = args.workdir or Path(tmp)
        store = reference_model(args.model, workdir)
        base = default_params()
        base["languages"] = list(args.languages)
        base["audio"].update(calibration_clips=args.calib_per_language, eval_clips=args.eval_per_language,
                             per_language={})   # synthetic speech (synth_audio below) for every language
        base["calibration"]["samples_per_language"] = args.calib_per_language
        if args.quick:
            base["calibration"]["max_new_tokens"] = 8
            base["compile"]["onnxruntime"]["calibration_samples"] = 1
            base["compile"]["numerics_samples"] = 1
        if args.max_new_tokens:
            base["transcribe"]["max_new_tokens"] = args.max_new_tokens
        params = load_params(write_params(workdir / "params.yaml", base))
        audio = synth_audio(workdir, args.languages, args.calib_per_language, args.eval_per_language)
        model, processor = load_hf(store)
        calib = calibration_sets(model, processor,
                                 read_clips(audio, args.languages, "calibration", args.calib_per_language),
                                 workdir / "calibration", params)
        toolchain.main(["--params", str(workdir / "params.yaml"), "--out", str(workdir / "toolchain.json")])
        clips = read_clips(audio, args.languages, "evaluation")
        features = [npu_features(processor.feature_extractor, read_wav(c.audio)) for c in clips]
        langs = [c.whisper_lang for c in clips]
        duration = sum(c.duration for c in clips)
        cfg = DecodeConfig.from_params(model.generation_config, model.config, params.transcribe)
        to_text = tokenizer_text(processor.tokenizer)

        weights = hf_dir(store) / "model.safetensors"
        systems = [("torch fp32 (HF, KV cache)", TorchBackend(model), (_size_mb(weights), None), None)]
        export_numerics: dict = {}
        for name in args.modes:
            overrides = MODES[name]
            out = workdir / "compiled" / name.split(" (")[0].replace(" ", "_").replace(",", "")
            if overrides is None:
                enc_dir, dec_dir = export_fp32(model, out, params.compile.opset, "model")
                numerics: dict | None = {}   # filled from a compiled mode's export check below
            else:
                enc_dir, dec_dir, numerics = compile_mode(overrides, base, store, workdir / "toolchain.json",
                                                          calib, out)
                export_numerics = {c: {"compiled": m["export_fp32"]} for c, m in numerics.items()}
            systems.append((name, load_ort_backend(enc_dir, dec_dir, threads=args.threads),
                            (_size_mb(artifact(enc_dir)), _size_mb(artifact(dec_dir))), numerics))
        # ORT fp32 vs torch: what the compile stage measured on its fp32 export
        systems = [(n, b, sz, export_numerics if num == {} else num) for n, b, sz, num in systems]

        # Repeats in rotating order, so no system always runs first or last; medians over the repeats.
        timings: dict[str, list[Timing]] = {n: [] for n, *_ in systems}
        for r in range(args.repeats):
            for n, backend, *_ in systems[r % len(systems):] + systems[: r % len(systems)]:
                log.info("repeat %d: timing %s", r, n)
                timings[n].append(time_backend(backend, features, langs, cfg))
        for n, _, sizes, numerics in systems:
            ts = timings[n]
            enc = (numerics or {}).get("encoder", {}).get("compiled", {}).get("encoder_hidden_states", {})
            dec = (numerics or {}).get("decoder", {}).get("compiled", {}).get("logits", {})
            ref = numerics is None   # the reference itself
            rows.append({"name": n, "size_enc": sizes[0], "size_dec": sizes[1],
                         "enc_ms": 1000 * median([median(t.encoder_s) for t in ts]),
                         "tok_ms": median([t.per_token_ms() for t in ts]),
                         "rtf": median([(sum(t.encoder_s) + sum(t.decoder_s)) / duration for t in ts]),
                         "enc_cos": enc.get("cosine_mean", 1.0 if ref else None),
                         "dec_cos": dec.get("cosine_mean", 1.0 if ref else None),
                         "top1": dec.get("top1_agreement", 1.0 if ref else None), "tokens": ts[0].tokens,
                         "err": error_rate([to_text(x) for x in ts[0].tokens], clips)})
        ref_tokens = rows[0]["tokens"]
        for r in rows:
            r["same"] = f"{sum(a == b for a, b in zip(r['tokens'], ref_tokens))}/{len(ref_tokens)}"
    name = "whisper-base" if args.model == "base" else "tiny random Whisper, code path only"
    return [table(rows, command(MODULE, argv), name, len(clips), evaluate_note(args.evaluate_metrics))]


def main(argv: Sequence[str] | None = None) -> None:
    print_tables(run, argv)


if __name__ == "__main__":
    main()
