"""The audio stage's clips as the later stages read them: :func:`read_clips` lists one split (``calibration`` or
``evaluation``) of exactly the languages asked, sorted, from ``<audio root>/<split>/<lang>/manifest.jsonl``."""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from whisper_npu.core import languages as langs
from whisper_npu.core.errors import StageError
from whisper_npu.core.files import read_jsonl
from whisper_npu.core.languages import TRANSCRIBE, TRANSLATE

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Clip:
    """One clip of the audio stage's manifest."""
    id: str
    lang: str                   # FLEURS code (key everywhere in the project)
    audio: Path
    duration: float = 0.0       # seconds
    text: str | None = None     # source-language reference, None when unknown
    text_en: str | None = None  # English reference, None when unknown
    kind: str = "unknown"       # the audio source (synth, asterisk, fleurs, local): synthetic or real speech
    diacritics: bool = True     # False: the source's transcripts carry none, so scoring compares without them

    @property
    def whisper_lang(self) -> str:
        return langs.get(self.lang).whisper

    def tasks(self) -> list[str]:
        """The tasks it is evaluated on: transcribe always (agreement and speed need no reference); translate
        when there is an English reference and the source is not English (X -> en, as in the Whisper paper)."""
        if self.text_en and self.whisper_lang != "en":
            return [TRANSCRIBE, TRANSLATE]
        return [TRANSCRIBE]


# what to change when a language has no clips of a split
_SPLIT_HINT = {"calibration": "check audio.calibration_clips", "evaluation": "set audio.eval_clips >= 1"}
SPLITS = tuple(_SPLIT_HINT)


def read_folder(folder: str | Path, lang: str, split: str, per_language: int | None = None) -> list[Clip]:
    """The clips of one language's ``split`` folder (``<audio root>/<split>/<lang>``), sorted by id: the first
    ``per_language`` when given, all otherwise.

    Reads the folder's ``manifest.jsonl`` (never globs for WAVs): a missing manifest, no clips, or a row of
    another language or split is an error naming what to run or change; fewer clips than ``per_language`` is a
    warning (the audio stage may have skipped bad clips).
    """
    if split not in SPLITS:
        raise StageError(f"split {split!r}: must be one of {', '.join(SPLITS)}")
    folder = Path(folder)
    manifest = folder / "manifest.jsonl"
    if not manifest.is_file():
        raise StageError(f"{manifest}: missing; language {lang!r} is in params `languages` but has no {split} audio "
                         f"(run `dvc repro audio@{lang}`)")
    rows = read_jsonl(manifest)
    for r in rows:
        if r.get("lang", lang) != lang or r.get("split", split) != split:
            raise StageError(f"{manifest}: clip {r.get('id')!r} is {r.get('lang')!r} {r.get('split')!r}, expected "
                             f"{lang!r} {split!r} (rerun `dvc repro audio@{lang}`)")
    rows.sort(key=lambda r: r["id"])
    if not rows:
        raise StageError(f"{manifest}: no {split} clips for {lang!r}; {_SPLIT_HINT[split]}")
    if per_language is not None and len(rows) < per_language:
        log.warning("%s: %d %s clips, fewer than calibration.samples_per_language = %d; using all",
                    lang, len(rows), split, per_language)
    clips = []
    for r in rows[:per_language]:
        path = folder / r["file"]
        if not path.is_file():
            raise StageError(f"{path}: listed in {manifest} but missing (rerun `dvc repro audio@{lang}`)")
        src = r.get("source") if isinstance(r.get("source"), dict) else {}
        clips.append(Clip(r["id"], lang, path, float(r.get("duration", 0.0)), r.get("text") or None,
                          r.get("text_en") or None, str(src.get("kind", "unknown")), bool(src.get("diacritics", True))))
    return clips


def read_clips(audio_root: str | Path, languages: Sequence[str], split: str,
               per_language: int | None = None) -> list[Clip]:
    """The ``split`` clips (``calibration`` or ``evaluation``) of exactly the listed languages, sorted by
    (language, id): :func:`read_folder` of ``<audio_root>/<split>/<lang>`` for each. Languages are sorted, so the
    order of the params list does not matter."""
    return [c for lang in sorted(languages) for c in read_folder(Path(audio_root) / split / lang, lang, split,
                                                                  per_language)]
