"""Where a language's clips come from (params ``audio.source``): ``synth``, ``fleurs`` or ``local``.

Each source returns exactly ``audio.clips`` :class:`SourceClip` objects in a deterministic order
(``audio.selection``: ``first`` N, or a ``seeded`` choice from params ``seed``), or raises
:class:`StageError` naming the language and the counts. Decoding and validation are left to
:mod:`whisper_npu.audio`, so a bad file is skipped and recorded, never fatal here.

* ``synth``: the parallel corpus ``whisper_npu/data/corpus.jsonl`` (24 everyday sentences in the
  tutorial's 17 languages) spoken by espeak-ng with a seeded voice variant, rate and pitch per clip.
  cmn_hans_cn is spoken from its pinyin line with the ``cmn-latn-pinyin`` voice and ja_jp from its
  kana line (espeak-ng reads Han characters badly); the reference text stays in Han/kanji.
* ``fleurs``: ``datasets.load_dataset`` without remote code. google/fleurs is a script dataset on
  its main branch, which ``datasets`` >= 4 refuses to run; its Parquet export (revision
  ``refs/convert/parquet``, the params default) is plain data. The language is taken as a config
  name, or, where the repository has no such config (the Parquet export, a local folder), as the
  sub-folder ``<lang>/``. Audio is read undecoded and decoded with soundfile (``datasets`` >= 4
  would need torchcodec). ``text`` is FLEURS ``raw_transcription``; ``text_en`` is the en_us
  ``raw_transcription`` of the same FLEURS sentence ``id`` (FLEURS is n-way parallel), when the en_us
  split has it.
* ``local``: ``<audio.local.dir>/<lang>/*.{wav,flac,mp3,ogg}`` in sorted order, with an optional
  ``<stem>.txt`` transcript and ``<stem>.en.txt`` English reference (two audio files of one stem with a
  transcript, ``a.wav`` + ``a.flac`` + ``a.txt``, are refused: the text would apply to both).
"""
from __future__ import annotations

import functools
import json
import logging
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from whisper_npu import languages as langs
from whisper_npu.audio import AUDIO_EXTENSIONS
from whisper_npu.io import StageError
from whisper_npu.params import AudioParams
from whisper_npu.seeds import lang_rng

log = logging.getLogger(__name__)

CORPUS = "corpus.jsonl"


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


def select(total: int, n: int, selection: str, seed: int, lang: str, what: str) -> list[int]:
    """Indices of the ``n`` items to use out of ``total`` (sorted), or a StageError naming the counts."""
    if total < n:
        raise StageError(f"audio@{lang}: {what} has {total} clips, audio.clips asks for {n}; "
                         "lower audio.clips or add clips")
    if selection == "first":
        return list(range(n))
    rng = lang_rng(seed, lang, "select")
    return sorted(int(i) for i in rng.choice(total, size=n, replace=False))


# ---------------------------------------------------------------------------------------------- synth

@functools.lru_cache(maxsize=1)
def load_corpus() -> dict[str, list[dict]]:
    """The parallel corpus: language -> rows sorted by sentence number."""
    text = resources.files("whisper_npu").joinpath("data", CORPUS).read_text(encoding="utf-8")
    by_lang: dict[str, list[dict]] = {}
    for line in text.splitlines():
        if line.strip():
            row = json.loads(line)
            by_lang.setdefault(row["lang"], []).append(row)
    for rows in by_lang.values():
        rows.sort(key=lambda r: r["sentence"])
    return by_lang


def espeak(text: str, voice: str, rate: int, pitch: int) -> bytes:
    """Speak ``text`` with espeak-ng and return its WAV bytes (22.05 kHz mono)."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise StageError("espeak-ng: not installed; install it (`sudo apt-get install espeak-ng`, or `make setup`)")
    # The text is the one argument after "--", so it cannot be taken for an option. Not --stdin: espeak-ng
    # 1.51 as released drops the last byte of stdin input (fixed in Debian's 1.51+dfsg-10+deb12u2, not in
    # every build), which cuts a final multi-byte character ("。") into invalid UTF-8 that the reader then
    # completes from whatever memory follows the text: the clip would depend on the build and on memory.
    proc = subprocess.run([exe, "-v", voice, "-s", str(rate), "-p", str(pitch), "--stdout", "--", text],
                          stdin=subprocess.DEVNULL, capture_output=True, check=False)
    if proc.returncode != 0 or len(proc.stdout) <= 44:
        err = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        raise StageError(f"espeak-ng -v {voice}: failed (exit {proc.returncode}): {err[0] if err else 'no audio'}")
    return proc.stdout


def synth_clips(lang: str, params: AudioParams, seed: int) -> list[SourceClip]:
    """``audio.clips`` corpus sentences spoken by espeak-ng, with seeded voice variety."""
    language = langs.get(lang)
    corpus = load_corpus()
    if lang not in corpus or not language.espeak_voice:
        have = ", ".join(sorted(corpus))
        raise StageError(f"languages: {lang!r} has no synthetic speech (no corpus text in whisper_npu/data/{CORPUS}); "
                         f"with audio.source = synth use one of: {have}")
    rows = corpus[lang]
    english = {r["sentence"]: r["text"] for r in corpus.get("en_us", [])}
    picked = select(len(rows), params.clips, params.selection, seed, lang, f"the synth corpus ({CORPUS})")
    s = params.synth
    clips = []
    for i in picked:
        row = rows[i]
        # One generator per clip, keyed by language and sentence: the same clip sounds the same
        # whatever else is selected or listed.
        rng = lang_rng(seed, lang, f"synth-{row['sentence']}")
        variant = s.variants[int(rng.integers(len(s.variants)))]
        rate = int(rng.integers(s.rate[0], s.rate[1] + 1))
        pitch = int(rng.integers(s.pitch[0], s.pitch[1] + 1))
        voice = language.espeak_voice + (f"+{variant}" if variant else "")
        spoken = row.get("speech", row["text"])
        clips.append(SourceClip(
            ref=f"synth:{lang}:{row['sentence']}",
            data=functools.partial(espeak, spoken, voice, rate, pitch),
            text=row["text"],
            text_en=english.get(row["sentence"]),
            source={"kind": "synth", "sentence": row["sentence"], "voice": voice, "rate": rate, "pitch": pitch,
                    **({"spoken_text": spoken} if spoken != row["text"] else {})},
        ))
    return clips


# ---------------------------------------------------------------------------------------------- fleurs

def _load_fleurs_split(dataset: str, lang: str, split: str, revision: str):
    """One FLEURS language split, audio left undecoded; StageError when it cannot be loaded."""
    import datasets
    import huggingface_hub.errors as hf_errors

    local = Path(dataset).is_dir()
    kwargs: dict[str, Any] = {"split": split}
    if not local:
        kwargs["revision"] = revision
    network_errors = (ConnectionError, TimeoutError, hf_errors.HfHubHTTPError, hf_errors.LocalEntryNotFoundError,
                      hf_errors.OfflineModeIsEnabled, datasets.exceptions.DatasetNotFoundError)
    try:
        try:
            ds = datasets.load_dataset(dataset, lang, **kwargs)
        except ValueError as e:
            # No config named after the language (the Parquet export, a folder): use its sub-folder.
            if "BuilderConfig" not in str(e) and "config" not in str(e).lower():
                raise
            ds = datasets.load_dataset(dataset, data_dir=lang, **kwargs)
    except RuntimeError as e:
        if "scripts are no longer supported" in str(e):
            raise StageError(f"audio.fleurs.dataset = {dataset!r} at revision {revision!r} needs a loading script, "
                             "which this pipeline does not run; set audio.fleurs.revision: refs/convert/parquet "
                             "(the Parquet export)") from None
        raise
    except network_errors as e:
        raise StageError(f"audio.fleurs.dataset = {dataset!r}: cannot load {lang}/{split} from the Hugging Face hub "
                         f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); check the network or "
                         "use audio.source: synth or local") from None
    except (FileNotFoundError, ValueError) as e:
        raise StageError(f"audio.fleurs.dataset = {dataset!r}: no {split!r} split for {lang} "
                         f"({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    if "audio" in ds.column_names:
        ds = ds.cast_column("audio", datasets.Audio(decode=False))
    return ds


def _audio_bytes(audio: dict, base: str | None) -> bytes | Path:
    if audio.get("bytes"):
        return audio["bytes"]
    path = audio.get("path")
    if path and Path(path).is_file():
        return Path(path)
    if path and base and (Path(base) / path).is_file():
        return Path(base) / path
    return b""  # recorded as unreadable by the audio stage


def fleurs_clips(lang: str, params: AudioParams, seed: int) -> list[SourceClip]:
    """``audio.clips`` FLEURS clips of one language, with the en_us sentence as English reference."""
    f = params.fleurs
    ds = _load_fleurs_split(f.dataset, lang, f.split, f.revision)
    picked = select(len(ds), params.clips, params.selection, seed, lang, f"{f.dataset} {lang}/{f.split}")
    english: dict[int, str] = {}
    if lang == "en_us":
        en_rows = ds.select_columns(["id", "raw_transcription"])
    else:
        en_rows = _load_fleurs_split(f.dataset, "en_us", f.split, f.revision).select_columns(["id", "raw_transcription"])
    for sid, raw in zip(en_rows["id"], en_rows["raw_transcription"]):
        english.setdefault(int(sid), raw)  # several speakers read each sentence: the first will do
    base = f.dataset if Path(f.dataset).is_dir() else None
    clips = []
    for i in picked:
        row = ds[i]
        sid = int(row["id"])
        text = row.get("raw_transcription") or row.get("transcription") or None
        audio = row.get("audio") or {}
        clips.append(SourceClip(
            ref=f"fleurs:{lang}:{f.split}:{i}",
            data=_audio_bytes(audio, base),
            text=text,
            text_en=english.get(sid),
            source={"kind": "fleurs", "dataset": f.dataset if base is None else Path(f.dataset).name,
                    "revision": f.revision, "split": f.split, "row": i, "fleurs_id": sid,
                    "path": Path(str(row.get("path") or audio.get("path") or "")).name,
                    "transcription": row.get("transcription")},
        ))
    return clips


# ---------------------------------------------------------------------------------------------- local

def _read_text(path: Path) -> str | None:
    if not path.is_file():
        return None
    text = path.read_text(encoding="utf-8-sig").strip()
    return text or None


def local_clips(lang: str, params: AudioParams, seed: int) -> list[SourceClip]:
    """``audio.clips`` files from ``<audio.local.dir>/<lang>/`` (sorted), with optional transcripts."""
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
    picked = select(len(files), params.clips, params.selection, seed, lang, f"{folder}")
    clips = []
    for i in picked:
        p = files[i]
        text = _read_text(p.with_suffix(".txt"))
        text_en = _read_text(p.with_name(p.stem + ".en.txt"))
        if text_en is None and lang == "en_us":
            text_en = text
        clips.append(SourceClip(ref=f"local:{lang}/{p.name}", data=p, text=text, text_en=text_en,
                                source={"kind": "local", "path": f"{lang}/{p.name}"}))
    return clips


SOURCES = {"synth": synth_clips, "fleurs": fleurs_clips, "local": local_clips}


def get_clips(lang: str, params: AudioParams, seed: int) -> list[SourceClip]:
    """The selected clips of one language from the source named in ``audio.source``."""
    if lang not in langs.LANGUAGES:
        raise StageError(f"--lang {lang!r}: unknown language; known: {', '.join(sorted(langs.LANGUAGES))}")
    if params.source == "asterisk":
        from whisper_npu.asterisk import asterisk_clips  # imports this module: loaded on use

        return asterisk_clips(lang, params, seed)
    return SOURCES[params.source](lang, params, seed)


__all__ = ["SourceClip", "get_clips", "select", "load_corpus", "espeak",
           "synth_clips", "fleurs_clips", "local_clips"]
