"""Source ``local``: ``<audio.local.dir>/<lang>/*.{wav,flac,mp3,ogg}`` in sorted order, with an optional
``<stem>.txt`` transcript and ``<stem>.en.txt`` English reference (two audio files of one stem with a transcript,
``a.wav`` + ``a.flac`` + ``a.txt``, are refused: the text would apply to both).
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from whisper_npu.audio.prepare import AUDIO_EXTENSIONS
from whisper_npu.core.errors import StageError
from whisper_npu.sources.base import Selection, SourceClip, pools

if TYPE_CHECKING:
    from whisper_npu.params.audio import AudioParams

def _read_text(path: Path) -> str | None:
    if not path.is_file():
        return None
    text = path.read_text(encoding="utf-8-sig").strip()
    return text or None


def _clip(lang: str, path: Path, ref: str) -> SourceClip:
    text = _read_text(path.with_suffix(".txt"))
    text_en = _read_text(path.with_name(path.stem + ".en.txt"))
    if text_en is None and lang == "en_us":
        text_en = text
    return SourceClip(ref=ref, data=path, text=text, text_en=text_en,
                      source={"kind": "local", "path": f"{lang}/{path.name}"})


def clips(lang: str, params: AudioParams, seed: int) -> Selection:
    """``audio.eval_clips`` + ``audio.calibration_clips`` files from ``<audio.local.dir>/<lang>/``, with optional
    transcripts; the pools are :func:`whisper_npu.sources.base.pools` over the files sorted by name."""
    folder = Path(params.local.dir) / lang
    if not folder.is_dir():
        raise StageError(f"audio.local.dir = {params.local.dir!r}: no folder {folder} for {lang}; "
                         "make one sub-folder per language code")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)
    # Files that share a name (a.wav, a.flac) are distinct clips, but a transcript a.txt / a.en.txt would be
    # claimed by both: refuse rather than guess which recording it describes.
    by_stem: dict[str, list[str]] = {}
    for p in files:
        by_stem.setdefault(p.stem, []).append(p.name)
    for stem, names in by_stem.items():
        texts = [t for t in (f"{stem}.txt", f"{stem}.en.txt") if (folder / t).is_file()]
        if len(names) > 1 and texts:
            raise StageError(f"audio.local.dir = {params.local.dir!r}: {lang}/{texts[0]} matches "
                             f"{' and '.join(names)}; rename the audio files so each transcript names one")
    refs = [f"local:{lang}/{p.name}" for p in files]
    cal, ev = pools(refs, params.calibration_clips, params.eval_clips, params.selection, seed, lang, f"{folder}")
    return Selection([_clip(lang, files[i], refs[i]) for i in cal], [_clip(lang, files[i], refs[i]) for i in ev])
