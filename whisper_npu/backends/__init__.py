"""Compile backends and runners.

* ``qbcompiler``: Mobilint's compiler, .mblt then .mxq (qbcompiler.py; runs where the SDK is installed);
* ``onnxruntime``: ONNX export in the NPU's I/O layout (onnx_export.py), INT8 with ONNX Runtime
  (ort_int8.py, smoothing.py), and a runner for the runtime protocol (ort_runtime.py). Runs anywhere.
"""
from __future__ import annotations

from whisper_npu.io import StageError

BACKENDS = ("qbcompiler", "onnxruntime")


def resolve_backend(choice: str) -> str:
    """``auto`` -> qbcompiler when it imports, else onnxruntime; an explicit qbcompiler must be installed."""
    from whisper_npu.backends import qbcompiler

    if choice == "auto":
        return "qbcompiler" if qbcompiler.is_importable() else "onnxruntime"
    if choice == "qbcompiler" and not qbcompiler.is_importable():
        raise StageError(f"compile.backend = qbcompiler: {qbcompiler.INSTALL_HINT}")
    if choice not in BACKENDS:
        raise StageError(f"compile.backend = {choice!r}: must be auto, {' or '.join(BACKENDS)}")
    return choice
