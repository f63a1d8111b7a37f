"""Compile backends: each one owns both ends of its artifacts, behind one small interface the stages call.

A backend is a module of this folder, registered by its ``compile.backend`` name in :data:`BACKENDS` and
:func:`backend_module`, with

* ``build(model, component, spec, cs, cp, out_dir, stem) -> Built``: write the component's artifacts into
  ``out_dir`` from the reference model and its calibration set; return their file names, what the options
  resolved to (recorded in provenance) and the compiled-vs-fp32 numerics;
* ``load(enc_dir, dec_dir, model_config) -> runtime.Backend``: the compiled model for the decode loop, or
  :class:`CompiledNotRunnable` when the artifacts cannot run on this host.

The backends:

* ``qbcompiler`` (qbcompiler.py): Mobilint's compiler, .mblt then .mxq (runs where the SDK is installed),
  run on the NPU by mxq_runtime.py; mblt_folder.py writes Mobilint's model folder from its artifacts;
* ``onnxruntime`` (ort.py): ONNX export in the NPU's I/O layout (onnx_export.py), optional smoothing
  (smoothing.py), INT8 with ONNX Runtime (ort_int8.py), run by ort_runtime.py. Runs anywhere.

calib_sets.py is the calibration set as every backend reads it; torch_ref.py runs the fp32 reference through
the same runtime protocol. What the stages read back of a compile
output goes through this module: :func:`read_provenance`, :func:`compiled_backend_name`,
:func:`load_compiled`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from whisper_npu.io import StageError, read_json

BACKENDS = ("qbcompiler", "onnxruntime")   # compile.backend values; backend_module() maps each to its module
PROVENANCE = "provenance.json"
# The decoder's host-side tables (token and position embeddings), beside every compiled decoder: the NPU
# runtime adds them on the CPU, so they are not inside the compiled decoder.
EMBED_TOKENS = "embed_tokens.npy"
EMBED_POSITIONS = "embed_positions.npy"


class CompiledNotRunnable(StageError):
    """The compiled artifacts are valid but cannot run on this host (e.g. .mxq files without Mobilint's
    runtime or without an NPU device): the evaluate stage records the reason instead of failing."""


@dataclass(frozen=True)
class Built:
    """What a backend's ``build`` returns: artifact file names by kind (``model`` is the one to run), the
    resolved options for provenance, the numerics metric, and the calibration entries held out for it."""
    artifacts: dict[str, str]
    resolved: dict[str, Any]
    numerics: dict[str, Any]
    held_out: list[int] = field(default_factory=list)


def backend_module(name: str) -> Any:
    """The module of a backend (imported here by name, not by string: dvc.yaml deps follow imports)."""
    if name == "qbcompiler":
        from whisper_npu.backends import qbcompiler as module
    elif name == "onnxruntime":
        from whisper_npu.backends import ort as module
    else:
        raise StageError(f"backend {name!r}: expected one of {', '.join(BACKENDS)}")
    return module


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


def read_provenance(compiled_dir: Path) -> dict[str, Any]:
    """The provenance.json the compile stage wrote beside a component's artifacts."""
    prov = Path(compiled_dir) / PROVENANCE
    if not prov.is_file():
        raise StageError(f"{prov}: missing; run the compile stage (`dvc repro compile@{Path(compiled_dir).name}`)")
    return read_json(prov)


def artifact(compiled_dir: str | Path) -> Path:
    """The model file a compile output folder holds (the one that runs), named by its provenance.json."""
    return Path(compiled_dir) / read_provenance(Path(compiled_dir))["artifacts"]["model"]


def compiled_backend_name(enc_dir: Path, dec_dir: Path) -> str:
    """The compile stage's backend recorded in provenance.json (both components must agree)."""
    names = [read_provenance(d).get("backend") for d in (enc_dir, dec_dir)]
    if names[0] != names[1]:
        raise StageError(f"{enc_dir} and {dec_dir}: compiled with different backends ({names[0]}, {names[1]}); "
                         "recompile both with one compile.backend")
    return str(names[0])


def load_compiled(enc_dir: Path, dec_dir: Path, model_config: Any) -> Any:
    """The compiled model as a runtime.Backend, loaded by the backend that compiled it.

    Raises CompiledNotRunnable when the artifacts cannot run on this host, StageError when they are broken."""
    backend = compiled_backend_name(enc_dir, dec_dir)
    if backend not in BACKENDS:
        raise StageError(f"{dec_dir / PROVENANCE}: unknown backend {backend!r}; expected onnxruntime or qbcompiler")
    return backend_module(backend).load(enc_dir, dec_dir, model_config)
