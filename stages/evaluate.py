"""Evaluate stage: what compilation did to accuracy, per language, as DVC metrics and plots.

Runs the fp32 reference (HF Whisper in torch) and the compiled model (the compile stage's backend:
ONNX Runtime INT8 here, the .mxq files on a Mobilint NPU host) through one greedy decode loop
(whisper_npu/decode.py) on the evaluation clips of the listed languages (never the calibration clips),
and scores them (whisper_npu/metrics.py):

* transcribe: WER (CER for zh/ja/th) against the reference text;
* translate (non-English sources with an English reference): BLEU against ``text_en``;
* agreement of the compiled outputs with the fp32 outputs, real-time factor of each backend, model sizes;
* the accuracy budget ``evaluate.max_wer_increase`` per language: reported, and fatal only with
  ``evaluate.strict`` (a failed stage leaves no outputs, so the summary is logged before failing).

``overall`` error_rate and bleu are unweighted means over languages of each language's WER or CER and
BLEU (one number per language, whatever its clip count); rtf and agreement pool all clips.

Outputs: the metrics JSON (a DVC metric), two plot tables (per-language rows, fp32 vs compiled) and every
hypothesis as JSONL. Real-time factors are wall-clock figures: they change from run to run.
"""
from __future__ import annotations

import argparse
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from whisper_npu import languages as langs
from whisper_npu import metrics as M
from whisper_npu.decode import DecodeConfig, greedy_decode, tokenizer_text
from whisper_npu.backends import compiled_backend_name, load_compiled
from whisper_npu.io import StageError, atomic_output, read_jsonl, run_stage, write_json, write_jsonl
from whisper_npu.params import EvaluateParams, load_params
from whisper_npu.runtime import Backend

log = logging.getLogger(__name__)

FP32, COMPILED = "fp32", "compiled"
SYSTEMS = (FP32, COMPILED)
TRANSCRIBE, TRANSLATE = "transcribe", "translate"


# ---------------------------------------------------------------------------------------------- clips

@dataclass(frozen=True)
class EvalClip:
    id: str
    lang: str                 # FLEURS code
    audio: Path
    duration: float           # seconds
    text: str | None          # reference transcription
    text_en: str | None       # English reference

    @property
    def whisper_lang(self) -> str:
        return langs.get(self.lang).whisper

    def tasks(self) -> list[str]:
        """transcribe always (agreement and speed need no reference); translate when there is an English
        reference and the source is not English (X -> en, as in the Whisper paper)."""
        if self.text_en and self.whisper_lang != "en":
            return [TRANSCRIBE, TRANSLATE]
        return [TRANSCRIBE]


def evaluation_clips(audio_root: str | Path, languages: Sequence[str]) -> list[EvalClip]:
    """The ``split == "evaluation"`` clips of exactly the listed languages, sorted by (language, id).

    Reads ``<audio_root>/<lang>/manifest.jsonl`` (never globs): a language without a manifest or without
    evaluation clips is an error naming what to run or change.
    """
    audio_root = Path(audio_root)
    clips: list[EvalClip] = []
    for lang in sorted(languages):
        manifest = audio_root / lang / "manifest.jsonl"
        if not manifest.is_file():
            raise StageError(f"{manifest}: missing; language {lang!r} is in params `languages` but has no audio "
                             f"(run `dvc repro audio@{lang}`)")
        rows = sorted((r for r in read_jsonl(manifest) if r.get("split") == "evaluation"), key=lambda r: r["id"])
        if not rows:
            raise StageError(f"{manifest}: no clips with split == 'evaluation' for {lang!r}; set audio.eval_clips >= 1")
        for r in rows:
            if r.get("lang", lang) != lang:
                raise StageError(f"{manifest}: clip {r.get('id')!r} has lang {r.get('lang')!r}, expected {lang!r}")
            path = audio_root / lang / r["file"]
            if not path.is_file():
                raise StageError(f"{path}: listed in {manifest} but missing (rerun `dvc repro audio@{lang}`)")
            clips.append(EvalClip(r["id"], lang, path, float(r["duration"]), r.get("text") or None,
                                  r.get("text_en") or None))
    return clips


# ---------------------------------------------------------------------------------------------- decoding

def run_backend(system: str, backend: Backend, clips: Sequence[EvalClip], features: Callable[[EvalClip], np.ndarray],
                cfg: DecodeConfig, to_text: Callable[[list[int]], str]) -> list[dict[str, Any]]:
    """Decode every clip with every task it has; one record per (clip, task).

    ``seconds`` (kept out of the transcripts file) is encoder + decoder wall time for the transcribe task,
    decoder time only for translate (the encoder output is reused).
    """
    records = []
    for clip in tqdm(clips, desc=f"decode {system}", unit="clip"):
        feats = features(clip)
        start = time.perf_counter()
        states = backend.encoder(feats)
        encode_seconds = time.perf_counter() - start
        for task in clip.tasks():
            start = time.perf_counter()
            tokens, stop = greedy_decode(backend.decoder, states, cfg.prompt(clip.whisper_lang, task), cfg)
            seconds = time.perf_counter() - start + (encode_seconds if task == TRANSCRIBE else 0.0)
            records.append({"id": clip.id, "lang": clip.lang, "task": task, "system": system,
                            "tokens": tokens, "text": to_text(tokens), "stop": stop, "seconds": seconds})
    return records


# ---------------------------------------------------------------------------------------------- scoring

def _r(x: float | None) -> float | None:
    # Rounded so that metrics files do not churn on float noise.
    return None if x is None else round(float(x), 6)


def _diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else b - a


def score(records: Sequence[dict], clips: Sequence[EvalClip], max_increase: float) -> dict[str, Any]:
    """Per-language and overall metrics, the budget verdict and stop-reason counts, from decode records."""
    by_key = {(r["system"], r["id"], r["task"]): r for r in records}
    per_lang: dict[str, Any] = {}
    deltas: dict[str, float | None] = {}
    all_same = all_n = 0
    seconds = {s: 0.0 for s in SYSTEMS}
    total_duration = 0.0
    for lang in sorted({c.lang for c in clips}):
        lc = [c for c in clips if c.lang == lang]
        u = M.unit(lang)
        entry: dict[str, Any] = {"unit": u, "clips": len(lc)}
        scored = [c for c in lc if c.text]
        translated = [c for c in lc if TRANSLATE in c.tasks()]
        hyp = {s: {(c.id, t): by_key[(s, c.id, t)]["text"] for c in lc for t in c.tasks()} for s in SYSTEMS}
        duration = sum(c.duration for c in lc)
        total_duration += duration
        for s in SYSTEMS:
            secs = sum(by_key[(s, c.id, TRANSCRIBE)]["seconds"] for c in lc)
            seconds[s] += secs
            entry[s] = {
                u: _r(M.error_rate([c.text for c in scored], [hyp[s][(c.id, TRANSCRIBE)] for c in scored], lang)),
                "bleu": _r(M.bleu([hyp[s][(c.id, TRANSLATE)] for c in translated], [c.text_en for c in translated])),
                "rtf": _r(secs / duration) if duration > 0 else None,
            }
        entry["delta"] = {k: _r(_diff(entry[FP32][k], entry[COMPILED][k])) for k in (u, "bleu", "rtf")}
        fp = [hyp[FP32][(c.id, TRANSCRIBE)] for c in lc]
        co = [hyp[COMPILED][(c.id, TRANSCRIBE)] for c in lc]
        agree = {k: _r(v) for k, v in M.agreement(fp, co, lang).items()}
        agree["token_exact_match"] = _r(sum(by_key[(FP32, c.id, t)]["tokens"] == by_key[(COMPILED, c.id, t)]["tokens"]
                                           for c in lc for t in c.tasks()) / sum(len(c.tasks()) for c in lc))
        entry["agreement"] = agree
        all_same += sum(M.normalize(a, lang) == M.normalize(b, lang) for a, b in zip(fp, co))
        all_n += len(lc)
        deltas[lang] = entry["delta"][u]
        entry["within_budget"] = deltas[lang] is None or deltas[lang] <= max_increase + 1e-9
        per_lang[lang] = entry

    def macro(system: str, key: str) -> float | None:
        return M.mean([e[system].get(e["unit"] if key == "error_rate" else key) for e in per_lang.values()])

    overall: dict[str, Any] = {s: {"error_rate": _r(macro(s, "error_rate")), "bleu": _r(macro(s, "bleu")),
                                   "rtf": _r(seconds[s] / total_duration) if total_duration > 0 else None}
                               for s in SYSTEMS}
    overall["delta"] = {k: _r(_diff(overall[FP32][k], overall[COMPILED][k])) for k in ("error_rate", "bleu", "rtf")}
    overall["agreement"] = {"exact_match": _r(all_same / all_n) if all_n else None}
    overall["clips"] = len(clips)
    stops = {s: dict(sorted(Counter(r["stop"] for r in records if r["system"] == s).items())) for s in SYSTEMS}
    normalizers = {"en": M.ENGLISH_NORMALIZER, "other": M.BASIC_NORMALIZER}
    return {"languages": per_lang, "overall": overall, "budget": M.check_budget(deltas, max_increase),
            "stops": stops, "normalizer": normalizers}


def plot_rows(metrics: dict[str, Any]) -> tuple[list[dict], list[dict]]:
    """Rows for `dvc plots`: {language, unit, fp32, compiled} for WER/CER and for BLEU (languages that have
    both values)."""
    wer_rows, bleu_rows = [], []
    for lang, e in sorted(metrics["languages"].items()):
        u = e["unit"]
        if e[FP32][u] is not None and e[COMPILED][u] is not None:
            wer_rows.append({"language": lang, "unit": u, FP32: e[FP32][u], COMPILED: e[COMPILED][u]})
        if e[FP32]["bleu"] is not None and e[COMPILED]["bleu"] is not None:
            bleu_rows.append({"language": lang, FP32: e[FP32]["bleu"], COMPILED: e[COMPILED]["bleu"]})
    return wer_rows, bleu_rows


def transcript_rows(records: Sequence[dict], clips: Sequence[EvalClip]) -> list[dict]:
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
    """The strict-mode error message, or None when every language is within budget."""
    b = metrics["budget"]
    if b["pass"]:
        return None
    detail = ", ".join(f"{lang} +{metrics['languages'][lang]['delta'][metrics['languages'][lang]['unit']]:.3f}"
                       for lang in b["over_budget"].split(","))
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
            "compression": _r(fp32 / (models + tables)) if models + tables else None}


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
    clips = evaluation_clips(args.audio, params.languages)
    log.info("%d evaluation clips in %d languages", len(clips), len(params.languages))

    import torch

    from whisper_npu.backends.torch_ref import load_torch_backend
    from whisper_npu.calibration import load_audio, npu_features

    torch.manual_seed(params.seed)  # greedy decoding draws nothing; set for any library that might
    fp32, processor = load_torch_backend(args.model)
    cfg = decode_config(fp32.model, p)
    compiled = load_compiled(args.encoder, args.decoder, fp32.model.config)
    to_text = tokenizer_text(processor.tokenizer)
    cache: dict[str, np.ndarray] = {}

    def features(clip: EvalClip) -> np.ndarray:
        if clip.id not in cache:
            cache[clip.id] = npu_features(processor.feature_extractor, load_audio(clip.audio))
        return cache[clip.id]

    records = (run_backend(FP32, fp32, clips, features, cfg, to_text)
               + run_backend(COMPILED, compiled, clips, features, cfg, to_text))
    metrics = score(records, clips, p.max_wer_increase)
    # e.g. onnxruntime-dynamic / onnxruntime-static, or mxq
    metrics["backends"] = {FP32: "torch", COMPILED: getattr(compiled, "name", None)
                           or compiled_backend_name(args.encoder, args.decoder)}
    metrics["sizes"] = model_sizes(args.model, args.encoder, args.decoder)
    for lang, e in metrics["languages"].items():
        log.info("%s %s fp32 %s compiled %s delta %s agreement %s", lang, e["unit"], e[FP32][e["unit"]],
                 e[COMPILED][e["unit"]], e["delta"][e["unit"]], e["agreement"]["exact_match"])
    failure = budget_failure(metrics)
    if failure:
        log.warning("accuracy budget exceeded: %s", metrics["budget"]["over_budget"])
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
