"""The ``onnxruntime`` compiler: export the component in the NPU's I/O layout (export.py), optionally smoothed
(smoothing.py), quantize it to INT8 with ONNX Runtime (quantize.py, options ``compile.onnxruntime``), and compare
the float export and the INT8 model with the torch reference on held-out calibration entries. Runs anywhere;
whisper_npu/runtimes/onnxruntime.py runs what it builds.

Held-out inputs for the numerics check are ``compile.numerics_samples`` entries of the calibration set
(whisper_npu/calibration/sets.py); they are left out of what the quantizer calibrates on.
"""
from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm import tqdm

from whisper_npu.artifacts import Built, ort_session
from whisper_npu.calibration import sets as calib_sets
from whisper_npu.compilers.onnxruntime import export, quantize, smoothing
from whisper_npu.core.errors import StageError
from whisper_npu.specs import ComponentSpec, SpecError

if TYPE_CHECKING:
    from whisper_npu.calibration.sets import CalibSet
    from whisper_npu.params.compile import CompileParams

INSTALL_HINT = "onnxruntime is a dependency of this package (pip install -e .)"


def available(cp: CompileParams | None = None) -> bool:
    return True


def preflight(cp: CompileParams) -> None:
    """Nothing to check before the model is loaded: onnxruntime is a dependency."""


# ------------------------------------------------------------------------------------------- numerics

def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    denom = np.linalg.norm(a) * np.linalg.norm(b)
    return float(a @ b / denom) if denom > 0 else float(np.array_equal(a, b))


def compare(reference: Callable[..., np.ndarray], compiled: Callable[..., np.ndarray],
            samples: list[tuple[np.ndarray, ...]], output: str) -> dict[str, dict[str, float]]:
    """Per-output agreement of ``compiled`` with ``reference`` over ``samples``."""
    cos, err, top1 = [], [], []
    for arrays in tqdm(samples, desc=f"numerics {output}", unit="sample", leave=False):
        ref, out = reference(*arrays), compiled(*arrays)
        if ref.shape != out.shape:
            raise StageError(f"numerics: {output} shape {list(out.shape)} differs from fp32 {list(ref.shape)}")
        cos.append(cosine(ref, out))
        err.append(float(np.abs(ref - out).max()))
        if output == "logits":
            top1.append(float((ref.argmax(-1) == out.argmax(-1)).mean()))
    stats = {"cosine_mean": round(float(np.mean(cos)), 6), "cosine_min": round(float(np.min(cos)), 6),
             "max_abs_error": round(float(np.max(err)), 6)}
    if top1:
        stats["top1_agreement"] = round(float(np.mean(top1)), 6)
    return {output: stats}


# ------------------------------------------------------------------------------------------- build

def _checked_loader(cs: CalibSet, spec: ComponentSpec) -> Callable[[int], tuple[np.ndarray, ...]]:
    def load(i: int) -> tuple[np.ndarray, ...]:
        arrays = cs.load(i)
        try:
            for t, a in zip(spec.inputs, arrays):
                t.check(a, where=f"{cs.source} entry {i}", max_dynamic=spec.max_length)
        except SpecError as e:
            raise StageError(f"{e}; the calibration set does not match the model (rerun calibration)") from None
        return arrays
    return load


def build(model: Any, model_dir: Path, component: str, spec: ComponentSpec, cs: CalibSet, cp: CompileParams,
          out_dir: Path, stem: str) -> Built:
    """Export + INT8 into ``out_dir/<stem>.onnx``, numerics on the held-out entries."""
    calib_idx, held_idx = calib_sets.split_holdout(len(cs), cp.numerics_samples, str(cs.source))
    o = cp.onnxruntime
    load = _checked_loader(cs, spec)
    reference = export.npu_module(model, component)
    picked = calib_sets.pick_evenly(calib_idx, o.calibration_samples)
    # what read the set: static mode's ranges, SmoothQuant's scales (in dynamic mode too); dynamic alone reads none
    resolved: dict[str, Any] = {"calibrated_on": picked if o.mode == "static" or o.smooth_quant else []}
    to_export = reference
    if o.smooth_quant:
        to_export, resolved["smooth_quant"] = smoothing.smooth(reference, (load(i) for i in picked),
                                                               o.smooth_quant_alpha)
    names = [t.name for t in spec.inputs]
    artifact = out_dir / f"{stem}.onnx"
    with tempfile.TemporaryDirectory(prefix="whisper-npu-export-") as tmp:
        fp32 = export.export_onnx(to_export, spec, Path(tmp) / f"{stem}.fp32.onnx", cp.opset)
        reader = quantize.ListReader(names, lambda j: load(picked[j]), len(picked))
        try:
            resolved["quantization"] = quantize.quantize(
                fp32, artifact, mode=o.mode, per_channel=o.per_channel, op_types=o.op_types,
                nodes_to_exclude=o.nodes_to_exclude, keep_float=o.keep_float, calibrate_method=o.calibrate_method,
                percentile=o.percentile, activation_type=o.activation_type, high_precision=o.high_precision,
                reader=reader if o.mode == "static" else None, proxy=o.proxy,
                groups={k: v.model_dump(exclude_none=True) for k, v in o.groups.items()})
        except (ValueError, RuntimeError) as e:
            raise StageError(f"onnxruntime quantization failed: {e}") from None
        held = [load(i) for i in held_idx]
        out_name = spec.outputs[0].name

        def run_ort(session):
            return lambda *arrays: session.run(None, dict(zip(names, arrays)))[0]

        def run_ref(*arrays):
            return export.run_torch(reference, arrays)

        numerics = {"checked": True,
                    "export_fp32": compare(run_ref, run_ort(ort_session(fp32)), held, out_name),
                    "compiled": compare(run_ref, run_ort(ort_session(artifact)), held, out_name)}
    return Built({"model": artifact.name}, resolved, numerics, held_idx)
