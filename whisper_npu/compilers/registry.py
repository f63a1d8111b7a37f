"""The compilers by ``compile.backend`` name. Each builds one component's artifacts from the reference model and its
calibration set and says what its options resolved to (``build(model, component, spec, calib_set, compile_params,
out_dir, stem) -> Built``). Adding a compiler = its package here + one line in :data:`COMPILERS` + its params keys.
Importing this module imports no compiler; whisper_npu/runtimes/ runs what they build."""
from __future__ import annotations

import importlib
from typing import Any

from whisper_npu.core.errors import StageError

# compile.backend -> the compiler's package in this folder (its build.py: build, available, INSTALL_HINT)
COMPILERS = {
    "qbcompiler": "mobilint",
    "onnxruntime": "onnxruntime",
}


def get(name: str) -> Any:
    """The module of a compiler by its ``compile.backend`` name."""
    if name not in COMPILERS:
        raise StageError(f"compile.backend = {name!r}: must be auto, {' or '.join(COMPILERS)}")
    return importlib.import_module(f"whisper_npu.compilers.{COMPILERS[name]}.build")
