"""Scoring functions: WER/CER with Whisper's normalizers and jiwer, BLEU, agreement, paired bootstrap intervals and
verdicts (score.py puts them together per language).

* Text is normalized as in the Whisper paper: ``EnglishTextNormalizer`` for English,
  ``BasicTextNormalizer`` (lower-case, symbols and punctuation removed) for every other language.
  Caveat inherited from Whisper: BasicTextNormalizer also replaces combining marks (Unicode category M:
  Thai vowels and tones, Indic vowel signs) with spaces, which inflates word counts for Tamil/Hindi and
  blunts CER for Thai. fp32 and compiled outputs are normalized the same way, so their difference,
  which is what this project measures, stays meaningful.
* WER for languages with spaces between words; CER (spaces removed) for those flagged ``cer`` in
  whisper_npu/core/languages.py (zh, ja, th).
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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from whisper_npu.core import languages as langs

ENGLISH_NORMALIZER = "whisper.normalizers.EnglishTextNormalizer"
BASIC_NORMALIZER = "whisper.normalizers.BasicTextNormalizer"


@lru_cache(maxsize=None)
def _normalizer(name: str) -> Callable[[str], str]:
    module = _whisper_normalizers()
    return module.EnglishTextNormalizer() if name == ENGLISH_NORMALIZER else module.BasicTextNormalizer()


def _whisper_normalizers():
    """openai-whisper's ``whisper.normalizers`` package, loaded from its files without running ``whisper/__init__``
    (which imports torch, numba and the model code: about 2 of the score stage's 3.5 s)."""
    import importlib.util
    import sys
    from pathlib import Path

    name = "whisper_npu._whisper_normalizers"
    if name not in sys.modules:
        found = importlib.util.find_spec("whisper")   # locates the package, does not import it
        if found is None or found.origin is None:
            raise ModuleNotFoundError("openai-whisper is not installed (its text normalizers score WER)")
        folder = Path(found.origin).parent / "normalizers"
        spec = importlib.util.spec_from_file_location(name, folder / "__init__.py",
                                                      submodule_search_locations=[str(folder)])
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
    return sys.modules[name]


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
