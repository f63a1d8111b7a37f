"""The score stage's record: per language and system, error rates with S/D/I, BLEU, stop counts, real-time factors,
paired bootstrap intervals and verdicts against the budget; summaries per unit (WER and CER apart) and per kind of
speech (real and synthetic apart); the verdict counts. A new metric goes into :func:`score`."""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from whisper_npu.core.languages import TRANSCRIBE, TRANSLATE
from whisper_npu.core.seeds import lang_rng
from whisper_npu.decoding.greedy import STOP_REASONS
from whisper_npu.eval.metrics import (
    BASIC_NORMALIZER,
    ENGLISH_NORMALIZER,
    VERDICTS,
    ZERO,
    ErrorCount,
    agreement,
    bleu,
    bootstrap_bleu_delta,
    bootstrap_rate_delta,
    clip_errors,
    mean,
    normalize,
    unit,
    verdict,
)
from whisper_npu.sources.registry import SPEECH
from whisper_npu.sources.registry import speech as speech_of

if TYPE_CHECKING:
    from whisper_npu.audio.clips import Clip
    from whisper_npu.params.score import ScoreParams

FP32, COMPILED = "fp32", "compiled"
SYSTEMS = (FP32, COMPILED)


def rounded(x: float | None) -> float | None:
    """Rounded to 6 decimals, so that metrics files do not churn on float noise."""
    return None if x is None else round(float(x), 6)


def _diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else b - a


def speech_kind(sources: Sequence[str]) -> str:
    """real (recorded), synthetic (espeak-ng) or unknown (a manifest without a source kind, or a mix), by the
    source registry (whisper_npu/sources/registry.py)."""
    kinds = {speech_of(s) for s in sources}
    return kinds.pop() if len(kinds) == 1 else "unknown"


def _stops(records: Sequence[dict]) -> dict[str, int]:
    counts = Counter(r["stop"] for r in records)
    return {k: counts.get(k, 0) for k in STOP_REASONS}


def _system_entry(lang: str, u: str, recs: Sequence[dict], scored: Sequence[Clip],
                  translated: Sequence[Clip], hyp: dict, duration: float) -> tuple[dict, list[ErrorCount]]:
    per_clip = [clip_errors(c.text, hyp[(c.id, TRANSCRIBE)], lang, c.diacritics) for c in scored]
    total = sum(per_clip, ZERO)
    secs = sum(r["seconds"] for r in recs if r["task"] == TRANSCRIBE)
    stops = _stops(recs)
    entry = {u: rounded(total.rate), "substitutions": total.substitutions, "deletions": total.deletions,
             "insertions": total.insertions, "reference_units": total.ref_units,
             "bleu": rounded(bleu([hyp[(c.id, TRANSLATE)] for c in translated], [c.text_en for c in translated])),
             "rtf": rounded(secs / duration) if duration > 0 else None,
             # outputs cut by the token cap (max_new_tokens, or the decoder's position limit)
             "stops": stops, "cut_by_cap": stops["max_new_tokens"] + stops["max_positions"]}
    return entry, per_clip


def score(records: Sequence[dict], clips: Sequence[Clip], p: ScoreParams, seed: int,
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
        u = unit(lang)
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
        entry["delta"] = {k: rounded(_diff(entry[FP32][k], entry[COMPILED][k])) for k in (u, "bleu", "rtf")}
        ci_t = bootstrap_rate_delta(per_clip[FP32], per_clip[COMPILED], p.bootstrap_samples,
                                      lang_rng(seed, lang, TRANSCRIBE))
        ci_b = bootstrap_bleu_delta([hyp[FP32][(c.id, TRANSLATE)] for c in translated],
                                      [hyp[COMPILED][(c.id, TRANSLATE)] for c in translated],
                                      [c.text_en for c in translated], p.bootstrap_samples,
                                      lang_rng(seed, lang, TRANSLATE))
        entry["ci95"] = {TRANSCRIBE: _ci(ci_t), TRANSLATE: _ci(ci_b)}
        entry["verdict"] = verdict(ci_t, p.max_wer_increase, len(scored), p.min_verdict_clips)
        fp = [hyp[FP32][(c.id, TRANSCRIBE)] for c in lc]
        co = [hyp[COMPILED][(c.id, TRANSCRIBE)] for c in lc]
        agree = {k: rounded(v) for k, v in agreement(fp, co, lang).items()}
        same = sum(by_key[(FP32, c.id, t)]["tokens"] == by_key[(COMPILED, c.id, t)]["tokens"]
                   for c in lc for t in c.tasks())
        agree["token_exact_match"] = rounded(same / sum(len(c.tasks()) for c in lc))
        entry["agreement"] = agree
        all_same += sum(normalize(a, lang) == normalize(b, lang) for a, b in zip(fp, co))
        all_n += len(lc)
        per_lang[lang] = entry

    overall: dict[str, Any] = {s: {"bleu": rounded(mean([e[s]["bleu"] for e in per_lang.values()])),
                                   "rtf": rounded(seconds[s] / total_duration) if total_duration > 0 else None,
                                   "stops": _stops([r for r in records if r["system"] == s]),
                                   "cut_by_cap": sum(e[s]["cut_by_cap"] for e in per_lang.values())}
                               for s in systems}
    overall["clips"] = len(clips)
    if compiled_run:
        overall["delta"] = {k: rounded(_diff(overall[FP32][k], overall[COMPILED][k])) for k in ("bleu", "rtf")}
        overall["agreement"] = {"exact_match": rounded(all_same / all_n) if all_n else None}
    return {"languages": per_lang, "summary": summary(per_lang, systems), "overall": overall,
            "budget": budget(per_lang, p.max_wer_increase, p.min_verdict_clips, compiled_run),
            "normalizer": {"en": ENGLISH_NORMALIZER, "other": BASIC_NORMALIZER}}


def _ci(ci: dict[str, float] | None) -> dict[str, float] | None:
    return None if ci is None else {k: rounded(v) for k, v in ci.items()}


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
                g[s] = rounded(mean([e[s][u] for e in group.values()]))
            if COMPILED in systems:
                g["delta"] = rounded(_diff(g[FP32], g[COMPILED]))
            g["verdicts"] = dict(Counter(e["verdict"] for e in group.values()))
            out.setdefault(u, {})[speech] = g
    return out


def budget(per_lang: dict[str, Any], max_increase: float, min_clips: int, compiled_run: bool) -> dict[str, Any]:
    """The per-language verdicts as one record: counts per verdict, real and synthetic apart, the languages
    per verdict, and the run's verdict (fail if any language fails, pass only if every language passes)."""
    names = (*VERDICTS, "unscored", "not_checked")
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
