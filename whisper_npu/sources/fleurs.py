"""Source ``fleurs``: Google FLEURS through ``datasets.load_dataset``, without remote code.

google/fleurs is a script dataset on its main branch, which ``datasets`` >= 4 refuses to run; its Parquet export
(revision ``refs/convert/parquet``, the params default) is plain data. The language is taken as a config name, or,
where the repository has no such config (the Parquet export, a local folder), as the sub-folder ``<lang>/``. Audio is
read undecoded and decoded with soundfile (``datasets`` >= 4 would need torchcodec). ``text`` is FLEURS
``raw_transcription``; ``text_en`` is the en_us ``raw_transcription`` of the same FLEURS sentence ``id`` (FLEURS is
n-way parallel), when the en_us split has it.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from whisper_npu.core.errors import StageError
from whisper_npu.sources.base import Selection, SourceClip, select

if TYPE_CHECKING:
    from whisper_npu.params.audio import AudioParams

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


def clips(lang: str, params: AudioParams, seed: int) -> Selection:
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
    out = []
    for i in picked:
        row = ds[i]
        sid = int(row["id"])
        text = row.get("raw_transcription") or row.get("transcription") or None
        audio = row.get("audio") or {}
        out.append(SourceClip(
            ref=f"fleurs:{lang}:{f.split}:{i}",
            data=_audio_bytes(audio, base),
            text=text,
            text_en=english.get(sid),
            source={"kind": "fleurs", "dataset": f.dataset if base is None else Path(f.dataset).name,
                    "revision": f.revision, "split": f.split, "row": i, "fleurs_id": sid,
                    "path": Path(str(row.get("path") or audio.get("path") or "")).name,
                    "transcription": row.get("transcription")},
        ))
    return Selection(out)
