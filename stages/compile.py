"""Compile one Whisper component (``--component encoder|decoder``) with the configured backend.

The compiler (whisper_npu/compilers/: ``build`` per compiler) writes its artifacts; this stage adds what every
compile output holds (the decoder's embedding tables, provenance.json) and the numerics metric.

Outputs, in ``--out`` (compiled/<component>/), named after the reference model (model.json ``name``):

* ``qbcompiler``: ``<name>_<component>.mblt`` and ``.mxq`` (the tutorial's step 3, every option in
  params ``compile.qbcompiler``; see whisper_npu/compilers/mobilint/ for the per-version calls);
* ``onnxruntime``: ``<name>_<component>.onnx``, INT8 (``compile.onnxruntime``), in the NPU's I/O layout;
* decoder, both backends: ``embed_tokens.npy`` / ``embed_positions.npy``, the tables the runtime adds on
  the CPU (they are not inside the compiled decoder);
* ``provenance.json``: backend and tool versions, every compile option and what it resolved to, the
  calibration set's hash (when the compiler read it: not dynamic INT8), model id/revision/name, input/output specs.

And ``--metrics``: compiled vs fp32 (torch) on held-out inputs, per output: cosine (mean, min), max abs
error (decoder: also top-1 agreement of the logits). Held-out inputs are ``compile.numerics_samples``
entries of the component's calibration set spread evenly over it; they are left out of what the
quantizer calibrates on (whisper_npu/compilers/onnxruntime/). The qbcompiler backend cannot run an .mxq
without the NPU, so it calibrates on every entry (no hold-out: nothing could use it) and its metric says
so (``checked: false``). With qbcompiler 1.3+ the configuration the compiler resolved
(``config_save_path``) is kept as ``<name>_<component>.config.yaml`` and copied into provenance.

A compiler exception, or a missing or empty output, exits non-zero with the compiler's message and leaves
neither the output folder nor the metric behind.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import numpy as np

from whisper_npu.artifacts import EMBED_POSITIONS, EMBED_TOKENS, PROVENANCE
from whisper_npu.calibration import sets as calib_sets
from whisper_npu.compilers import registry as compilers
from whisper_npu.core.errors import StageError
from whisper_npu.core.files import atomic_output, read_json, sha256_tree, write_json
from whisper_npu.core.stage import run_stage
from whisper_npu.model import store as model_store
from whisper_npu.params.base import read
from whisper_npu.params.compile import CompileParams
from whisper_npu.specs import component_spec, embedding_tables

log = logging.getLogger(__name__)

COMPONENTS = ("encoder", "decoder")


# ------------------------------------------------------------------------------------------- core

def compile_component(component: str, backend: str, cp: CompileParams, model: Any, model_dir: Path, info: dict,
                      tools: dict, cs: calib_sets.CalibSet, out_dir: Path) -> dict[str, Any]:
    """Compile one component with ``backend`` into ``out_dir`` (which must exist): the backend's artifacts,
    the decoder's host-side embedding tables and provenance.json. Returns the numerics metric."""
    spec = component_spec(component, model.config)
    stem = f"{info['name']}_{component}"
    log.info("compile %s with %s: %d calibration entries", stem, backend, len(cs))
    built = compilers.get(backend).build(model, model_dir, component, spec, cs, cp, out_dir, stem)
    artifacts = dict(built.artifacts)
    if component == "decoder":
        tokens, positions = embedding_tables(model)
        np.save(out_dir / EMBED_TOKENS, tokens)
        np.save(out_dir / EMBED_POSITIONS, positions)
        artifacts.update(embed_tokens=EMBED_TOKENS, embed_positions=EMBED_POSITIONS)
    resolved = dict(built.resolved)
    quantization = resolved.pop("quantization", {})
    provenance = {
        "component": component, "backend": backend, "artifacts": artifacts,
        "model": {k: info.get(k) for k in ("name", "source", "id", "revision")},
        "toolchain": tools, "options": cp.model_dump(), "resolved": resolved,
        "quantization": quantization,
        "calibration": calibration_record(cs, resolved, built.held_out),
        "specs": spec.to_dict(),
    }
    write_json(out_dir / PROVENANCE, provenance)
    return {"component": component, "backend": backend, "held_out_samples": len(built.held_out),
            "held_out": built.held_out, **built.numerics}


def calibration_record(cs: calib_sets.CalibSet, resolved: dict[str, Any], held_out: list[int]) -> dict[str, Any]:
    """The calibration set in provenance.json: its hash when the compiler read it, else only that it did not.
    Dynamic INT8 without smoothing computes activation ranges at run time: its artifacts do not depend on the
    set, so recording the set's hash would change the output folder (and rerun every compiled transcription)
    on a calibration change that leaves the model byte-identical."""
    if not resolved.get("calibrated_on"):
        return {"used": False}
    return {"used": True, "file": cs.source.name, "sha256_tree": sha256_tree(cs.source.parent), "entries": len(cs),
            "held_out": held_out}


# ------------------------------------------------------------------------------------------- stage

def run(component: str, params_path: Path, toolchain: Path, model_dir: Path, calibration: Path,
        out: Path, metrics_path: Path) -> None:
    """The stage's I/O: read params, toolchain, model and calibration set; write ``out`` and the metric
    atomically (a failure leaves neither)."""
    cp = CompileParams.of(read(params_path))
    if cp.backend != "auto":
        compilers.get(cp.backend).preflight(cp)   # a missing compiler fails before anything is read
    tools = read_json(toolchain)   # the toolchain stage checked the compiler and resolved compile.backend: auto
    backend = cp.backend if cp.backend != "auto" else tools.get("backend")
    if backend not in compilers.COMPILERS:
        raise StageError(f"{toolchain}: no compile backend recorded for compile.backend = auto (run "
                         "`dvc repro toolchain`)")
    compilers.get(backend).preflight(cp)   # cached: a compiler gone since the toolchain stage fails here
    info = model_store.model_info(model_dir)
    model, _ = model_store.load_hf(model_dir)
    cs = calib_sets.read_calib_set(component, calibration)
    with atomic_output(out) as tmp_out, atomic_output(metrics_path) as tmp_metrics:
        tmp_out.mkdir()
        metrics = compile_component(component, backend, cp, model, model_dir, info, tools, cs, tmp_out)
        write_json(tmp_metrics, metrics)
    log.info("compiled %s -> %s", component, out)


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
