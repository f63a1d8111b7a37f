"""Scoring: WER/CER with Whisper's normalizers and jiwer, BLEU, agreement, paired bootstrap intervals, verdicts,
and :func:`score`, the evaluate stage's per-language record of them (a new metric goes here).

* Text is normalized as in the Whisper paper: ``EnglishTextNormalizer`` for English,
  ``BasicTextNormalizer`` (lower-case, symbols and punctuation removed) for every other language.
  Caveat inherited from Whisper: BasicTextNormalizer also replaces combining marks (Unicode category M:
  Thai vowels and tones, Indic vowel signs) with spaces, which inflates word counts for Tamil/Hindi and
  blunts CER for Thai. fp32 and compiled outputs are normalized the same way, so their difference,
  which is what this project measures, stays meaningful.
* WER for languages with spaces between words; CER (spaces removed) for those flagged ``cer`` in
  whisper_npu/languages.py (zh, ja, th).
* Sources whose transcripts carry no diacritics (Asterisk's Spanish prompts: "Opcion invalida") are
  compared without them: both reference and hypothesis lose their combining marks (NFKD) after
  normalizing, so "opción" and "opcion" match. The metrics say so per language.
* Substitutions, deletions and insertions come from jiwer's alignment (``jiwer.process_words``) over the
  normalized units (characters are passed as one-character words for CER).
* Rates are corpus-level: total edits / total reference units over the clips of a language.
* The interval of compiled minus fp32 is a paired bootstrap over clips (the same resampled clips for both
  systems; percentile 95 % interval; seeded per language and task from params ``seed``). The verdict against
  the budget is ``pass`` when the whole interval is at or below it, ``fail`` when the whole interval is above
  it, else ``inconclusive`` (also with fewer scored clips than ``evaluate.min_verdict_clips``).
"""
from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from whisper_npu import languages as langs
from whisper_npu.audio import TRANSCRIBE, TRANSLATE, Clip
from whisper_npu.decode import STOP_REASONS
from whisper_npu.params import EvaluateParams
from whisper_npu.seeds import lang_rng

ENGLISH_NORMALIZER = "whisper.normalizers.EnglishTextNormalizer"
BASIC_NORMALIZER = "whisper.normalizers.BasicTextNormalizer"


@lru_cache(maxsize=None)
def _normalizer(name: str) -> Callable[[str], str]:
    # Imported lazily: whisper's package import pulls torch and numba (about 2 s).
    from whisper.normalizers import BasicTextNormalizer, EnglishTextNormalizer

    return EnglishTextNormalizer() if name == ENGLISH_NORMALIZER else BasicTextNormalizer()


def normalizer_name(lang: str) -> str:
    """The normalizer used for a FLEURS language code."""
    return ENGLISH_NORMALIZER if langs.get(lang).whisper == "en" else BASIC_NORMALIZER


def strip_diacritics(text: str) -> str:
    """Drop combining marks after canonical decomposition: "opción" -> "opcion" (then recompose)."""
    return unicodedata.normalize("NFC", "".join(c for c in unicodedata.normalize("NFKD", text)
                                                if not unicodedata.combining(c)))


def normalize(text: str, lang: str, diacritics: bool = True) -> str:
    """Whisper's normalizer for the language; ``diacritics=False`` also removes accents."""
    out = " ".join(_normalizer(normalizer_name(lang))(text).split())
    return out if diacritics else strip_diacritics(out)


def unit(lang: str) -> str:
    """``cer`` for languages written without spaces between words, else ``wer``."""
    return "cer" if langs.get(lang).cer else "wer"


def tokens_for(text: str, lang: str, diacritics: bool = True) -> list[str]:
    """Normalized scoring units: words, or characters without spaces for CER languages."""
    norm = normalize(text, lang, diacritics)
    return list(norm.replace(" ", "")) if unit(lang) == "cer" else norm.split()


def edit_distance(ref: Sequence[Any], hyp: Sequence[Any]) -> int:
    """Levenshtein distance of two sequences (two-row dynamic programming; other tests' helper)."""
    if len(ref) < len(hyp):
        ref, hyp = hyp, ref  # symmetric; keep the row short
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i]
        for j, h in enumerate(hyp, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h)))
        prev = cur
    return prev[-1]


@dataclass(frozen=True)
class ErrorCount:
    substitutions: int
    deletions: int
    insertions: int
    ref_units: int

    @property
    def edits(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def rate(self) -> float | None:
        return self.edits / self.ref_units if self.ref_units else None

    def __add__(self, other: "ErrorCount") -> "ErrorCount":
        return ErrorCount(self.substitutions + other.substitutions, self.deletions + other.deletions,
                          self.insertions + other.insertions, self.ref_units + other.ref_units)


ZERO = ErrorCount(0, 0, 0, 0)


def clip_errors(ref: str, hyp: str, lang: str, diacritics: bool = True) -> ErrorCount:
    """jiwer's substitutions, deletions and insertions of one hypothesis against its reference."""
    import jiwer

    r, h = tokens_for(ref, lang, diacritics), tokens_for(hyp, lang, diacritics)
    if not r:
        return ErrorCount(0, 0, len(h), 0)
    out = jiwer.process_words(" ".join(r), " ".join(h))
    return ErrorCount(out.substitutions, out.deletions, out.insertions, len(r))


def error_count(refs: Sequence[str], hyps: Sequence[str], lang: str, diacritics: bool = True) -> ErrorCount:
    """Corpus-level S/D/I and reference length (WER or CER per :func:`unit`) over paired texts."""
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    total = ZERO
    for ref, hyp in zip(refs, hyps):
        total = total + clip_errors(ref, hyp, lang, diacritics)
    return total


def error_rate(refs: Sequence[str], hyps: Sequence[str], lang: str, diacritics: bool = True) -> float | None:
    """WER or CER; None when there is nothing to score (no clip, or references empty after normalizing)."""
    return error_count(refs, hyps, lang, diacritics).rate


def bleu(hyps: Sequence[str], refs: Sequence[str]) -> float | None:
    """sacrebleu corpus BLEU (0-100, default 13a tokenizer, raw text as in the Whisper paper's X->en);
    None without pairs."""
    if not hyps:
        return None
    import sacrebleu

    return float(sacrebleu.corpus_bleu(list(hyps), [list(refs)]).score)


def agreement(reference_hyps: Sequence[str], other_hyps: Sequence[str], lang: str) -> dict[str, float | None]:
    """How closely one system's outputs follow another's (the fp32 outputs as reference):
    share of clips with identical normalized text, and the WER/CER of ``other`` against ``reference``."""
    if not reference_hyps:
        return {"exact_match": None, unit(lang): None}
    same = sum(normalize(a, lang) == normalize(b, lang) for a, b in zip(reference_hyps, other_hyps))
    count = error_count(reference_hyps, other_hyps, lang)
    # Both empty everywhere: identical output, no error; empty reference with output: count the insertions.
    rate = count.rate if count.ref_units else (0.0 if count.edits == 0 else None)
    return {"exact_match": same / len(reference_hyps), unit(lang): rate}


# ---------------------------------------------------------------------------------------------- statistics

CONFIDENCE = 0.95
VERDICTS = ("pass", "fail", "inconclusive")


def _interval(deltas: np.ndarray) -> dict[str, float]:
    lo, hi = np.percentile(deltas, [50 * (1 - CONFIDENCE), 50 * (1 + CONFIDENCE)])
    return {"low": float(lo), "high": float(hi)}


def bootstrap_rate_delta(base: Sequence[ErrorCount], other: Sequence[ErrorCount], samples: int,
                         rng: np.random.Generator) -> dict[str, float] | None:
    """Paired bootstrap 95 % interval of ``other`` minus ``base`` corpus error rate over the same clips;
    None without a clip with reference units."""
    if len(base) != len(other):
        raise ValueError(f"{len(base)} base clips but {len(other)} other clips")
    units = np.array([c.ref_units for c in base], dtype=np.int64)
    if len(units) == 0 or units.sum() == 0:
        return None
    a = np.array([c.edits for c in base], dtype=np.int64)
    b = np.array([c.edits for c in other], dtype=np.int64)
    idx = rng.integers(0, len(units), size=(samples, len(units)))
    n = units[idx].sum(axis=1)
    ok = n > 0   # a resample of only empty references has no rate
    return _interval((b[idx].sum(axis=1)[ok] - a[idx].sum(axis=1)[ok]) / n[ok])


def bootstrap_bleu_delta(base: Sequence[str], other: Sequence[str], refs: Sequence[str], samples: int,
                         rng: np.random.Generator) -> dict[str, float] | None:
    """Paired bootstrap 95 % interval of ``other`` minus ``base`` corpus BLEU; None without pairs."""
    if not refs:
        return None
    idx = rng.integers(0, len(refs), size=(samples, len(refs)))
    deltas = np.array([bleu([other[i] for i in row], [refs[i] for i in row])
                       - bleu([base[i] for i in row], [refs[i] for i in row]) for row in idx])
    return _interval(deltas)


def verdict(interval: Mapping[str, float] | None, budget: float, clips: int, min_clips: int) -> str:
    """pass: the whole interval of the increase is within the budget; fail: the whole interval exceeds it;
    inconclusive: it straddles the budget, or too few clips to trust it; unscored: no interval."""
    if interval is None:
        return "unscored"
    if clips < min_clips:
        return "inconclusive"
    eps = 1e-9   # float noise: an interval ending exactly at the budget passes
    if interval["high"] <= budget + eps:
        return "pass"
    if interval["low"] > budget + eps:
        return "fail"
    return "inconclusive"


def mean(values: Sequence[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


FP32, COMPILED = "fp32", "compiled"
SYSTEMS = (FP32, COMPILED)


# ---------------------------------------------------------------------------------------------- the evaluate record

def rounded(x: float | None) -> float | None:
    """Rounded to 6 decimals, so that metrics files do not churn on float noise."""
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


def score(records: Sequence[dict], clips: Sequence[Clip], p: EvaluateParams, seed: int,
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
        agree["token_exact_match"] = rounded(sum(by_key[(FP32, c.id, t)]["tokens"] == by_key[(COMPILED, c.id, t)]["tokens"]
                                           for c in lc for t in c.tasks()) / sum(len(c.tasks()) for c in lc))
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
