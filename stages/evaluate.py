"""Evaluate stage: what compilation did to accuracy, per language, as DVC metrics and plots.

Runs the fp32 reference (HF Whisper in torch) and the compiled model (the compile stage's backend:
ONNX Runtime INT8 here, the .mxq files on a Mobilint NPU host) through one greedy decode loop
(whisper_npu/decode.py) on the evaluation clips of the listed languages (never the calibration clips),
and scores them (whisper_npu/metrics.py):

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
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from whisper_npu import languages as langs
from whisper_npu import metrics as M
from whisper_npu.backends import CompiledNotRunnable, compiled_backend_name, load_compiled
from whisper_npu.decode import (STOP_REASONS, DecodeConfig, batched, greedy_decode, greedy_decode_batch,
                                tokenizer_text)
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
    kind: str = "unknown"     # the audio source (synth, asterisk, fleurs, local): synthetic or real speech
    diacritics: bool = True   # False: the source's transcripts carry none, so scoring compares without them

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
            src = r.get("source") if isinstance(r.get("source"), dict) else {}
            clips.append(EvalClip(r["id"], lang, path, float(r["duration"]), r.get("text") or None,
                                  r.get("text_en") or None, str(src.get("kind", "unknown")),
                                  bool(src.get("diacritics", True))))
    return clips


# ---------------------------------------------------------------------------------------------- decoding

def run_backend(system: str, backend: Backend, clips: Sequence[EvalClip], feats: Sequence[np.ndarray],
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


def run_backends(backends: Sequence[tuple[str, Backend]], clips: Sequence[EvalClip],
                 features: Callable[[EvalClip], np.ndarray], cfg: DecodeConfig,
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


# ---------------------------------------------------------------------------------------------- scoring

def _r(x: float | None) -> float | None:
    # Rounded so that metrics files do not churn on float noise.
    return None if x is None else round(float(x), 6)


def _diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else b - a


SPEECH = ("real", "synthetic", "unknown")
REAL_SOURCES = ("asterisk", "fleurs", "local")   # recorded speech; synth is espeak-ng


def speech_kind(sources: Sequence[str]) -> str:
    """real (recorded), synthetic (espeak-ng) or unknown (a manifest without a source kind, or a mix)."""
    if sources and all(k in REAL_SOURCES for k in sources):
        return "real"
    if sources and all(k == "synth" for k in sources):
        return "synthetic"
    return "unknown"


def _stops(records: Sequence[dict]) -> dict[str, int]:
    counts = Counter(r["stop"] for r in records)
    return {k: counts.get(k, 0) for k in STOP_REASONS}


def _system_entry(lang: str, u: str, recs: Sequence[dict], scored: Sequence[EvalClip],
                  translated: Sequence[EvalClip], hyp: dict, duration: float) -> tuple[dict, list[M.ErrorCount]]:
    per_clip = [M.clip_errors(c.text, hyp[(c.id, TRANSCRIBE)], lang, c.diacritics) for c in scored]
    total = sum(per_clip, M.ZERO)
    secs = sum(r["seconds"] for r in recs if r["task"] == TRANSCRIBE)
    stops = _stops(recs)
    entry = {u: _r(total.rate), "substitutions": total.substitutions, "deletions": total.deletions,
             "insertions": total.insertions, "reference_units": total.ref_units,
             "bleu": _r(M.bleu([hyp[(c.id, TRANSLATE)] for c in translated], [c.text_en for c in translated])),
             "rtf": _r(secs / duration) if duration > 0 else None,
             # outputs cut by the token cap (max_new_tokens, or the decoder's position limit)
             "stops": stops, "cut_by_cap": stops["max_new_tokens"] + stops["max_positions"]}
    return entry, per_clip


def score(records: Sequence[dict], clips: Sequence[EvalClip], p: EvaluateParams, seed: int,
          compiled_run: bool = True) -> dict[str, Any]:
    """Per-language metrics with S/D/I, stop counts, bootstrap intervals and verdicts; summaries per unit
    (WER and CER apart) and per kind of speech (real and synthetic apart). With ``compiled_run`` False
    (the compiled model cannot run here) only fp32 is scored and every verdict is ``not_checked``."""
    systems = SYSTEMS if compiled_run else (FP32,)
    by_key = {(r["system"], r["id"], r["task"]): r for r in records}
    per_lang: dict[str, Any] = {}
    all_same = all_n = 0
    seconds = {s: 0.0 for s in SYSTEMS}
    total_duration = 0.0
    for lang in sorted({c.lang for c in clips}):
        lc = [c for c in clips if c.lang == lang]
        u = M.unit(lang)
        scored = [c for c in lc if c.text]
        translated = [c for c in lc if TRANSLATE in c.tasks()]
        kinds = sorted({c.kind for c in lc})
        entry: dict[str, Any] = {
            "unit": u, "clips": len(lc), "scored_clips": len(scored), "translated_clips": len(translated),
            "speech": speech_kind(kinds), "source": ",".join(kinds),
            "diacritics": ("compared without diacritics (the source's transcripts carry none)"
                           if any(not c.diacritics for c in lc) else "compared as written")}
        duration = sum(c.duration for c in lc)
        total_duration += duration
        per_clip = {}
        hyp = {}
        for s in systems:
            recs = [by_key[(s, c.id, t)] for c in lc for t in c.tasks()]
            hyp[s] = {(c.id, t): by_key[(s, c.id, t)]["text"] for c in lc for t in c.tasks()}
            entry[s], per_clip[s] = _system_entry(lang, u, recs, scored, translated, hyp[s], duration)
            seconds[s] += sum(r["seconds"] for r in recs if r["task"] == TRANSCRIBE)
        if not compiled_run:
            entry[COMPILED] = None
            entry["delta"] = {k: None for k in (u, "bleu", "rtf")}
            entry["ci95"] = {TRANSCRIBE: None, TRANSLATE: None}
            entry["agreement"] = None
            entry["verdict"] = "not_checked"
            per_lang[lang] = entry
            continue
        entry["delta"] = {k: _r(_diff(entry[FP32][k], entry[COMPILED][k])) for k in (u, "bleu", "rtf")}
        ci_t = M.bootstrap_rate_delta(per_clip[FP32], per_clip[COMPILED], p.bootstrap_samples,
                                      M.bootstrap_rng(seed, lang, TRANSCRIBE))
        ci_b = M.bootstrap_bleu_delta([hyp[FP32][(c.id, TRANSLATE)] for c in translated],
                                      [hyp[COMPILED][(c.id, TRANSLATE)] for c in translated],
                                      [c.text_en for c in translated], p.bootstrap_samples,
                                      M.bootstrap_rng(seed, lang, TRANSLATE))
        entry["ci95"] = {TRANSCRIBE: _ci(ci_t), TRANSLATE: _ci(ci_b)}
        entry["verdict"] = M.verdict(ci_t, p.max_wer_increase, len(scored), p.min_verdict_clips)
        fp = [hyp[FP32][(c.id, TRANSCRIBE)] for c in lc]
        co = [hyp[COMPILED][(c.id, TRANSCRIBE)] for c in lc]
        agree = {k: _r(v) for k, v in M.agreement(fp, co, lang).items()}
        agree["token_exact_match"] = _r(sum(by_key[(FP32, c.id, t)]["tokens"] == by_key[(COMPILED, c.id, t)]["tokens"]
                                           for c in lc for t in c.tasks()) / sum(len(c.tasks()) for c in lc))
        entry["agreement"] = agree
        all_same += sum(M.normalize(a, lang) == M.normalize(b, lang) for a, b in zip(fp, co))
        all_n += len(lc)
        per_lang[lang] = entry

    overall: dict[str, Any] = {s: {"bleu": _r(M.mean([e[s]["bleu"] for e in per_lang.values()])),
                                   "rtf": _r(seconds[s] / total_duration) if total_duration > 0 else None,
                                   "stops": _stops([r for r in records if r["system"] == s]),
                                   "cut_by_cap": sum(e[s]["cut_by_cap"] for e in per_lang.values())}
                               for s in systems}
    overall["clips"] = len(clips)
    if compiled_run:
        overall["delta"] = {k: _r(_diff(overall[FP32][k], overall[COMPILED][k])) for k in ("bleu", "rtf")}
        overall["agreement"] = {"exact_match": _r(all_same / all_n) if all_n else None}
    return {"languages": per_lang, "summary": summary(per_lang, systems), "overall": overall,
            "budget": budget(per_lang, p.max_wer_increase, p.min_verdict_clips, compiled_run),
            "normalizer": {"en": M.ENGLISH_NORMALIZER, "other": M.BASIC_NORMALIZER}}


def _ci(ci: dict[str, float] | None) -> dict[str, float] | None:
    return None if ci is None else {k: _r(v) for k, v in ci.items()}


def summary(per_lang: dict[str, Any], systems: Sequence[str]) -> dict[str, Any]:
    """Unweighted means over languages, WER languages and CER languages apart (never one mean across both),
    and real and synthetic speech apart; with the verdict counts of each group."""
    out: dict[str, Any] = {}
    for u in ("wer", "cer"):
        for speech in SPEECH:
            group = {k: e for k, e in per_lang.items() if e["unit"] == u and e["speech"] == speech}
            if not group:
                continue
            g: dict[str, Any] = {"languages": ",".join(sorted(group)), "clips": sum(e["clips"] for e in group.values())}
            for s in systems:
                g[s] = _r(M.mean([e[s][u] for e in group.values()]))
            if COMPILED in systems:
                g["delta"] = _r(_diff(g[FP32], g[COMPILED]))
            g["verdicts"] = dict(Counter(e["verdict"] for e in group.values()))
            out.setdefault(u, {})[speech] = g
    return out


def budget(per_lang: dict[str, Any], max_increase: float, min_clips: int, compiled_run: bool) -> dict[str, Any]:
    """The per-language verdicts as one record: counts per verdict, real and synthetic apart, the languages
    per verdict, and the run's verdict (fail if any language fails, pass only if every language passes)."""
    names = (*M.VERDICTS, "unscored", "not_checked")
    counts = {speech: {v: sum(e["verdict"] == v and e["speech"] == speech for e in per_lang.values())
                       for v in names}
              for speech in SPEECH if speech != "unknown" or any(e["speech"] == speech for e in per_lang.values())}
    verdicts = [e["verdict"] for e in per_lang.values()]
    if not compiled_run:
        overall = "not_checked"
    elif "fail" in verdicts:
        overall = "fail"
    elif verdicts and all(v == "pass" for v in verdicts):
        overall = "pass"
    else:
        overall = "inconclusive"
    return {"max_wer_increase": max_increase, "min_verdict_clips": min_clips, "verdict": overall,
            "counts": counts, **{v: ",".join(sorted(k for k, e in per_lang.items() if e["verdict"] == v))
                                 for v in names}}


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
    try:
        compiled = load_compiled(args.encoder, args.decoder, fp32.model.config)
        compiled_run = {"status": "run", "reason": None}
    except CompiledNotRunnable as e:
        # e.g. .mxq files on a host without Mobilint's runtime or NPU: score fp32, check no budget
        log.warning("compiled model not run: %s", e)
        compiled, compiled_run = None, {"status": "not_run", "reason": str(e)}
    to_text = tokenizer_text(processor.tokenizer)

    def features(clip: EvalClip) -> np.ndarray:
        return npu_features(processor.feature_extractor, load_audio(clip.audio))

    backends = [(FP32, fp32)] + ([(COMPILED, compiled)] if compiled is not None else [])
    records = run_backends(backends, clips, features, cfg, to_text, p.batch_size)
    metrics = score(records, clips, p, params.seed, compiled_run=compiled is not None)
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
