"""A calibration set as a compiler sees it: read, split into calibration / held-out, absolutize.

The calibration stages store paths RELATIVE to the list file (DVC outputs must not hold one machine's
absolute paths); the compiler wants paths it can open from any working directory, so compile writes an
absolutized copy into a temporary directory (never into a DVC output) and passes that.

Held-out inputs for the numerics check: ``numerics_samples`` entries spread evenly over the set (the
set is ordered by language, so even spacing covers several languages). They are removed from what the
quantizer or compiler calibrates on, so the check measures inputs the quantizer never saw.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from whisper_npu.calibration import lists
from whisper_npu.core.errors import StageError
from whisper_npu.core.files import read_json

ENCODER = "encoder"
DECODER = "decoder"


@dataclass(frozen=True)
class CalibSet:
    """One component's calibration set: ``entries[i]`` is the tuple of absolute .npy paths of sample i,
    in the component's input order (decoder: decoder_hidden_states first, encoder_hidden_states second)."""
    component: str
    source: Path                       # the list / JSON file as given
    entries: tuple[tuple[Path, ...], ...]
    header: dict                       # decoder JSON without "calib paths" (info, metadata); {} for the encoder

    def __len__(self) -> int:
        return len(self.entries)

    def load(self, i: int) -> tuple[np.ndarray, ...]:
        """The arrays of sample ``i``, float32."""
        out = []
        for p in self.entries[i]:
            try:
                out.append(np.load(p).astype(np.float32, copy=False))
            except (OSError, ValueError) as e:
                raise StageError(f"{p}: cannot read calibration array ({e}); rerun the calibration stage") from None
        return tuple(out)


def read_calib_set(component: str, path: str | Path) -> CalibSet:
    """The component's list (encoder .txt) or JSON (decoder), relative paths resolved (lists.py)."""
    path = Path(path)
    if component == ENCODER:
        return CalibSet(ENCODER, path, tuple((_absolute(p),) for p in lists.read_encoder_list(path)), {})
    _, pairs = lists.read_decoder_json(path)
    header = {k: v for k, v in read_json(path).items() if k != "calib paths"}   # info, metadata
    return CalibSet(DECODER, path, tuple((_absolute(d), _absolute(e)) for d, e in pairs), header)


def _absolute(p: Path) -> Path:
    # Absolute, links NOT followed: with cache.type symlink/hardlink each .npy is a link into .dvc/cache, and
    # resolving it would hand the compiler an extension-less cache object instead of the file the list names.
    return Path(os.path.abspath(p))


def split_holdout(n: int, n_holdout: int, where: str = "calibration set") -> tuple[list[int], list[int]]:
    """(calibration indices, held-out indices): ``n_holdout`` evenly spaced held-out entries.

    At least one entry must remain for calibration.
    """
    if n_holdout >= n:
        raise StageError(f"{where}: {n} entries, but compile.numerics_samples = {n_holdout} are held out for "
                         f"the numerics check; lower compile.numerics_samples or calibrate on more clips")
    held = sorted({min(n - 1, int((k + 0.5) * n / n_holdout)) for k in range(n_holdout)})
    calib = [i for i in range(n) if i not in set(held)]
    return calib, held


def pick_evenly(indices: list[int], k: int) -> list[int]:
    """At most ``k`` of ``indices``, evenly spaced (all of them when k >= len)."""
    if k >= len(indices):
        return list(indices)
    return [indices[int((j + 0.5) * len(indices) / k)] for j in range(k)]


def write_absolute(cs: CalibSet, indices: list[int], dest_dir: Path) -> Path:
    """Write the tutorial-format list/JSON of ``indices`` with ABSOLUTE paths into ``dest_dir``; return it."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / cs.source.name
    if cs.component == ENCODER:
        dest.write_text("".join(f"{cs.entries[i][0]}\n" for i in indices), encoding="utf-8")
    else:
        data = dict(cs.header)
        data["calib paths"] = [[str(p) for p in cs.entries[i]] for i in indices]
        meta = cs.header.get("metadata")
        if isinstance(meta, list) and len(meta) == len(cs.entries):
            data["metadata"] = [_absolute_row(meta[i], cs.entries[i]) for i in indices]
        dest.write_text(json.dumps(data, ensure_ascii=False, indent=2), encoding="utf-8")
    return dest


def _absolute_row(row: object, pair: tuple[Path, ...]) -> object:
    """A metadata row with its two .npy paths (tutorial format) made absolute like ``calib paths``."""
    if not isinstance(row, dict):
        return row
    fixed = dict(row)
    for key, p in zip(("decoder_hidden_states", "encoder_hidden_states"), pair):
        if key in fixed:
            fixed[key] = str(p)
    return fixed
