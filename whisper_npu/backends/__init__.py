"""Compile backends and runners.

* ``qbcompiler``: Mobilint's compiler, .mblt then .mxq (qbcompiler.py; runs where the SDK is installed);
* ``onnxruntime``: ONNX export in the NPU's I/O layout (onnx_export.py), INT8 with ONNX Runtime
  (ort_int8.py, smoothing.py), and a runner for the runtime protocol (ort_runtime.py). Runs anywhere.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from whisper_npu.io import StageError, read_json

BACKENDS = ("qbcompiler", "onnxruntime")
PROVENANCE = "provenance.json"


class CompiledNotRunnable(StageError):
    """The compiled artifacts are valid but cannot run on this host (e.g. .mxq files without Mobilint's
    runtime or without an NPU device): the evaluate stage records the reason instead of failing."""


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


def compiled_backend_name(enc_dir: Path, dec_dir: Path) -> str:
    """The compile stage's backend recorded in provenance.json (both components must agree)."""
    names = []
    for d in (enc_dir, dec_dir):
        prov = d / PROVENANCE
        if not prov.is_file():
            raise StageError(f"{prov}: missing; run the compile stage (`dvc repro compile@{d.name}`)")
        names.append(read_json(prov).get("backend"))
    if names[0] != names[1]:
        raise StageError(f"{enc_dir} and {dec_dir}: compiled with different backends ({names[0]}, {names[1]}); "
                         "recompile both with one compile.backend")
    return str(names[0])


def _mxq_call(compiled_dir: Path) -> dict:
    prov = read_json(compiled_dir / PROVENANCE)
    calls = prov.get("resolved", {}).get("calls")
    if not isinstance(calls, dict) or not isinstance(calls.get("mxq_compile"), dict):
        raise StageError(f"{compiled_dir / PROVENANCE}: no resolved.calls.mxq_compile (written by an older "
                         f"compile stage?); rerun `dvc repro compile@{compiled_dir.name}`")
    return calls["mxq_compile"]


def compiled_scheme(compiled_dir: Path) -> str:
    """The inference scheme the compile stage passed to ``mxq_compile`` (``resolved.calls.mxq_compile``);
    ``single`` when it passed none (qbcompiler's documented default; the 0.11 decoder call)."""
    return str(_mxq_call(compiled_dir).get("inference_scheme") or "single")


def compiled_target(compiled_dir: Path) -> str:
    """The target device passed to ``mxq_compile``; ``aries-rb`` for compilers without the argument."""
    return str(_mxq_call(compiled_dir).get("target_device") or "aries-rb")


def load_compiled(enc_dir: Path, dec_dir: Path, model_config: Any) -> Any:
    """The compiled model as a runtime.Backend: ONNX Runtime here, Mobilint's runtime for .mxq files.

    Raises CompiledNotRunnable when the artifacts cannot run on this host, StageError when they are broken."""
    backend = compiled_backend_name(enc_dir, dec_dir)
    if backend == "onnxruntime":
        from whisper_npu.backends.ort_runtime import load_ort_backend

        return load_ort_backend(enc_dir, dec_dir)
    if backend == "qbcompiler":
        from whisper_npu.backends.mxq_runtime import RuntimeUnavailable, import_runtime, load_mxq_backend

        try:
            import_runtime()   # no runtime: not runnable here, whatever the artifacts say
            return load_mxq_backend(enc_dir, dec_dir, model_config, encoder_scheme=compiled_scheme(enc_dir),
                                    decoder_scheme=compiled_scheme(dec_dir), target_device=compiled_target(dec_dir))
        except RuntimeUnavailable as e:
            raise CompiledNotRunnable(f"{dec_dir}: {e}") from None
    raise StageError(f"{dec_dir / PROVENANCE}: unknown backend {backend!r}; expected onnxruntime or qbcompiler")
