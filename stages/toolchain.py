"""Stage toolchain (always runs, first): check the whole of params.yaml and the tools the run will need, in seconds,
before any audio or model work; then record the versions that shape the compiled models and the ones that run them.

* ``--out`` (``build/toolchain.json``, a dependency of the compile stages): the compile backend (``auto`` resolved,
  and the reason logged) and the versions that shape its artifacts: for ``onnxruntime`` this interpreter's torch,
  transformers, onnx and onnxruntime; for ``qbcompiler`` the compiler found in ``compile.qbcompiler.python`` (its own
  virtual environment or Docker image) with that interpreter's torch and transformers. On a host that does not
  compile (an NPU host: no compiler in ``compile.qbcompiler.python``, or that interpreter cannot start there, and
  ``--compiled`` holds both components compiled with qbcompiler, e.g. pulled), the recorded versions are kept, so
  nothing recompiles and nothing is removed.
* ``--runtime`` (``build/runtime.json``, a dependency of the compiled transcription): onnxruntime and Mobilint's
  runtime versions and the NPU devices this host has: moving to the NPU host reruns the compiled transcription.

Preflight: with ``compile.backend: qbcompiler`` the compiler must answer in its interpreter, be a version the adapter
knows, and (where the docs name it) have the transformers version its Whisper parser was released with; a
``compile.qbcompiler.device`` of cuda/gpu needs CUDA there; the compile options must be ones that version takes
(the adapter plans both components' calls now, so a key it would refuse at compile time is refused here); a
top-level ``device`` of cuda needs CUDA here. Each failure is one line naming the key and the fix.
"""
from __future__ import annotations

import argparse
import importlib.metadata as md
import logging
import platform
from pathlib import Path
from typing import Any

from whisper_npu.artifacts import PROVENANCE
from whisper_npu.compilers.mobilint import build as mobilint
from whisper_npu.compilers.mobilint.plan import KEY, PARSER_TRANSFORMERS, call_style, plan_calls, version_tuple
from whisper_npu.core.errors import StageError
from whisper_npu.core.files import atomic_output, read_json, write_json
from whisper_npu.core.stage import run_stage
from whisper_npu.device import resolve
from whisper_npu.params.full import Params, load_params

log = logging.getLogger(__name__)

ORT_TOOLS = ("torch", "transformers", "onnx", "onnxruntime")
RUNTIME_TOOLS = ("onnxruntime", "mobilint-qb-runtime", "maccel")


def _version(name: str) -> str | None:
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


def onnxruntime_record() -> dict[str, Any]:
    return {"backend": "onnxruntime", "python": platform.python_version(), **{t: _version(t) for t in ORT_TOOLS}}


def qbcompiler_record(p: Params) -> dict[str, Any] | None:
    """The compiler in ``compile.qbcompiler.python`` with its interpreter's versions, checked; None when there is
    none (StageError when it answers wrongly)."""
    qb = p.compile.qbcompiler
    found = mobilint.probe(qb)
    compiler = found.get("compiler")
    if compiler is None:
        return None
    inst = call_style(compiler)   # refuses a version the adapter does not know
    minor = tuple(version_tuple(inst.version)[:2])
    wanted, have = PARSER_TRANSFORMERS.get(minor), found.get("transformers")
    if wanted and have != wanted:
        raise StageError(f"{KEY}.python = {qb.python!r}: qbcompiler {inst.version}'s Whisper parser was released with "
                         f"transformers {wanted} (its Docker image / tutorial), that interpreter has {have}; install "
                         f"transformers=={wanted} there (the pipeline's own environment keeps its version)")
    if not wanted:
        log.warning("qbcompiler %s: no documented transformers version for its parser; %s has transformers %s",
                    inst.version, " ".join(mobilint.interpreter(qb)), have)
    if qb.device in ("cuda", "gpu") and not found.get("cuda"):
        raise StageError(f"{KEY}.device = {qb.device}: {' '.join(mobilint.interpreter(qb))} sees no CUDA device "
                         f"(torch {found.get('torch')}); use auto or cpu, "
                         "or a CUDA image ('docker run --gpus all ...')")
    for component in ("encoder", "decoder"):   # refusals (options this version does not take) name their key
        for warning in plan_calls(inst.api, component, qb, gpu=bool(found.get("cuda")), version=inst.version,
                                  inst=inst, input_features_shape=(1, 80, 3000)).get("warnings", []):
            log.warning("%s", warning)
    return {"backend": "qbcompiler", "compiler": {"module": inst.module, "version": inst.version, "api": inst.api},
            "interpreter": {"command": qb.python or "this", **{k: found.get(k) for k in ("python", "torch",
                                                                                          "transformers", "cuda")}}}


def compiled_here(compiled: Path) -> str | None:
    """The backend the pulled (or earlier) compile outputs were built with, when both components are there."""
    try:
        backends = {read_json(compiled / c / PROVENANCE).get("backend") for c in ("encoder", "decoder")}
    except StageError:
        return None
    return backends.pop() if len(backends) == 1 else None


def compile_record(p: Params, previous: dict | None, compiled: Path) -> dict[str, Any]:
    """What build/toolchain.json records (see the module docstring)."""
    backend = p.compile.backend
    if backend == "onnxruntime":
        return onnxruntime_record()
    try:
        record, problem = qbcompiler_record(p), None
    except StageError as e:   # a compiler that answers wrongly fails; one that is not there or cannot start is absent
        if not any(w in str(e) for w in ("cannot run", "cannot start", "no answer")):
            raise
        record, problem = None, str(e)
    if record is not None:
        log.info("compile backend %s: qbcompiler %s (call style %s) in %s", backend, record["compiler"]["version"],
                 record["compiler"]["api"], record["interpreter"]["command"])
        return record
    if previous and previous.get("backend") == "qbcompiler" and compiled_here(compiled) == "qbcompiler":
        log.info("no qbcompiler here (%s), and %s holds .mxq files compiled with qbcompiler %s: this host does not "
                 "compile (an NPU host); the recorded toolchain is kept, nothing recompiles",
                 problem or f"none in {KEY}.python", compiled, previous["compiler"]["version"])
        return previous
    if backend == "qbcompiler":
        where = p.compile.qbcompiler.python or "this interpreter"
        raise StageError(problem or f"compile.backend = qbcompiler: {KEY}.python = {p.compile.qbcompiler.python!r} "
                         f"({where}) has no qbcompiler and {compiled} holds no .mxq files to transcribe. "
                         f"{mobilint.INSTALL_HINT}")
    log.info("compile backend auto: onnxruntime (%s)", problem or f"no qbcompiler in {KEY}.python = "
             f"{p.compile.qbcompiler.python or 'this interpreter'!r}")
    return onnxruntime_record()


def runtime_record() -> dict[str, Any]:
    """The runtimes' versions and the NPU devices Mobilint's runtime sees here (None without the runtime)."""
    devices = None
    try:
        import qbruntime

        devices = [int(d) for d in qbruntime.get_available_device_numbers()]
    except (ImportError, RuntimeError, AttributeError):
        pass
    return {**{t: _version(t) for t in RUNTIME_TOOLS}, "npu_devices": devices}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--out", type=Path, required=True, help="build/toolchain.json (what shapes the compile)")
    parser.add_argument("--runtime", type=Path, help="build/runtime.json (what runs the compiled model)")
    parser.add_argument("--compiled", type=Path, default=Path("compiled"), help="the compile outputs' parent folder")
    args = parser.parse_args(argv)
    p = load_params(args.params)
    resolve(p.device)   # a `device: cuda` without CUDA fails here, not hours later
    previous = read_json(args.out) if args.out.is_file() else None
    record = compile_record(p, previous, args.compiled)
    if record != previous:
        with atomic_output(args.out) as tmp:
            write_json(tmp, record)
    if args.runtime is not None:
        with atomic_output(args.runtime) as tmp:
            write_json(tmp, runtime_record())


if __name__ == "__main__":
    run_stage(main)
