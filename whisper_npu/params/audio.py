"""``audio``: where each language's clips come from and how many (stages/audio.py).

``calibration_clips`` is the calibration pool per language and ``eval_clips`` the held-out evaluation clips on
top of it, disjoint; the evaluation clips are chosen first, so changing the calibration pool never changes them
(whisper_npu/sources/base.py). Before, ``clips`` counted both together: it is refused with a message saying so.
"""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, model_validator

from whisper_npu.core import languages as langs
from whisper_npu.params.base import Section
from whisper_npu.sources.registry import NAMES

Source = Literal[NAMES]   # type: ignore[valid-type]   # the audio sources, in the registry's order
Selection = Literal["first", "seeded"]


class SynthParams(Section):
    rate: list[int]        # espeak-ng words per minute, [min, max], drawn per clip
    pitch: list[int]       # espeak-ng pitch 0-99, [min, max], drawn per clip
    variants: list[str]    # espeak-ng voice variants drawn per clip ("" = the language's default voice)

    @model_validator(mode="after")
    def _ranges(self) -> "SynthParams":
        for key, pair, lo, hi in (("rate", self.rate, 80, 450), ("pitch", self.pitch, 0, 99)):
            if len(pair) != 2 or not lo <= pair[0] <= pair[1] <= hi:
                raise ValueError(f"{key} = {pair!r}: must be [min, max] with {lo} <= min <= max <= {hi}")
        if not self.variants:
            raise ValueError("variants = []: list at least one variant ('' is the default voice)")
        return self


class FleursParams(Section):
    dataset: str           # hub dataset id, or a local folder with <lang>/ sub-folders of Parquet files
    revision: str          # google/fleurs' main branch is a loading script; its Parquet export is data
    split: str             # the calibration clips' split
    eval_split: str        # the evaluation clips' split (another split: the two pools cannot overlap)


class LocalAudioParams(Section):
    dir: str               # one sub-folder per language code holding audio (+ optional .txt)


class AsteriskParams(Section):
    cache: str             # folder holding the pinned .deb files; apt-get download fills it
    min_seconds: float = Field(ge=0, le=30)


RENAMED_CLIPS = ("clips: no longer a key: calibration_clips replaced it (the calibration pool per language), with "
                 "eval_clips evaluation clips on top of it, disjoint; the old clips = calibration_clips + eval_clips")


def _refuse_old_clips(data: object) -> object:
    if isinstance(data, dict) and "clips" in data:
        raise ValueError(RENAMED_CLIPS)
    return data


class AudioOverride(Section):
    """One language's entry in ``audio.per_language``: keys left out (or null) take the ``audio`` value."""
    source: Optional[Source] = None
    calibration_clips: Optional[int] = Field(default=None, ge=1)
    eval_clips: Optional[int] = Field(default=None, ge=0)
    selection: Optional[Selection] = None

    _renamed = model_validator(mode="before")(_refuse_old_clips)


class AudioParams(Section):
    KEY = "audio"
    source: Source
    calibration_clips: int = Field(ge=1)     # the calibration pool per language
    eval_clips: int = Field(ge=0)            # held out for evaluation, on top of the calibration pool (disjoint)
    selection: Selection
    long_clips: Literal["trim", "split"]
    max_skipped_fraction: float = Field(ge=0, le=1)
    per_language: dict[str, AudioOverride]   # language code -> its overrides
    synth: SynthParams
    fleurs: FleursParams
    local: LocalAudioParams
    asterisk: AsteriskParams

    def for_lang(self, lang: str) -> "AudioParams":
        """The audio params that apply to ``lang``: its ``per_language`` entry over the defaults."""
        o = self.per_language.get(lang)
        changes = {} if o is None else {k: v for k, v in o.model_dump().items() if v is not None}
        return self.model_copy(update={"per_language": {}, **changes})

    def where(self, lang: str) -> str:
        """The params key a language's counts come from (for messages)."""
        return f"audio.per_language.{lang}" if lang in self.per_language else "audio"

    _renamed = model_validator(mode="before")(_refuse_old_clips)

    @model_validator(mode="after")
    def _entries(self) -> "AudioParams":
        for lang, o in self.per_language.items():
            if lang not in langs.LANGUAGES:
                raise ValueError(f"per_language.{lang}: unknown language; "
                                 f"allowed: {', '.join(sorted(langs.LANGUAGES))}")
        if self.source == "local" and not self.local.dir:
            raise ValueError("local.dir = '': with audio.source = local name the folder of audio")
        for lang, o in self.per_language.items():
            if o.source == "local" and not self.local.dir:
                raise ValueError(f"local.dir = '': with audio.source = local name the folder of audio ({lang})")
        return self
