"""Scoring: WER/CER with Whisper's normalizers, BLEU, agreement between two systems, the accuracy budget.

* Text is normalized as in the Whisper paper: ``EnglishTextNormalizer`` for English,
  ``BasicTextNormalizer`` (lower-case, symbols and punctuation removed) for every other language.
  Caveat inherited from Whisper: BasicTextNormalizer also replaces combining marks (Unicode category M:
  Thai vowels and tones, Indic vowel signs) with spaces, which inflates word counts for Tamil/Hindi and
  blunts CER for Thai. fp32 and compiled outputs are normalized the same way, so their difference,
  which is what this project measures, stays meaningful.
* WER for languages with spaces between words; CER (spaces removed) for those flagged ``cer`` in
  whisper_npu/languages.py (zh, ja, th).
* Rates are corpus-level: total edits / total reference units over the clips of a language.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from whisper_npu import languages as langs

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


def normalize(text: str, lang: str) -> str:
    return " ".join(_normalizer(normalizer_name(lang))(text).split())


def unit(lang: str) -> str:
    """``cer`` for languages written without spaces between words, else ``wer``."""
    return "cer" if langs.get(lang).cer else "wer"


def tokens_for(text: str, lang: str) -> list[str]:
    """Normalized scoring units: words, or characters without spaces for CER languages."""
    norm = normalize(text, lang)
    return list(norm.replace(" ", "")) if unit(lang) == "cer" else norm.split()


def edit_distance(ref: Sequence[Any], hyp: Sequence[Any]) -> int:
    """Levenshtein distance (substitutions + deletions + insertions), two-row dynamic programming."""
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
    edits: int
    ref_units: int

    @property
    def rate(self) -> float | None:
        return self.edits / self.ref_units if self.ref_units else None


def error_count(refs: Sequence[str], hyps: Sequence[str], lang: str) -> ErrorCount:
    """Corpus-level edits and reference length (WER or CER per :func:`unit`) over paired texts."""
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    edits = units = 0
    for ref, hyp in zip(refs, hyps):
        r, h = tokens_for(ref, lang), tokens_for(hyp, lang)
        edits += edit_distance(r, h)
        units += len(r)
    return ErrorCount(edits, units)


def error_rate(refs: Sequence[str], hyps: Sequence[str], lang: str) -> float | None:
    """WER or CER; None when there is nothing to score (no clip, or references empty after normalizing)."""
    return error_count(refs, hyps, lang).rate


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


def check_budget(deltas: Mapping[str, float | None], max_increase: float) -> dict[str, Any]:
    """Accuracy budget: every language's error-rate increase (compiled minus fp32) must be <= max_increase.
    Languages without a score are listed as unscored, not failed."""
    # A tolerance for float noise so that a delta exactly at the budget passes.
    over = sorted(k for k, d in deltas.items() if d is not None and d > max_increase + 1e-9)
    unscored = sorted(k for k, d in deltas.items() if d is None)
    return {"max_wer_increase": max_increase, "pass": not over, "over_budget": ",".join(over),
            "n_over_budget": len(over), "unscored": ",".join(unscored)}


def mean(values: Sequence[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None
