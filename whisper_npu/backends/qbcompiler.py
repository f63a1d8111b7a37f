"""Mobilint qbcompiler backend: ``mblt_compile`` (.mblt) then ``mxq_compile`` (.mxq), one adapter for
every known API version.

The compiler is not on PyPI and its source and API reference are not public; the calls below are rebuilt
from the tutorial's call sites per version (shared/notes/mobilint-qbcompiler.md §2.4-2.6, §3, §5):

=========  =====================================================================================
API        what changes (``qubee`` is the package's name before 2026-01; both names are tried)
=========  =====================================================================================
0.11       ``get_llm_config(use_full_seq_len_calib=...)``; decoder mxq_compile without a scheme;
           decoder compile needs the parser.py line-538 patch (checked: refused when unpatched)
0.12       ``get_llm_config(llm_config_apply=True, use_full_seq_length=...)``; device ``cuda``;
           schemes encoder ``global4`` / decoder ``single``; encoder ``mblt_compile(backend="hf")``
1.0        as 0.12, but the encoder's ``mblt_compile(backend="torch")``
1.1-1.x    ``qbcompiler.configs.LlmConfig(apply=True, attributes=LlmConfig.Attributes(calibration=
           LlmConfig.Attributes.Calibration(use_full_seq_length=...)))``; device ``gpu``/``cpu``;
           scheme ``all``; encoder ``mblt_compile(backend="hf", feed_dict={"input_features": [1,80,3000]})``
other      refused with a clear error
=========  =====================================================================================

What was and was NOT verified against the real compiler
--------------------------------------------------------
NOT verified: nothing here has run against a real qbcompiler/qubee (the wheel needs a Mobilint login and
cannot be installed on this project's machines). Unknown and therefore unchecked: the real signatures and
defaults of ``mblt_compile``/``mxq_compile``/``get_llm_config``/``LlmConfig``, whether 1.x still accepts
``global4``/``single`` (the adapter passes them when asked), whether the 1.1 decoder's ``mblt_compile``
still takes ``backend="hf", target="decoder"`` (assumed: the notes show only its mxq call), whether a
given compiler accepts ``transformers`` 5.x models (Mobilint documents 4.50.0 for the Whisper parser),
and where 0.11's parser.py lives beyond the tutorial's ``<qubee>/model_dict/parser/parser.py``.

Verified here, against a stand-in (tests/standin_qbcompiler/, a fake module that records calls and checks
them against the tutorial's call sites for 0.12 and 1.x): the exact keyword names and values the adapter
passes per version, the absolute calibration paths it hands over (they exist and list the right files),
and that a raising compiler or a missing/empty output file fails the stage with the compiler's message and
no output left behind. A test marked ``qbcompiler`` runs the real compiler when it imports (skipped here).
"""
from __future__ import annotations

import importlib
import importlib.metadata as md
import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from whisper_npu.io import StageError
from whisper_npu.params import QbcompilerParams

log = logging.getLogger(__name__)

MODULE_NAMES = ("qbcompiler", "qubee")   # the package was renamed qubee -> qbcompiler in 2026-01
INSTALL_HINT = ("qbcompiler is not installed (it is not on PyPI): download the wheel for your platform from "
                "Mobilint's download center (https://dl.mobilint.com, login; ARIES -> qb Compiler) and run "
                "`pip install qbcompiler-<version>-<platform>.whl` in this environment, or run the pipeline in "
                "the mobilint/qbcompiler Docker image (e.g. mobilint/qbcompiler:1.0-cpu-ubuntu22.04); "
                "or set compile.backend to onnxruntime (or auto)")
KNOWN_APIS = ("0.11", "0.12", "1.0", "1.x")
PARSER_PATCH_LINE = 538   # qubee 0.11.0.1 model_dict/parser/parser.py (tutorial v0.11.0.1)


@dataclass(frozen=True)
class Installed:
    module: str     # import name: qbcompiler or qubee
    version: str
    api: str        # one of KNOWN_APIS


def is_importable() -> bool:
    return any(importlib.util.find_spec(m) is not None for m in MODULE_NAMES)


def _version(module: Any, name: str) -> str:
    v = getattr(module, "__version__", None)
    if v:
        return str(v)
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return "unknown"


def api_of(version: str) -> str:
    """Map a compiler version onto the API family the adapter knows; StageError for anything else."""
    parts = version.split(".")
    try:
        major, minor = int(parts[0]), int(parts[1])
    except (IndexError, ValueError):
        major = minor = -1
    if (major, minor) in ((0, 11), (0, 12), (1, 0)):
        return f"{major}.{minor}"
    if major == 1 and minor >= 1:
        return "1.x"
    raise StageError(f"qbcompiler {version}: unknown API version (this pipeline knows 0.11, 0.12, 1.0 and 1.1+); "
                     "install one of those, or extend whisper_npu/backends/qbcompiler.py (see its docstring)")


def find_installed() -> Installed | None:
    """The installed compiler (qbcompiler first, then the pre-rename qubee), or None."""
    for name in MODULE_NAMES:
        if importlib.util.find_spec(name) is None:
            continue
        module = importlib.import_module(name)
        version = _version(module, name)
        return Installed(name, version, api_of(version))
    return None


def require() -> Installed:
    found = find_installed()
    if found is None:
        raise StageError(f"compile.backend = qbcompiler: {INSTALL_HINT}")
    return found


# ------------------------------------------------------------------------------------------- the plan

def _device(api: str, wanted: str, gpu: bool) -> str:
    """The device name this API uses: cuda up to 1.0, gpu from 1.1 (explicit cuda/gpu mapped across)."""
    accel = "gpu" if api == "1.x" else "cuda"
    if wanted == "auto":
        return accel if gpu else "cpu"
    return "cpu" if wanted == "cpu" else accel


def _scheme(api: str, component: str, wanted: str) -> str | None:
    if wanted == "auto":
        if api == "1.x":
            return "all"
        if api == "0.11" and component == "decoder":
            return None   # the 0.11 tutorial passed no inference_scheme to the decoder's mxq_compile
        return "global4" if component == "encoder" else "single"
    if wanted == "all" and api != "1.x":
        raise StageError(f"compile.qbcompiler.{component}_scheme = all: needs qbcompiler >= 1.1 "
                         f"(installed API {api}); use auto, single, multi, global4 or global8")
    return wanted


def plan_calls(api: str, component: str, qb: QbcompilerParams, *, gpu: bool,
               input_features_shape: tuple[int, ...]) -> dict:
    """The keyword arguments of the two compiler calls as plain data (without model and paths).

    ``llm_config`` (decoder only) is described as data: ``{"factory": "get_llm_config", "kwargs": ...}`` or
    ``{"factory": "LlmConfig", "use_full_seq_length": ...}``; ``feed_dict`` maps input names to shapes.
    """
    if api not in KNOWN_APIS:
        raise StageError(f"qbcompiler API {api!r}: unknown")
    mblt: dict[str, Any] = {"target": component, "device": qb.mblt_device if qb.mblt_device == "cpu"
                            else _device(api, qb.mblt_device, True)}
    if component == "encoder":
        backend = qb.encoder_mblt_backend
        mblt["backend"] = ("torch" if api == "1.0" else "hf") if backend == "auto" else backend
        if api == "1.x":
            mblt["feed_dict"] = {"input_features": list(input_features_shape)}
    else:
        mblt["backend"] = "hf"
    mxq: dict[str, Any] = {"device": _device(api, qb.device, gpu)}
    scheme = _scheme(api, component, qb.encoder_scheme if component == "encoder" else qb.decoder_scheme)
    if scheme is not None:
        mxq["inference_scheme"] = scheme
    llm = None
    if component == "decoder":
        full = qb.llm_full_seq_calibration
        if api == "0.11":
            llm = {"factory": "get_llm_config", "kwargs": {"use_full_seq_len_calib": full}}
        elif api in ("0.12", "1.0"):
            llm = {"factory": "get_llm_config", "kwargs": {"llm_config_apply": True, "use_full_seq_length": full}}
        else:
            llm = {"factory": "LlmConfig", "use_full_seq_length": full}
    return {"api": api, "mblt_compile": mblt, "mxq_compile": mxq, "llm_config": llm}


# ------------------------------------------------------------------------------------------- running

def parser_patch_state(module: str) -> str:
    """0.11 only: ``patched``, ``unpatched`` or ``unknown`` for parser.py line 538 (tutorial v0.11.0.1)."""
    spec = importlib.util.find_spec(f"{module}.model_dict.parser.parser")
    if spec is None or not spec.origin or not Path(spec.origin).is_file():
        return "unknown"
    lines = Path(spec.origin).read_text(encoding="utf-8", errors="replace").splitlines()
    if len(lines) < PARSER_PATCH_LINE:
        return "unknown"
    line = lines[PARSER_PATCH_LINE - 1].strip()
    if line == 'if self.backend == "hf":':
        return "unpatched"
    return "patched" if line == "if False:" else "unknown"


def check_0_11_decoder(inst: Installed) -> None:
    """Refuse an unpatched qubee 0.11 decoder compile with the tutorial's instructions."""
    state = parser_patch_state(inst.module)
    if state == "unpatched":
        raise StageError(
            f"{inst.module} {inst.version}: decoder compilation needs the tutorial's parser.py fix: in "
            f"<{inst.module}>/model_dict/parser/parser.py line {PARSER_PATCH_LINE} change "
            '`if self.backend == "hf":` to `if False:` (mblt-sdk-tutorial v0.11.0.1), or install 0.12+')
    if state == "unknown":
        log.warning("%s %s: could not confirm the parser.py line-%d patch the 0.11 decoder needs; "
                    "compiling anyway", inst.module, inst.version, PARSER_PATCH_LINE)


def _llm_config(inst: Installed, desc: dict) -> Any:
    if desc["factory"] == "get_llm_config":
        return getattr(importlib.import_module(inst.module), "get_llm_config")(**desc["kwargs"])
    configs = importlib.import_module(f"{inst.module}.configs")
    cfg = configs.LlmConfig
    return cfg(apply=True, attributes=cfg.Attributes(
        calibration=cfg.Attributes.Calibration(use_full_seq_length=desc["use_full_seq_length"])))


def _feed_dict(shapes: dict) -> dict:
    """Example tensors for tracing (1.1 tutorial: torch.randn); seeded so reruns trace the same input."""
    import torch
    g = torch.Generator().manual_seed(0)
    return {name: torch.randn(*shape, generator=g) for name, shape in shapes.items()}


def _call(name: str, fn: Any, **kwargs: Any) -> None:
    log.info("qbcompiler %s(%s)", name, ", ".join(sorted(kwargs)))
    try:
        fn(**kwargs)
    except Exception as e:  # the compiler's own exception types are unknown: report any with its message
        log.debug("qbcompiler %s failed", name, exc_info=True)
        raise StageError(f"qbcompiler {name} failed: {type(e).__name__}: {e}") from None


def _check_output(path: Path, name: str) -> None:
    if not path.is_file():
        raise StageError(f"qbcompiler {name} reported success but wrote no {path.name}")
    if path.stat().st_size == 0:
        raise StageError(f"qbcompiler {name} wrote an empty {path.name}")


def compile_component(inst: Installed, plan: dict, model: Any, calib_file: Path, out_dir: Path,
                      stem: str) -> dict[str, str]:
    """Run both compiler calls; ``calib_file`` must hold absolute paths. Returns artifact names by kind."""
    if not calib_file.is_absolute():
        raise ValueError(f"{calib_file}: the compiler needs an absolute calibration path")
    if inst.api == "0.11" and plan["mblt_compile"]["target"] == "decoder":
        check_0_11_decoder(inst)
    module = importlib.import_module(inst.module)
    mblt_path, mxq_path = (out_dir / f"{stem}.mblt").resolve(), (out_dir / f"{stem}.mxq").resolve()
    mblt_kwargs = dict(plan["mblt_compile"])
    if "feed_dict" in mblt_kwargs:
        mblt_kwargs["feed_dict"] = _feed_dict(mblt_kwargs["feed_dict"])
    _call("mblt_compile", module.mblt_compile, model=model, mblt_save_path=str(mblt_path), **mblt_kwargs)
    _check_output(mblt_path, "mblt_compile")
    mxq_kwargs = dict(plan["mxq_compile"])
    if plan["llm_config"] is not None:
        try:
            mxq_kwargs["llm_config"] = _llm_config(inst, plan["llm_config"])
        except Exception as e:  # as above: unknown exception types from the compiler package
            raise StageError(f"qbcompiler LLM config ({plan['llm_config']['factory']}) failed: "
                             f"{type(e).__name__}: {e}") from None
    _call("mxq_compile", module.mxq_compile, model=str(mblt_path), calib_data_path=str(calib_file),
          save_path=str(mxq_path), **mxq_kwargs)
    _check_output(mxq_path, "mxq_compile")
    return {"mblt": mblt_path.name, "model": mxq_path.name}
