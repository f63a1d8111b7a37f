"""Record the versions of the tools that shape compiled models (always runs; small JSON).

Compile stages depend on this file, so installing or upgrading qbcompiler, onnxruntime, torch or
transformers reruns compilation, and nothing else.
"""
from __future__ import annotations

import argparse
import importlib.metadata as md
import platform
from pathlib import Path

from whisper_npu.io import atomic_output, run_stage, write_json

# Distribution names whose versions matter to a compiled artifact. qbcompiler was called qubee
# before 2026-01 (shared/notes/mobilint-qbcompiler.md §0); the runtime packages run .mxq files.
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
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    with atomic_output(args.out) as tmp:
        write_json(tmp, versions())


if __name__ == "__main__":
    run_stage(main)
