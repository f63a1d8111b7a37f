"""The source protocol: what a source module returns (registry.py names the sources, loader.py asks one).

A source is a module with ``clips(lang, params, seed) -> Selection``: ``audio.eval_clips`` evaluation and
``audio.calibration_clips`` calibration :class:`SourceClip` objects, disjoint, each list in source order, plus the
rows of files it looked at and did not offer (``skipped``, with the reason), or a :class:`StageError` naming the
language and the counts. Decoding and validation are left to :mod:`whisper_npu.audio.prepare`, so a bad file is
skipped and recorded, never fatal here.

The evaluation clips are chosen first and never depend on ``audio.calibration_clips`` (:func:`pools`,
:func:`pick`): a calibration-size experiment is scored on the clips its baseline was scored on.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from whisper_npu.core.errors import StageError
from whisper_npu.core.seeds import rank_key

CALIBRATION, EVALUATION = "calibration", "evaluation"
ROLES = (CALIBRATION, EVALUATION)


@dataclass
class SourceClip:
    """One selected clip before decoding: encoded audio (bytes or a file path) and its references."""

    ref: str                           # short, machine-independent name for logs and skipped.jsonl
    data: bytes | Path | Callable[[], bytes]   # a callable is run when the clip is processed (synth)
    text: str | None = None            # reference transcription in the clip's language
    text_en: str | None = None         # English reference (translation target)
    source: dict[str, Any] = field(default_factory=dict)   # provenance (JSON-serialisable)

    def read(self) -> bytes | Path:
        """The encoded audio (runs the synthesiser for synth clips)."""
        return self.data() if callable(self.data) else self.data


@dataclass
class Selection:
    """What a source offers for one language: its calibration and evaluation clips (disjoint) and the files it
    did not offer, with why."""
    calibration: list[SourceClip]
    evaluation: list[SourceClip]
    skipped: list[dict] = field(default_factory=list)

    def role(self, name: str) -> list[SourceClip]:
        """The clips of one role (``calibration`` or ``evaluation``)."""
        return {CALIBRATION: self.calibration, EVALUATION: self.evaluation}[name]


def seeded_order(refs: Sequence[str], seed: int, lang: str) -> list[int]:
    """Indices of ``refs`` sorted by their seeded hash key (:func:`whisper_npu.core.seeds.rank_key`)."""
    return sorted(range(len(refs)), key=lambda i: rank_key(seed, lang, refs[i]))


def pools(refs: Sequence[str], n_cal: int, n_eval: int, selection: str, seed: int, lang: str,
          what: str) -> tuple[list[int], list[int]]:
    """Calibration and evaluation indices (each sorted, disjoint) into one pool of candidates ``refs`` (in
    source order), the evaluation ones chosen without looking at ``n_cal``:

    * ``first``: evaluation = the last ``n_eval`` candidates, calibration = the first ``n_cal`` (the tutorial's
      first N); a StageError when the two would overlap.
    * ``seeded``: candidates ranked by a seeded hash of (seed, lang, ref); evaluation = the ``n_eval`` first in
      that order, calibration = the next ``n_cal``.
    """
    total = len(refs)
    if total < n_cal + n_eval:
        raise StageError(f"audio@{lang}: {what} has {total} clips, audio.calibration_clips + audio.eval_clips ask "
                         f"for {n_cal} + {n_eval}; lower them or add clips")
    if selection == "first":
        return list(range(n_cal)), list(range(total - n_eval, total))
    order = seeded_order(refs, seed, lang)
    return sorted(order[n_eval:n_eval + n_cal]), sorted(order[:n_eval])


def pick(refs: Sequence[str], n: int, selection: str, seed: int, lang: str, key: str, what: str) -> list[int]:
    """Indices (sorted) of ``n`` candidates of a pool that serves one role only (FLEURS: one split per role):
    the first ``n`` (``first``) or the ``n`` first in the seeded hash order (``seeded``); ``key`` is the params
    key that asks for them (for the error)."""
    if len(refs) < n:
        raise StageError(f"audio@{lang}: {what} has {len(refs)} clips, {key} asks for {n}; "
                         f"lower {key} or add clips")
    if selection == "first":
        return list(range(n))
    return sorted(seeded_order(refs, seed, lang)[:n])
