"""Evaluate stage: what compilation did to accuracy, per language, as DVC metrics and plots.

Runs the fp32 reference (HF Whisper in torch) and the compiled model (the compile stage's backend:
ONNX Runtime INT8 here, the .mxq files on a Mobilint NPU host) through one greedy decode loop
(whisper_npu/decode.py) on the evaluation clips of the listed languages (never the calibration clips),
and scores them (whisper_npu/metrics.py, ``score``):

* transcribe: WER (CER for zh/ja/th) against the reference text, with jiwer's substitutions, deletions and
  insertions per language and system; compared without diacritics where the source's transcripts have none;
* translate (non-English sources with an English reference): BLEU against ``text_en``;
* per language and task, a paired bootstrap 95 % interval of compiled minus fp32 (seeded from ``seed``), and
  a verdict against ``evaluate.max_wer_increase``: pass (interval within the budget), fail (interval above
  it) or inconclusive (straddles it, or fewer than ``evaluate.min_verdict_clips`` scored clips); fatal only
  with ``evaluate.strict`` when a language fails (a failed stage leaves no outputs);
* stop reasons per system (end of text, the token cap, the repetition guard) and clips cut by the cap;
* agreement of the compiled outputs with the fp32 outputs, real-time factor of each backend, model sizes.

``summary`` holds unweighted means over languages, WER languages and CER languages apart and real and
synthetic speech apart (never one mean across them), with the verdict counts; ``budget`` counts the
verdicts. When the compiled model cannot run on this host (``CompiledNotRunnable``: .mxq files without
Mobilint's runtime), fp32 is still scored, ``compiled_run`` says why, and every verdict is ``not_checked``.

Outputs: the metrics JSON (a DVC metric), two plot tables (per-language rows, fp32 vs compiled) and every
hypothesis as JSONL. Real-time factors are wall-clock figures: they change from run to run.
"""
from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from whisper_npu import metrics as M
from whisper_npu.audio import TRANSCRIBE, Clip, npu_features, read_clips, read_wav
from whisper_npu.backends import CompiledNotRunnable, compiled_backend_name, load_compiled
from whisper_npu.decode import DecodeConfig, batched, greedy_decode, greedy_decode_batch, tokenizer_text
from whisper_npu.io import StageError, atomic_output, run_stage, write_json, write_jsonl
from whisper_npu.metrics import COMPILED, FP32
from whisper_npu.params import EvaluateParams, load_params
from whisper_npu.runtime import Backend

log = logging.getLogger(__name__)



# ---------------------------------------------------------------------------------------------- decoding

def run_backend(system: str, backend: Backend, clips: Sequence[Clip], feats: Sequence[np.ndarray],
                cfg: DecodeConfig, to_text: Callable[[list[int]], str]) -> list[dict[str, Any]]:
    """Decode a batch of clips (``feats[i]`` the features of ``clips[i]``) with every task each has; one
    record per (clip, task).

    The encoder runs per clip. A decoder that batches (:func:`whisper_npu.decode.batched`: the torch
    reference) decodes every (clip, task) of the batch at once, the others one at a time (ONNX, NPU: batch 1).
    ``seconds`` (kept out of the transcripts file) is the clip's encoder time for the transcribe task (the
    encoder output is reused for translate) plus the item's decode time; in a batch, the batch's decode time
    shared equally by its items.
    """
    items, encode_seconds = [], []
    for clip, f in zip(clips, feats):
        start = time.perf_counter()
        states = backend.encoder(f)
        encode_seconds.append(time.perf_counter() - start)
        items += [(clip, states, task, cfg.prompt(clip.whisper_lang, task)) for task in clip.tasks()]
    if batched(backend.decoder) and len(items) > 1:
        start = time.perf_counter()
        results = greedy_decode_batch(backend.decoder, np.concatenate([it[1] for it in items]),
                                      [it[3] for it in items], cfg)
        decode_seconds = [(time.perf_counter() - start) / len(items)] * len(items)
    else:
        results, decode_seconds = [], []
        for _, states, _, prompt in items:
            start = time.perf_counter()
            results.append(greedy_decode(backend.decoder, states, prompt, cfg))
            decode_seconds.append(time.perf_counter() - start)
    encode = {c.id: s for c, s in zip(clips, encode_seconds)}
    return [{"id": clip.id, "lang": clip.lang, "task": task, "system": system, "tokens": tokens,
             "text": to_text(tokens), "stop": stop,
             "seconds": dec + (encode[clip.id] if task == TRANSCRIBE else 0.0)}
            for (clip, _, task, _), (tokens, stop), dec in zip(items, results, decode_seconds)]


def run_backends(backends: Sequence[tuple[str, Backend]], clips: Sequence[Clip],
                 features: Callable[[Clip], np.ndarray], cfg: DecodeConfig,
                 to_text: Callable[[list[int]], str], batch_size: int) -> list[dict[str, Any]]:
    """Every system on every clip, ``batch_size`` clips at a time: only one batch's features are in memory
    (computed once, used by every system), so memory stays flat in the number of clips."""
    records: list[dict[str, Any]] = []
    with tqdm(total=len(clips), desc="decode " + " + ".join(s for s, _ in backends), unit="clip") as bar:
        for first in range(0, len(clips), batch_size):
            chunk = clips[first:first + batch_size]
            feats = [features(c) for c in chunk]
            for system, backend in backends:
                records += run_backend(system, backend, chunk, feats, cfg, to_text)
            bar.update(len(chunk))
    return records


# ---------------------------------------------------------------------------------------------- outputs

def plot_rows(metrics: dict[str, Any]) -> tuple[list[dict], list[dict]]:
    """Rows for `dvc plots`: {language, unit, fp32, compiled} for WER/CER and for BLEU (compiled is null
    when the compiled model did not run here)."""
    wer_rows, bleu_rows = [], []
    for lang, e in sorted(metrics["languages"].items()):
        u = e["unit"]
        comp = e[COMPILED] or {}
        if e[FP32][u] is not None:
            wer_rows.append({"language": lang, "unit": u, FP32: e[FP32][u], COMPILED: comp.get(u)})
        if e[FP32]["bleu"] is not None:
            bleu_rows.append({"language": lang, FP32: e[FP32]["bleu"], COMPILED: comp.get("bleu")})
    return wer_rows, bleu_rows


def transcript_rows(records: Sequence[dict], clips: Sequence[Clip]) -> list[dict]:
    """Every hypothesis with its references, sorted; without timings so the file is reproducible."""
    refs = {c.id: c for c in clips}
    rows = []
    for r in sorted(records, key=lambda r: (r["lang"], r["id"], r["task"], r["system"])):
        c = refs[r["id"]]
        rows.append({"id": r["id"], "lang": r["lang"], "task": r["task"], "system": r["system"], "text": r["text"],
                     "tokens": r["tokens"], "stop": r["stop"],
                     "reference": c.text if r["task"] == TRANSCRIBE else c.text_en})
    return rows


def budget_failure(metrics: dict[str, Any]) -> str | None:
    """The strict-mode error message, or None when no language's verdict is fail."""
    b = metrics["budget"]
    if not b["fail"]:
        return None
    detail = ", ".join(f"{lang} +{metrics['languages'][lang]['delta'][metrics['languages'][lang]['unit']]:.3f} "
                       f"(95 % CI {metrics['languages'][lang]['ci95'][TRANSCRIBE]['low']:+.3f}.."
                       f"{metrics['languages'][lang]['ci95'][TRANSCRIBE]['high']:+.3f})"
                       for lang in b["fail"].split(","))
    return (f"evaluate.max_wer_increase = {b['max_wer_increase']}: exceeded by {detail} (compiled minus fp32 "
            "WER/CER); improve calibration or compile options, or set evaluate.strict = false to report only")


# ---------------------------------------------------------------------------------------------- artifacts

def _bytes(paths: Sequence[Path]) -> int:
    return sum(p.stat().st_size for p in paths if p.is_file())


def model_sizes(model_dir: Path, enc_dir: Path, dec_dir: Path) -> dict[str, int | float | None]:
    """Bytes of the fp32 weights and of the compiled artifacts: the models themselves (.onnx/.mxq and any
    external data), the CPU-side embedding tables (.npy, float32: not inside the NPU model), and the total.
    provenance/JSON files are not counted."""
    fp32 = _bytes([model_dir / "hf" / "model.safetensors"])
    files = [p for d in (enc_dir, dec_dir) for p in sorted(d.rglob("*")) if p.suffix != ".json"]
    tables = _bytes([p for p in files if p.suffix == ".npy"])
    models = _bytes([p for p in files if p.suffix != ".npy"])
    return {"fp32_bytes": fp32, "compiled_model_bytes": models, "embedding_table_bytes": tables,
            "compiled_bytes": models + tables,
            "compression": M.rounded(fp32 / (models + tables)) if models + tables else None}


# ---------------------------------------------------------------------------------------------- main

def decode_config(model: Any, p: EvaluateParams) -> DecodeConfig:
    return DecodeConfig.from_model(model.generation_config, model.config, max_new_tokens=p.max_new_tokens,
                                   suppress_timestamps=p.suppress_timestamps, repeat_max_ngram=p.repeat_max_ngram,
                                   repeat_times=p.repeat_times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--model", type=Path, required=True, help="reference model store (models/reference)")
    parser.add_argument("--encoder", type=Path, required=True, help="compiled encoder folder")
    parser.add_argument("--decoder", type=Path, required=True, help="compiled decoder folder")
    parser.add_argument("--audio", type=Path, required=True, help="audio root with <lang>/manifest.jsonl")
    parser.add_argument("--metrics", type=Path, required=True)
    parser.add_argument("--wer-plot", type=Path, required=True)
    parser.add_argument("--bleu-plot", type=Path, required=True)
    parser.add_argument("--transcripts", type=Path, required=True)
    args = parser.parse_args(argv)

    params = load_params(args.params)
    p = params.evaluate
    clips = read_clips(args.audio, params.languages, "evaluation")
    log.info("%d evaluation clips in %d languages", len(clips), len(params.languages))

    import torch

    from whisper_npu.backends.torch_ref import load_torch_backend

    torch.manual_seed(params.seed)  # greedy decoding draws nothing; set for any library that might
    fp32, processor = load_torch_backend(args.model)
    cfg = decode_config(fp32.model, p)
    try:
        compiled = load_compiled(args.encoder, args.decoder, fp32.model.config)
        compiled_run = {"status": "run", "reason": None}
    except CompiledNotRunnable as e:
        # e.g. .mxq files on a host without Mobilint's runtime or NPU: score fp32, check no budget
        log.warning("compiled model not run: %s", e)
        compiled, compiled_run = None, {"status": "not_run", "reason": str(e)}
    to_text = tokenizer_text(processor.tokenizer)

    def features(clip: Clip) -> np.ndarray:
        return npu_features(processor.feature_extractor, read_wav(clip.audio))

    backends = [(FP32, fp32)] + ([(COMPILED, compiled)] if compiled is not None else [])
    records = run_backends(backends, clips, features, cfg, to_text, p.batch_size)
    metrics = M.score(records, clips, p, params.seed, compiled_run=compiled is not None)
    metrics["compiled_run"] = compiled_run
    # e.g. onnxruntime-dynamic / onnxruntime-static, or mxq
    metrics["backends"] = {FP32: "torch", COMPILED: (getattr(compiled, "name", None) if compiled is not None
                                                     else None) or compiled_backend_name(args.encoder, args.decoder)}
    metrics["sizes"] = model_sizes(args.model, args.encoder, args.decoder)
    for lang, e in metrics["languages"].items():
        u, ci = e["unit"], e["ci95"][TRANSCRIBE]
        log.info("%s %s fp32 %s compiled %s delta %s 95%% CI %s verdict %s", lang, u, e[FP32][u],
                 (e[COMPILED] or {}).get(u), e["delta"][u], ci and f"{ci['low']:+.3f}..{ci['high']:+.3f}", e["verdict"])
    failure = budget_failure(metrics)
    if failure:
        log.warning("accuracy budget exceeded: %s", metrics["budget"]["fail"])
        if p.strict:
            # A failed stage leaves no outputs (DVC also removes them before running the command).
            for path in (args.metrics, args.wer_plot, args.bleu_plot, args.transcripts):
                path.unlink(missing_ok=True)
            raise StageError(failure)

    wer_rows, bleu_rows = plot_rows(metrics)
    with atomic_output(args.transcripts) as tmp:
        write_jsonl(tmp, transcript_rows(records, clips))
    with atomic_output(args.wer_plot) as tmp:
        write_json(tmp, wer_rows)
    with atomic_output(args.bleu_plot) as tmp:
        write_json(tmp, bleu_rows)
    with atomic_output(args.metrics) as tmp:
        write_json(tmp, metrics)


if __name__ == "__main__":
    run_stage(main)
