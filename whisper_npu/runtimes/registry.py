"""The runtimes by the compile backend recorded in a compile output's provenance: what runs the compiled model
behind the decode protocol (whisper_npu/decoding/protocol.py; the fp32 reference is torch_ref.py). Adding a runtime =
its module here + one line in :data:`RUNTIMES`: ``load(enc_dir, dec_dir, model_config, npu)`` (``npu``: params
``npu``, the placement on a Mobilint NPU) returns a Backend whose ``device`` says what runs it. Importing this module
imports no runtime."""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from whisper_npu.artifacts import PROVENANCE, compiled_backend_name
from whisper_npu.core.errors import StageError

# compile backend (provenance "backend") -> the module in this folder whose load(enc_dir, dec_dir, model_config, npu)
# runs its artifacts
RUNTIMES = {
    "onnxruntime": "onnxruntime",
    "qbcompiler": "mobilint.runtime",
}


def load_compiled(enc_dir: str | Path, dec_dir: str | Path, model_config: Any, npu: Any) -> Any:
    """The compiled model as a decoding Backend, loaded by the runtime of the backend that compiled it.

    Raises CompiledNotRunnable when the artifacts cannot run on this host, StageError when they are broken."""
    backend = compiled_backend_name(enc_dir, dec_dir)
    if backend not in RUNTIMES:
        raise StageError(f"{Path(dec_dir) / PROVENANCE}: unknown backend {backend!r}; expected one of "
                         f"{', '.join(RUNTIMES)}")
    module = importlib.import_module(f"whisper_npu.runtimes.{RUNTIMES[backend]}")
    return module.load(Path(enc_dir), Path(dec_dir), model_config, npu)
