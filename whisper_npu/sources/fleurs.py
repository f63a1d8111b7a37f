"""Source ``fleurs``: Google FLEURS, reading only the Parquet files of the splits the stage uses.

google/fleurs is a script dataset on its main branch (never run here); its Parquet export (revision
``refs/convert/parquet``, the params default) is plain data laid out ``<lang>/<split>/0000.parquet``,
``0001.parquet``, ... (one folder per config, i.e. per language). ``datasets.load_dataset`` on it prepares every
split of a language, ``train`` included (most of the ~35-40 GB the tutorial's 17 languages took); this module
instead lists the repository's files, downloads only those of the ``<lang>/<split>`` it needs with
``hf_hub_download`` (into the Hugging Face cache, reused on the next run) and reads them with pyarrow.

* **Files**: ``<lang>/<split>/*.parquet``, or ``<lang>/<split>-*.parquet`` / ``<lang>/<split>.parquet``, in name
  order, from the hub dataset ``audio.fleurs.dataset`` at ``audio.fleurs.revision`` or from that local folder.
* **Per stage call**: the language's ``audio.fleurs.split`` (calibration clips) and ``audio.fleurs.eval_split``
  (evaluation clips; not read when ``audio.eval_clips`` is 0), plus for the English references en_us's files of
  the same splits, of which only the ``id`` and ``raw_transcription`` columns are read, once per split. Audio
  bytes are read for the chosen rows only (row group by row group) and left undecoded (soundfile decodes them
  later). The bytes read per language are logged.
* **Rows**: ``text`` is FLEURS ``raw_transcription``; ``text_en`` is the en_us ``raw_transcription`` of the same
  FLEURS sentence ``id`` (FLEURS is n-way parallel; several speakers read each sentence: the first is used).
* **Pools**: evaluation clips come from ``eval_split``, calibration clips from ``split``, each chosen within its
  own split (:func:`whisper_npu.sources.base.pick`: the first N, or the first N of a seeded hash order), so they
  cannot overlap and the evaluation clips never depend on ``audio.calibration_clips``. When both keys name the
  same split, it is one pool (:func:`whisper_npu.sources.base.pools`).
"""
from __future__ import annotations

import fnmatch
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from whisper_npu.core.errors import StageError
from whisper_npu.sources.base import Selection, SourceClip, pick, pools

if TYPE_CHECKING:
    from whisper_npu.params.audio import AudioParams

log = logging.getLogger(__name__)

# where a split's Parquet files are, below the dataset's root (the hub export's layout first)
PATTERNS = ("{lang}/{split}/*.parquet", "{lang}/{split}-*.parquet", "{lang}/{split}.parquet")
COLUMNS = ("id", "raw_transcription", "transcription", "path")   # read for every row of the language's split
ENGLISH = ("id", "raw_transcription")                            # all that is read of en_us


def _matching(names: list[str], lang: str, split: str) -> list[str]:
    patterns = [p.format(lang=lang, split=split) for p in PATTERNS]
    return sorted(n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns))


class _Dataset:
    """``audio.fleurs.dataset`` at ``audio.fleurs.revision``: a local folder or a hub dataset, asked only for the
    files of one ``<lang>/<split>`` at a time; counts the bytes it hands out per language."""

    def __init__(self, dataset: str, revision: str) -> None:
        self.dataset, self.revision = dataset, revision
        self.local = Path(dataset).is_dir()
        self._hub_names: list[str] | None = None
        self.bytes: dict[str, int] = {}

    def _names(self, lang: str) -> list[str]:
        """Relative names of the Parquet files that could belong to ``lang`` (listing opens no file)."""
        if self.local:
            root = Path(self.dataset)
            return [p.relative_to(root).as_posix() for p in (root / lang).rglob("*.parquet")] \
                if (root / lang).is_dir() else []
        if self._hub_names is None:
            self._hub_names = self._hub(lambda: _list_repo_files(self.dataset, self.revision), lang, "")
        return self._hub_names

    def _hub(self, call: Any, lang: str, split: str) -> Any:
        """``call()`` against the hub, its failures as one-line StageErrors naming the key."""
        import huggingface_hub.errors as hf_errors

        where = f"{lang}/{split}" if split else lang
        try:
            return call()
        except hf_errors.HFValidationError:
            raise StageError(f"audio.fleurs.dataset = {self.dataset!r}: neither a local folder nor a hub dataset "
                             "id") from None
        except (hf_errors.RepositoryNotFoundError, hf_errors.RevisionNotFoundError) as e:
            raise StageError(f"audio.fleurs.dataset = {self.dataset!r} at audio.fleurs.revision = "
                             f"{self.revision!r}: not found on the Hugging Face hub ({type(e).__name__})") from None
        except Exception as e:  # noqa: BLE001 - offline mode, DNS, HTTP, timeouts: the hub is out of reach
            first = str(e).splitlines()[0] if str(e) else ""
            raise StageError(f"audio.fleurs.dataset = {self.dataset!r}: cannot load {where} from the Hugging Face "
                             f"hub ({type(e).__name__}: {first}); check the network or use audio.source: synth or "
                             "local") from None

    def files(self, lang: str, split: str) -> list[Path]:
        """Local paths of the Parquet files of ``<lang>/<split>`` (downloaded when from the hub), in order."""
        names = self._names(lang)
        wanted = _matching(names, lang, split)
        if not wanted:
            if not self.local and not any(n.endswith(".parquet") for n in names) \
                    and any(n.endswith(".py") for n in names):
                raise StageError(f"audio.fleurs.dataset = {self.dataset!r} at revision {self.revision!r} needs a "
                                 "loading script, which this pipeline does not run; set audio.fleurs.revision: "
                                 "refs/convert/parquet (the Parquet export)")
            have = sorted({n.split("/")[1].split("-")[0].removesuffix(".parquet")
                           for n in names if n.startswith(f"{lang}/") and n.count("/") >= 1})
            raise StageError(f"audio.fleurs.dataset = {self.dataset!r}: no {split!r} split for {lang} (no "
                             f"{' / '.join(p.format(lang=lang, split=split) for p in PATTERNS)}; "
                             f"{lang} has: {', '.join(have) if have else 'nothing'})")
        if self.local:
            paths = [Path(self.dataset) / n for n in wanted]
        else:
            paths = [Path(self._hub(lambda n=n: _download(self.dataset, self.revision, n), lang, split))
                     for n in wanted]
        size = sum(p.stat().st_size for p in paths)
        self.bytes[lang] = self.bytes.get(lang, 0) + size
        log.info("fleurs %s/%s: %d Parquet file(s), %.1f MB", lang, split, len(paths), size / 1e6)
        return paths


def _list_repo_files(dataset: str, revision: str) -> list[str]:
    from huggingface_hub import HfApi

    return HfApi().list_repo_files(dataset, repo_type="dataset", revision=revision)


def _download(dataset: str, revision: str, name: str) -> str:
    from huggingface_hub import hf_hub_download

    return hf_hub_download(dataset, name, repo_type="dataset", revision=revision)


def _parquet(path: Path) -> Any:
    """``pyarrow.parquet.ParquetFile`` of ``path``; StageError naming the file when it is not Parquet."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as e:
        raise StageError(f"{path}: not a readable Parquet file ({str(e).splitlines()[0] if str(e) else e!r})") from None


def read_columns(paths: list[Path], columns: tuple[str, ...]) -> dict[str, list]:
    """The given columns of a split's rows (its files in order) as lists; a column a file lacks gives None."""
    out: dict[str, list] = {c: [] for c in columns}
    for path in paths:
        pf = _parquet(path)
        have = [c for c in columns if c in pf.schema_arrow.names]
        table = pf.read(columns=have)
        for c in columns:
            out[c] += table.column(c).to_pylist() if c in have else [None] * table.num_rows
    return out


def read_audio(paths: list[Path], rows: list[int]) -> dict[int, dict]:
    """The ``audio`` cell ({bytes, path}) of the given split rows, reading only the row groups that hold them."""
    wanted, out, offset = sorted(rows), {}, 0
    for path in paths:
        pf = _parquet(path)
        if "audio" not in pf.schema_arrow.names:
            return out
        for g in range(pf.num_row_groups):
            n = pf.metadata.row_group(g).num_rows
            here = [i for i in wanted if offset <= i < offset + n]
            if here:
                column = pf.read_row_group(g, columns=["audio"]).column("audio")
                out.update({i: column[i - offset].as_py() or {} for i in here})
            offset += n
    return out


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
    """``audio.eval_clips`` FLEURS clips of ``eval_split`` and ``audio.calibration_clips`` of ``split`` for one
    language, with the en_us sentence as English reference."""
    f = params.fleurs
    ds = _Dataset(f.dataset, f.revision)
    wanted = {"evaluation": (f.eval_split, params.eval_clips), "calibration": (f.split, params.calibration_clips)}
    splits = list(dict.fromkeys(split for split, n in wanted.values() if n > 0))
    files = {split: ds.files(lang, split) for split in splits}
    rows = {split: read_columns(files[split], COLUMNS) for split in splits}

    def refs(split: str) -> list[str]:
        return [f"fleurs:{lang}:{split}:{i}" for i in range(len(rows[split]["id"]))]

    def what(split: str) -> str:
        return f"{f.dataset} {lang}/{split}"

    if f.split == f.eval_split:
        cal, ev = pools(refs(f.split), params.calibration_clips, params.eval_clips, params.selection, seed, lang,
                        what(f.split))
    else:
        ev = pick(refs(f.eval_split), params.eval_clips, params.selection, seed, lang, "audio.eval_clips",
                  what(f.eval_split)) if params.eval_clips else []
        cal = pick(refs(f.split), params.calibration_clips, params.selection, seed, lang, "audio.calibration_clips",
                   what(f.split))
    chosen = {"calibration": (f.split, cal), "evaluation": (f.eval_split, ev)}

    english: dict[str, dict[int, str]] = {}
    for split in splits:   # en_us: id and raw_transcription of the same split, read once
        table = rows[split] if lang == "en_us" else read_columns(ds.files("en_us", split), ENGLISH)
        english[split] = {}
        for sid, raw in zip(table["id"], table["raw_transcription"]):
            english[split].setdefault(int(sid), raw)   # several speakers read each sentence: the first will do
    base = f.dataset if ds.local else None
    out: dict[str, list[SourceClip]] = {}
    for role, (split, picked) in chosen.items():
        audio = read_audio(files[split], picked) if picked else {}
        r = rows.get(split, {})
        out[role] = []
        for i in picked:
            sid = int(r["id"][i])
            cell = audio.get(i) or {}
            out[role].append(SourceClip(
                ref=f"fleurs:{lang}:{split}:{i}",
                data=_audio_bytes(cell, base),
                text=r["raw_transcription"][i] or r["transcription"][i] or None,
                text_en=english[split].get(sid),
                source={"kind": "fleurs", "dataset": f.dataset if base is None else Path(f.dataset).name,
                        "revision": f.revision, "split": split, "row": i, "fleurs_id": sid,
                        "path": Path(str(r["path"][i] or cell.get("path") or "")).name,
                        "transcription": r["transcription"][i]},
            ))
    log.info("fleurs@%s: %.1f MB of Parquet read for the language, %.1f MB for its English references", lang,
             ds.bytes.get(lang, 0) / 1e6, ds.bytes.get("en_us", 0) / 1e6 if lang != "en_us" else 0.0)
    return Selection(out["calibration"], out["evaluation"])
