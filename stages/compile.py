"""Compile one Whisper component (``--component encoder|decoder``) with the configured backend.

Outputs, in ``--out`` (compiled/<component>/), named after the reference model (model.json ``name``):

* ``qbcompiler``: ``<name>_<component>.mblt`` and ``.mxq`` (the tutorial's step 3, every option in
  params ``compile.qbcompiler``; see whisper_npu/backends/qbcompiler.py for the per-version calls);
* ``onnxruntime``: ``<name>_<component>.onnx``, INT8 (``compile.onnxruntime``), in the NPU's I/O layout;
* decoder, both backends: ``embed_tokens.npy`` / ``embed_positions.npy``, the tables the runtime adds on
  the CPU (they are not inside the compiled decoder);
* ``provenance.json``: backend and tool versions, every compile option and what it resolved to, the
  calibration set's hash, model id/revision/name, input/output specs.

And ``--metrics``: compiled vs fp32 (torch) on held-out inputs, per output: cosine (mean, min), max abs
error (decoder: also top-1 agreement of the logits). Held-out inputs are ``compile.numerics_samples``
entries of the component's calibration set spread evenly over it; they are left out of what the
quantizer calibrates on (whisper_npu/backends/calib_sets.py). The qbcompiler backend cannot run an .mxq
without the NPU, so it calibrates on every entry (no hold-out: nothing could use it) and its metric says
so (``checked: false``). With qbcompiler 1.3+ the configuration the compiler resolved
(``config_save_path``) is kept as ``<name>_<component>.config.yaml`` and copied into provenance.

A compiler exception, or a missing or empty output, exits non-zero with the compiler's message and leaves
neither the output folder nor the metric behind.
"""
from __future__ import annotations

import argparse
import logging
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from whisper_npu import model_store
from whisper_npu.backends import calib_sets, resolve_backend
from whisper_npu.io import StageError, atomic_output, read_json, run_stage, sha256_tree, write_json
from whisper_npu.params import CompileParams, load_params, to_dict
from whisper_npu.specs import ComponentSpec, SpecError, component_spec

log = logging.getLogger(__name__)

COMPONENTS = ("encoder", "decoder")


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


# ------------------------------------------------------------------------------------------- backends

def _checked_loader(cs: calib_sets.CalibSet, spec: ComponentSpec) -> Callable[[int], tuple[np.ndarray, ...]]:
    def load(i: int) -> tuple[np.ndarray, ...]:
        arrays = cs.load(i)
        try:
            for t, a in zip(spec.inputs, arrays):
                t.check(a, where=f"{cs.source} entry {i}", max_dynamic=spec.max_length)
        except SpecError as e:
            raise StageError(f"{e}; the calibration set does not match the model (rerun calibration)") from None
        return arrays
    return load


def compile_onnxruntime(model: Any, component: str, spec: ComponentSpec, cs: calib_sets.CalibSet,
                        calib_idx: list[int], held_idx: list[int], cp: CompileParams, out_dir: Path,
                        stem: str) -> tuple[dict, dict, dict]:
    """Export + INT8; returns (artifacts, resolved options, numerics)."""
    from whisper_npu.backends import onnx_export, ort_int8, smoothing
    from whisper_npu.backends.ort_runtime import make_session

    o = cp.onnxruntime
    load = _checked_loader(cs, spec)
    reference = onnx_export.npu_module(model, component)
    picked = calib_sets.pick_evenly(calib_idx, o.calibration_samples)
    resolved: dict[str, Any] = {"calibrated_on": picked if o.mode == "static" else []}
    to_export = reference
    if o.smooth_quant:
        to_export, resolved["smooth_quant"] = smoothing.smooth(reference, (load(i) for i in picked),
                                                               o.smooth_quant_alpha)
    names = [t.name for t in spec.inputs]
    artifact = out_dir / f"{stem}.onnx"
    with tempfile.TemporaryDirectory(prefix="whisper-npu-export-") as tmp:
        fp32 = onnx_export.export_onnx(to_export, spec, Path(tmp) / f"{stem}.fp32.onnx", cp.opset)
        reader = ort_int8.ListReader(names, lambda j: load(picked[j]), len(picked))
        try:
            resolved["quantization"] = ort_int8.quantize(
                fp32, artifact, mode=o.mode, per_channel=o.per_channel, op_types=o.op_types,
                nodes_to_exclude=o.nodes_to_exclude, keep_float=o.keep_float, calibrate_method=o.calibrate_method,
                percentile=o.percentile, activation_type=o.activation_type, high_precision=o.high_precision,
                reader=reader if o.mode == "static" else None)
        except (ValueError, RuntimeError) as e:
            raise StageError(f"onnxruntime quantization failed: {e}") from None
        held = [load(i) for i in held_idx]
        out_name = spec.outputs[0].name

        def run_ort(session):
            return lambda *arrays: session.run(None, dict(zip(names, arrays)))[0]

        def run_ref(*arrays):
            return onnx_export.run_torch(reference, arrays)

        metrics = {"export_fp32": compare(run_ref, run_ort(make_session(fp32)), held, out_name),
                   "compiled": compare(run_ref, run_ort(make_session(artifact)), held, out_name)}
    return {"model": artifact.name}, resolved, metrics


def compile_qbcompiler(model: Any, component: str, spec: ComponentSpec, cs: calib_sets.CalibSet,
                       calib_idx: list[int], cp: CompileParams, out_dir: Path, stem: str) -> tuple[dict, dict, dict]:
    import torch

    from whisper_npu.backends import qbcompiler

    inst = qbcompiler.require()
    plan = qbcompiler.plan_calls(inst.api, component, cp.qbcompiler, gpu=torch.cuda.is_available(),
                                 input_features_shape=(1, int(model.config.num_mel_bins),
                                                       spec.inputs[0].shape[1] if component == "encoder" else 0),
                                 version=inst.version)
    with tempfile.TemporaryDirectory(prefix="whisper-npu-calib-") as tmp:
        # Absolute paths for the compiler, in a temp dir: never inside a DVC output.
        calib_file = calib_sets.write_absolute(cs, calib_idx, Path(tmp).resolve())
        artifacts = qbcompiler.compile_component(inst, plan, model, calib_file, out_dir, stem)
    resolved = {"compiler": {"module": inst.module, "version": inst.version, "api": inst.api}, "calls": plan,
                "calibrated_on": calib_idx}
    if "compile_config" in artifacts:   # what the compiler says it resolved (config_save_path, 1.3+)
        import yaml

        saved = out_dir / artifacts["compile_config"]
        try:
            resolved["compiler_config"] = yaml.safe_load(saved.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as e:
            raise StageError(f"{saved.name}: the compiler's saved configuration is unreadable ({e})") from None
    metrics = {"checked": False,
               "reason": "an .mxq runs only on a Mobilint NPU (qbruntime); compare on the device with the "
                         "evaluate stage"}
    return artifacts, resolved, metrics


# ------------------------------------------------------------------------------------------- stage

def run(component: str, params_path: Path, toolchain: Path, model_dir: Path, calibration: Path,
        out: Path, metrics_path: Path) -> None:
    cp = load_params(params_path).compile
    backend = resolve_backend(cp.backend)
    tools = read_json(toolchain)
    info = model_store.model_info(model_dir)
    model, _ = model_store.load_hf(model_dir)
    spec = component_spec(component, model.config)
    cs = calib_sets.read_calib_set(component, calibration)
    if backend == "qbcompiler":
        # nothing can be checked on a compile host (an .mxq runs only on the NPU): calibrate on every entry
        calib_idx, held_idx = list(range(len(cs))), []
    else:
        calib_idx, held_idx = calib_sets.split_holdout(len(cs), cp.numerics_samples, str(calibration))
    stem = f"{info['name']}_{component}"
    log.info("compile %s with %s: %d calibration entries (%d held out)", stem, backend, len(cs), len(held_idx))

    with atomic_output(out) as tmp_out, atomic_output(metrics_path) as tmp_metrics:
        tmp_out.mkdir()
        if backend == "qbcompiler":
            artifacts, resolved, numerics = compile_qbcompiler(model, component, spec, cs, calib_idx, cp,
                                                               tmp_out, stem)
        else:
            artifacts, resolved, numerics = compile_onnxruntime(model, component, spec, cs, calib_idx, held_idx,
                                                                cp, tmp_out, stem)
            numerics = {"checked": True, **numerics}
        if component == "decoder":
            from whisper_npu.backends import onnx_export
            from whisper_npu.backends.ort_runtime import EMBED_POSITIONS, EMBED_TOKENS

            tokens, positions = onnx_export.embedding_tables(model)
            np.save(tmp_out / EMBED_TOKENS, tokens)
            np.save(tmp_out / EMBED_POSITIONS, positions)
            artifacts.update(embed_tokens=EMBED_TOKENS, embed_positions=EMBED_POSITIONS)
        quantization = resolved.pop("quantization", {})
        provenance = {
            "component": component, "backend": backend, "artifacts": artifacts,
            "model": {k: info.get(k) for k in ("name", "source", "id", "revision")},
            "toolchain": tools, "options": to_dict(cp), "resolved": resolved,
            "quantization": quantization,
            "calibration": {"file": cs.source.name, "sha256_tree": sha256_tree(cs.source.parent),
                            "entries": len(cs), "held_out": held_idx},
            "specs": spec.to_dict(),
        }
        write_json(tmp_out / "provenance.json", provenance)
        write_json(tmp_metrics, {"component": component, "backend": backend, "held_out_samples": len(held_idx),
                                 **numerics})
    log.info("compiled %s -> %s", stem, out)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--component", choices=COMPONENTS, required=True)
    p.add_argument("--params", type=Path, default=Path("params.yaml"))
    p.add_argument("--toolchain", type=Path, required=True, help="build/toolchain.json")
    p.add_argument("--model", type=Path, required=True, help="the reference model store (models/reference)")
    p.add_argument("--calibration", type=Path, required=True, help="the component's calibration list / JSON")
    p.add_argument("--out", type=Path, required=True, help="compiled/<component>")
    p.add_argument("--metrics", type=Path, required=True, help="metrics/compile_<component>.json")
    a = p.parse_args(argv)
    run(a.component, a.params, a.toolchain, a.model, a.calibration, a.out, a.metrics)


if __name__ == "__main__":
    run_stage(main)
