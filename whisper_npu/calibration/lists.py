"""The tutorial's calibration list files: write, read (relative paths resolved) and validate against the specs.

* ``encoder/whisper_encoder_cali.txt``: one ``.npy`` path per line, each a ``[1, 3000, 80]`` float32 log-mel;
* ``decoder/whisper_decoder_calib.json``: ``info`` (input names and shapes), ``calib paths`` as
  ``[decoder_hidden_states.npy, encoder_hidden_states.npy]`` pairs (decoder input first, the runtime's input
  order), and (``full`` layout) ``metadata`` per sample.

Paths are stored RELATIVE to the list file (DVC outputs must not hold one machine's absolute paths; the tutorial
wrote absolute ones); the compile stage hands the compiler a copy with absolute paths in a temporary folder
(whisper_npu/calibration/sets.py).
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from whisper_npu import specs
from whisper_npu.core.errors import StageError
from whisper_npu.core.languages import TRANSCRIBE, TRANSLATE

# The tutorial's task_type labels; the "_no_lang" variants were disabled there and are not produced here.
TASK_TYPES = {TRANSCRIBE: "transcription_with_lang", TRANSLATE: "translation_with_lang"}


def _rel(path: Path, base: Path) -> str:
    return Path(os.path.relpath(path, base)).as_posix()


def write_encoder_list(list_path: str | Path, files: Sequence[str | Path]) -> None:
    """The tutorial's ``whisper_encoder_cali.txt``: one path per line, relative to the list's folder."""
    list_path = Path(list_path)
    base = list_path.parent
    lines = [_rel(base / f, base) if not Path(f).is_absolute() else _rel(Path(f), base) for f in files]
    list_path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def _resolve(p: str, base: Path, where: Path) -> Path:
    q = Path(p)
    q = q if q.is_absolute() else base / q
    if not q.is_file():
        raise StageError(f"{where}: lists {p!r}, which does not exist ({q}); rerun the calibration stage")
    return q


def read_encoder_list(list_path: str | Path) -> list[Path]:
    """Paths in an encoder list, relative ones resolved against the list file's folder (absolute kept)."""
    list_path = Path(list_path)
    if not list_path.is_file():
        raise StageError(f"{list_path}: missing (run `dvc repro calibrate_encoder`)")
    base = list_path.parent
    lines = [ln.strip() for ln in list_path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    if not lines:
        raise StageError(f"{list_path}: lists no files")
    return [_resolve(ln, base, list_path) for ln in lines]


JSON_LAYOUTS = ("full", "minimal")


def decoder_json(config: Any, pairs: Sequence[tuple[str, str]], metadata: Sequence[dict],
                 extra_info: dict | None = None, layout: str = "full") -> dict:
    """The tutorial's ``whisper_decoder_calib.json`` structure (paths as given, normally relative).

    ``full``: the 0.12 seed's ``info`` (names, shapes, task types, omission rate), ``calib paths`` and
    ``metadata``; ``minimal``: the newest recipe's ``info`` (names, shapes) and ``calib paths`` only."""
    spec = specs.decoder_spec(config)
    names, shapes = [t.name for t in spec.inputs], [list(t.shape) for t in spec.inputs]
    if layout == "minimal":
        return {"info": {"input names": names, "input shapes": shapes}, "calib paths": [[d, e] for d, e in pairs]}
    if layout != "full":
        raise ValueError(f"decoder JSON layout {layout!r}: expected one of {JSON_LAYOUTS}")
    info = {"input names": names, "input shapes": shapes,
            "task_types": sorted(TASK_TYPES.values()),
            # The tutorial wrote 0.2 here although language omission was disabled; it is really 0.
            "language_omission_rate": 0.0, **(extra_info or {})}
    return {"info": info, "calib paths": [[d, e] for d, e in pairs], "metadata": list(metadata)}


def read_decoder_json(json_path: str | Path) -> tuple[dict, list[tuple[Path, Path]]]:
    """(info, [(decoder input .npy, encoder states .npy), ...]) with paths resolved against the JSON's folder."""
    json_path = Path(json_path)
    if not json_path.is_file():
        raise StageError(f"{json_path}: missing (run `dvc repro calibrate_decoder`)")
    try:
        data = json.loads(json_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise StageError(f"{json_path}: not valid JSON ({e})") from None
    if not isinstance(data, dict) or "info" not in data or "calib paths" not in data:
        raise StageError(f"{json_path}: needs 'info' and 'calib paths' (the tutorial's format)")
    base = json_path.parent
    pairs = []
    for i, pair in enumerate(data["calib paths"]):
        if not isinstance(pair, list) or len(pair) != 2:
            raise StageError(f"{json_path}: calib paths[{i}] = {pair!r}: expected [decoder input, encoder states]")
        pairs.append((_resolve(pair[0], base, json_path), _resolve(pair[1], base, json_path)))
    if not pairs:
        raise StageError(f"{json_path}: 'calib paths' is empty")
    return data["info"], pairs


# ---------------------------------------------------------------------------------------------- validation

def _load_checked(path: Path, spec: specs.TensorSpec, max_dynamic: int | None = None) -> np.ndarray:
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as e:
        raise StageError(f"{path}: not a readable .npy ({e})") from None
    try:
        spec.check(arr, where=str(path), max_dynamic=max_dynamic)
    except specs.SpecError as e:
        raise StageError(str(e)) from None
    if not arr.flags.c_contiguous:
        raise StageError(f"{path}: not C-contiguous")
    return arr


def validate_encoder_set(list_path: str | Path, config: Any) -> int:
    """Check every file the encoder list names against the encoder input spec; return the count."""
    spec = specs.encoder_spec(config).inputs[0]
    files = read_encoder_list(list_path)
    for f in files:
        _load_checked(f, spec)
    return len(files)


def validate_decoder_set(json_path: str | Path, config: Any) -> int:
    """Check the decoder JSON's info and every pair against the decoder input specs; return the count."""
    spec = specs.decoder_spec(config)
    info, pairs = read_decoder_json(json_path)
    names = [t.name for t in spec.inputs]
    shapes = [list(t.shape) for t in spec.inputs]
    if info.get("input names") != names or info.get("input shapes") != shapes:
        raise StageError(f"{json_path}: info has input names {info.get('input names')} and shapes "
                         f"{info.get('input shapes')}; the model config says {names} and {shapes}")
    dec_spec, enc_spec = spec.inputs
    for d, e in pairs:
        _load_checked(d, dec_spec, max_dynamic=spec.max_length)
        _load_checked(e, enc_spec)
    return len(pairs)
