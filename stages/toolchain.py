"""Stage toolchain (always runs, first): check the whole of params.yaml, then record the versions of the tools that
shape compiled models (small JSON).

Every other stage checks only the params sections it reads; this one checks every key and the rules that span
sections, so a bad value anywhere stops `dvc repro` in seconds, before any audio or model work. Compile stages
depend on the versions file, so installing or upgrading qbcompiler, onnxruntime, torch or transformers reruns
compilation, and nothing else.
"""
from __future__ import annotations

import argparse
import importlib.metadata as md
import platform
from pathlib import Path

from whisper_npu.core.files import atomic_output, write_json
from whisper_npu.core.stage import run_stage
from whisper_npu.params.full import load_params

# Distribution names whose versions matter to a compiled artifact. qbcompiler was called qubee
# before 2026-01 (docs/mobilint.md); the runtime packages run .mxq files.
TOOLS = ("torch", "transformers", "onnx", "onnxruntime", "qbcompiler", "qubee", "mobilint-qb-runtime", "maccel")


def versions() -> dict[str, str | None]:
    """Installed version of each tool, None when absent."""
    found: dict[str, str | None] = {"python": platform.python_version()}
    for name in TOOLS:
        try:
            found[name] = md.version(name)
        except md.PackageNotFoundError:
            found[name] = None
    return found


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    load_params(args.params)
    with atomic_output(args.out) as tmp:
        write_json(tmp, versions())


if __name__ == "__main__":
    run_stage(main)
