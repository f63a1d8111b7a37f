"""The source protocol: what a source module returns (registry.py names the sources, loader.py asks one).

A source is a module with ``clips(lang, params, seed) -> Selection``: exactly ``audio.clips`` :class:`SourceClip`
objects in a deterministic order (``audio.selection``: ``first`` N, or a ``seeded`` choice from params ``seed``),
plus the rows of files it looked at and did not offer (``skipped``, with the reason), or a :class:`StageError`
naming the language and the counts. Decoding and validation are left to :mod:`whisper_npu.audio.prepare`, so a bad
file is skipped and recorded, never fatal here.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from whisper_npu.core.errors import StageError
from whisper_npu.core.seeds import lang_rng


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
    """What a source offers for one language: the selected clips and the files it did not offer, with why."""
    clips: list[SourceClip]
    skipped: list[dict] = field(default_factory=list)


def select(total: int, n: int, selection: str, seed: int, lang: str, what: str) -> list[int]:
    """Indices of the ``n`` items to use out of ``total`` (sorted), or a StageError naming the counts."""
    if total < n:
        raise StageError(f"audio@{lang}: {what} has {total} clips, audio.clips asks for {n}; "
                         "lower audio.clips or add clips")
    if selection == "first":
        return list(range(n))
    rng = lang_rng(seed, lang, "select")
    return sorted(int(i) for i in rng.choice(total, size=n, replace=False))
