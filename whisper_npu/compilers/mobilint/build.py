"""The ``qbcompiler`` compiler: Mobilint's ``mblt_compile`` (.mblt) then ``mxq_compile`` (.mxq), one adapter for every
known call style. The compiler runs in its own interpreter (``compile.qbcompiler.python``: the SDK's virtual
environment or Docker image; empty = this one), so its pinned transformers never meets the pipeline's: this module
asks that interpreter what it has (sdk_side.py ``probe``), plans the calls as data (plan.py) and has it run them
(sdk_side.py ``compile``). whisper_npu/runtimes/mobilint/ runs the .mxq files.

The compiler is not on PyPI and cannot be installed here. The calls are rebuilt from Mobilint's compiler
documentation (v1.3) and the tutorial's call sites per version (docs/mobilint.md lists them with their sources).
The call style is chosen by what the installed compiler offers, not by version cut-offs: does ``mxq_compile`` take
``target_device``, does ``mblt_compile`` take ``model_part``, does ``qbcompiler.configs.LlmConfig`` import. Versions
only pick the ``get_llm_config`` keyword names (0.11 vs 0.12/1.0.0) and a few documented firsts (below).

=======  ==========================================================================================
style    what it sends (``qubee`` is the package's name before 2026-01; both names are tried)
=======  ==========================================================================================
0.11     ``get_llm_config(use_full_seq_len_calib=...)``; decoder mxq_compile without a scheme; the
         decoder compile needs the parser.py line-538 patch (checked: refused when unpatched)
0.12     ``get_llm_config(llm_config_apply=True, use_full_seq_length=...)``; device ``cuda``; schemes
         encoder ``global4`` / decoder ``single``; ``mblt_compile(backend="hf", target=...)`` (the seed)
1.0      as 0.12 (qbcompiler 1.0.0: no ``qbcompiler.configs``), the encoder's ``backend="torch"``
1.x      ``qbcompiler.configs`` imports (1.0.1+; tutorial ``3fee81f``): ``LlmConfig(...)`` objects, device
         ``gpu``/``cpu``, config objects (``calibration_config`` ...), encoder ``feed_dict``; scheme
         ``all`` from 1.0.2 (docs CHANGELOG)
1.1      1.1.x takes ``target_device`` with the per-NPU names ``aries2`` / ``regulus2`` (tutorial
         ``d923fa3c``; 1.2 refuses them): as 1.x plus ``target_device`` on both calls
1.2      ``target_device`` ``aries-rb`` / ``regulus-rb`` (one compiler for every NPU), mblt still ``backend="hf"``
         (tutorial ``f3f9d540``)
1.3      ``mblt_compile`` takes ``model_part`` (docs 1.3: ``hf`` removed, ``target_device`` required):
         ``backend="torch", model_part=<component>``; ``config_save_path`` records the configuration the compiler
         resolved (beside the artifact and in provenance); where ``qbcompiler.model_dict.parser.patcher.parts``
         exists (1.4, tutorial ``1a5d15de``) the model is loaded with its ``load_for_part``
other    refused, naming the version found and the styles supported
=======  ==========================================================================================

What was and was NOT verified against the real compiler
--------------------------------------------------------
NOT verified: nothing here has run against a real qbcompiler/qubee. The 1.3 signatures, argument names and
config classes come from Mobilint's v1.3 docs; 0.11-1.2 and 1.4 from tutorial call sites only. Unknown: the parts
``available_parts`` reports for Whisper, how 1.3 matches our calibration JSON's input names to the ``model_part``
graph (docs: by shape, then name).

Verified here, against a stand-in (tests/standin_qbcompiler/, a fake module built from the documented
signatures that records calls), in this interpreter and in a second virtual environment with transformers 4.50.0:
the exact keyword names and values per style and target, the absolute calibration paths, refusals naming the params
keys, and that a raising compiler or a missing/empty output fails the stage with the compiler's message and no
output left behind.
"""
from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from whisper_npu.artifacts import Built
from whisper_npu.calibration import sets as calib_sets
from whisper_npu.compilers.mobilint.plan import CONFIG_SECTIONS, INSTALL_HINT, KEY, Installed, call_style, plan_calls
from whisper_npu.core.errors import StageError

if TYPE_CHECKING:
    from whisper_npu.calibration.sets import CalibSet
    from whisper_npu.params.compile import CompileParams, QbcompilerParams

log = logging.getLogger(__name__)

SDK_SIDE = Path(__file__).with_name("sdk_side.py")
PROBE_TIMEOUT = 300   # seconds: a Docker image may have to start


def interpreter(qb: QbcompilerParams) -> list[str]:
    """The command line that starts the SDK's Python (``compile.qbcompiler.python``; empty: this interpreter)."""
    return shlex.split(qb.python) if qb.python.strip() else [sys.executable]


def _env(qb: QbcompilerParams) -> dict[str, str]:
    env = dict(os.environ)
    if qb.parser_workers:   # docs 1.3: the parser forks up to this many workers; host memory grows with it
        env["MBLT_HL_PARSER_NUM_WORK"] = str(qb.parser_workers)
    return env


def run_sdk(qb: QbcompilerParams, args: list[str], quiet: bool = False, timeout: float | None = None) -> dict:
    """sdk_side.py ``args`` in the SDK's interpreter: its one JSON line, or StageError naming the key and why. With
    an empty ``compile.qbcompiler.python`` the same functions run in this process."""
    if not qb.python.strip():
        from whisper_npu.compilers.mobilint import sdk_side

        old = os.environ.get("MBLT_HL_PARSER_NUM_WORK")
        os.environ.update({k: v for k, v in _env(qb).items() if k == "MBLT_HL_PARSER_NUM_WORK"})
        try:
            if args[0] == "probe":
                return sdk_side.probe()
            return sdk_side.compile_job(json.loads(Path(args[1]).read_text(encoding="utf-8")))
        except sdk_side.SdkError as e:
            raise StageError(str(e)) from None
        finally:
            if old is None:
                os.environ.pop("MBLT_HL_PARSER_NUM_WORK", None)
            else:
                os.environ["MBLT_HL_PARSER_NUM_WORK"] = old
    cmd = [*interpreter(qb), str(SDK_SIDE), *args]
    where = f"{KEY}.python = {qb.python!r}" if qb.python.strip() else f"this interpreter ({sys.executable})"
    try:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE if quiet else None, text=True,
                              env=_env(qb), timeout=timeout, check=False)
    except FileNotFoundError as e:
        raise StageError(f"{where}: cannot start ({e.strerror}: {e.filename}); set it to the SDK's Python, e.g. "
                         "/opt/qbcompiler-venv/bin/python or 'docker run --rm -v $PWD:$PWD -w $PWD IMAGE python'") \
            from None
    except subprocess.TimeoutExpired:
        raise StageError(f"{where}: no answer within {timeout:.0f} s") from None
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    try:
        answer = json.loads(lines[-1]) if lines else None
    except json.JSONDecodeError:
        answer = None
    if isinstance(answer, dict) and "error" in answer:
        raise StageError(answer["error"])
    if proc.returncode == 0 and isinstance(answer, dict):
        return answer
    said = [ln for ln in (proc.stderr or "").splitlines() if ln.strip()]
    errors = [ln.removeprefix("error: ") for ln in said if ln.startswith("error:")]
    reason = errors[-1] if errors else (said[-1] if said else f"exit code {proc.returncode}, no output")
    if args[0] == "probe":
        raise StageError(f"{where}: cannot run the SDK side ({reason})")
    raise StageError(reason)


def probe(qb: QbcompilerParams) -> dict:
    """What the SDK interpreter has: python, torch, transformers, CUDA, and the compiler's surface (or None)."""
    key = (qb.python, qb.parser_workers)
    if key not in _PROBES:
        _PROBES[key] = run_sdk(qb, ["probe"], quiet=True, timeout=PROBE_TIMEOUT)
    return _PROBES[key]


_PROBES: dict[tuple, dict] = {}


def installed(qb: QbcompilerParams) -> Installed:
    """The compiler in the SDK interpreter and its call style, or StageError saying how to get one."""
    found = probe(qb)
    if found.get("compiler") is None:
        where = f"{KEY}.python = {qb.python!r}" if qb.python.strip() else f"{KEY}.python = '' (this interpreter)"
        raise StageError(f"compile.backend = qbcompiler: {where} has no qbcompiler. {INSTALL_HINT}")
    return call_style(found["compiler"])


def preflight(cp: CompileParams) -> None:
    """Before the model is loaded: the compiler answers in its interpreter (StageError saying how to get one)."""
    installed(cp.qbcompiler)


def available(cp: CompileParams) -> bool:
    """Whether the SDK interpreter (``compile.qbcompiler.python``) starts and has a compiler."""
    try:
        return probe(cp.qbcompiler).get("compiler") is not None
    except StageError:
        return False


# ------------------------------------------------------------------------------------------- the interface

def build(model: Any, model_dir: Path, component: str, spec: Any, cs: CalibSet, cp: CompileParams, out_dir: Path,
          stem: str) -> Built:
    """.mblt and .mxq of one component into ``out_dir``, compiled in the SDK's interpreter. Nothing can be checked
    on a compile host (an .mxq runs only on the NPU), so it calibrates on every entry and holds none out."""
    qb = cp.qbcompiler
    inst = installed(qb)
    found = probe(qb)
    calib_idx = list(range(len(cs)))
    plan = plan_calls(inst.api, component, qb, gpu=bool(found.get("cuda")),
                      input_features_shape=(1, int(model.config.num_mel_bins),
                                            spec.inputs[0].shape[1] if component == "encoder" else 0),
                      version=inst.version, inst=inst)
    for warning in plan["warnings"]:
        log.warning("%s", warning)
    log.info("qbcompiler %s %s (call style %s) in %s: %s", inst.module, inst.version, inst.api,
             " ".join(interpreter(qb)), json.dumps({k: plan[k] for k in ("mblt_compile", "mxq_compile")}))
    # Everything the SDK side reads or writes sits under the repository (a Docker image mounts it at the same path):
    # the job, the calibration list with absolute paths, a private working directory for the compiler.
    with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=f".{out_dir.name}.sdk.tmp-") as tmp:
        tmp = Path(tmp).resolve()
        calib_file = calib_sets.write_absolute(cs, calib_idx, tmp / "calibration")
        workdir = tmp / "workdir"
        workdir.mkdir()
        job = {"module": inst.module, "version": inst.version, "component": component, "plan": plan,
               "hf_dir": str((Path(model_dir) / "hf").resolve()), "calib_file": str(calib_file),
               "out_dir": str(Path(out_dir).resolve()), "stem": stem, "workdir": str(workdir),
               "config_classes": CONFIG_SECTIONS, "configs_key": f"{KEY}.{component}_configs",
               "config_save_path": plan["save_config"]}
        (tmp / "job.json").write_text(json.dumps(job), encoding="utf-8")
        result = run_sdk(qb, ["compile", str(tmp / "job.json")])
        if result["workdir_files"]:
            # e.g. spinWeight/ (the equivalent transformation's rotations): kept beside the artifact, not left in
            # whatever folder the compile ran from
            shutil.copytree(workdir, Path(out_dir) / f"{stem}.workdir")
            log.info("qbcompiler wrote %d file(s) into its working directory; kept in %s.workdir/",
                     len(result["workdir_files"]), stem)
    artifacts = dict(result["artifacts"])
    resolved: dict[str, Any] = {
        "compiler": {"module": inst.module, "version": inst.version, "api": inst.api},
        "interpreter": {k: found.get(k) for k in ("python", "torch", "transformers", "cuda")},
        "calls": plan, "calibrated_on": calib_idx, "workdir_files": result["workdir_files"]}
    if qb.parser_workers:
        resolved["parser_workers"] = qb.parser_workers
    if "compile_config" in artifacts:   # what the compiler says it resolved (config_save_path, 1.3+)
        import yaml

        saved = out_dir / artifacts["compile_config"]
        try:
            resolved["compiler_config"] = yaml.safe_load(saved.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as e:
            raise StageError(f"{saved.name}: the compiler's saved configuration is unreadable ({e})") from None
    numerics = {"checked": False,
                "reason": "an .mxq runs only on a Mobilint NPU (qbruntime); compare on the device with the "
                          "compiled transcription (transcribe_compiled)"}
    return Built(artifacts, resolved, numerics)


__all__ = ["INSTALL_HINT", "available", "build", "installed", "interpreter", "preflight", "probe", "run_sdk"]
