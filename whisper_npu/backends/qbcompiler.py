"""The ``qbcompiler`` backend: Mobilint's compiler, ``mblt_compile`` (.mblt) then ``mxq_compile`` (.mxq), one
adapter for every known call style; both ends of its artifacts: :func:`build` compiles a component,
:func:`load` runs the two .mxq files through Mobilint's runtime (mxq_runtime.py) with the inference scheme
and target device that :func:`mxq_call` reads back from the provenance.

The compiler is not on PyPI and cannot be installed here. The calls are rebuilt from Mobilint's compiler
documentation (v1.3, shared/notes/qbcompiler-docs.md) and the tutorial's call sites per version
(shared/notes/mobilint-qbcompiler.md §2-3, mobilint-current.md §1). The call style is chosen by what the
installed compiler offers, not by version cut-offs: does ``mxq_compile`` take ``target_device``, does
``mblt_compile`` take ``model_part``, does ``qbcompiler.configs.LlmConfig`` import. Versions only pick
the ``get_llm_config`` keyword names (0.11 vs 0.12/1.0.0) and a few documented firsts (below).

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
         ``all`` from 1.0.2 (docs CHANGELOG; the issue's notes say 1.0.1: the docs win)
1.2      ``mxq_compile`` takes ``target_device`` (one compiler for ARIES and REGULUS): as 1.x plus
         ``target_device`` on both calls, mblt still ``backend="hf"`` (tutorial ``d923fa3c``)
1.3      ``mblt_compile`` takes ``model_part`` (docs 1.3: ``hf`` removed, ``target_device`` required):
         the live model with ``backend="torch", model_part=<component>``; ``config_save_path`` records
         the configuration the compiler resolved (beside the artifact and in provenance)
other    refused, naming the version found and the styles supported
=======  ==========================================================================================

What was and was NOT verified against the real compiler
--------------------------------------------------------
NOT verified: nothing here has run against a real qbcompiler/qubee. The 1.3 signatures, argument names and
config classes come from Mobilint's v1.3 docs; 0.11-1.2 from tutorial call sites only (no docs for them).
Unknown: whether a given compiler accepts the ``transformers`` 5.x model (Mobilint documents 4.50.0 for
the Whisper parser), the parts ``available_parts`` reports for Whisper, how 1.3 matches our calibration
JSON's input names to the ``model_part`` graph (docs: by shape, then name).

Verified here, against a stand-in (tests/standin_qbcompiler/, a fake module built from the documented
signatures that records calls): the exact keyword names and values per style and target, the
absolute calibration paths, refusals naming the params keys, and that a raising compiler or a
missing/empty output fails the stage with the compiler's message and no output left behind.
"""
from __future__ import annotations

import importlib
import importlib.metadata as md
import importlib.util
import inspect
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from whisper_npu.backends import PROVENANCE, Built, CompiledNotRunnable, read_provenance
from whisper_npu.io import StageError
from whisper_npu.params import CompileParams, QbcompilerParams

if TYPE_CHECKING:
    from whisper_npu.backends.calib_sets import CalibSet

log = logging.getLogger(__name__)

MODULE_NAMES = ("qbcompiler", "qubee")   # the package was renamed qubee -> qbcompiler in 2026-01
INSTALL_HINT = ("qbcompiler is not installed (it is not on PyPI): download the wheel for your platform from "
                "Mobilint's download center (https://dl.mobilint.com, login; ARIES -> qb Compiler) and run "
                "`pip install qbcompiler-<version>-<platform>.whl` in this environment, or run the pipeline in "
                "the mobilint/qbcompiler Docker image (e.g. mobilint/qbcompiler:1.0-cpu-ubuntu22.04); "
                "or set compile.backend to onnxruntime (or auto)")
KNOWN_APIS = ("0.11", "0.12", "1.0", "1.x", "1.2", "1.3")
OBJECT_STYLES = ("1.x", "1.2", "1.3")      # qbcompiler.configs objects
TARGET_STYLES = ("1.2", "1.3")             # target_device argument
SUPPORTED = "qbcompiler/qubee 0.11, 0.12, 1.0 and 1.x (1.0.1+: config objects; 1.2+: target_device; 1.3: model_part)"
PARSER_PATCH_LINE = 538   # qubee 0.11.0.1 model_dict/parser/parser.py (tutorial v0.11.0.1)
REGULUS = ("regulus-rb", "regulus-rb-usb")
REGULUS_LLM_LENGTH = 1024   # newest public STT compile (f3f9d540): REGULUS max_sequence/cache length
# params section -> (qbcompiler.configs class, mxq_compile keyword); docs REF/MQ "*_config objects"
CONFIG_SECTIONS = {
    "calibration": "CalibrationConfig", "bit": "BitConfig", "equivalent_transformation": "EquivalentTransformationConfig",
    "hessian_quant": "HessianQuantConfig", "search_weight_scale": "SearchWeightScaleConfig",
    "resource_management": "ResourceManagementConfig", "layer_bias_correction": "LayerBiasCorrectionConfig",
    "bias_correction": "BiasCorrectionConfig",
}


@dataclass(frozen=True)
class Installed:
    module: str     # import name: qbcompiler or qubee
    version: str
    api: str        # call style, one of KNOWN_APIS


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


def version_tuple(version: str) -> tuple[int, ...]:
    out = []
    for part in version.split("+")[0].split("."):
        digits = "".join(c for c in part if c.isdigit()) if part[:1].isdigit() else ""
        if not digits:
            break
        out.append(int(digits))
    return tuple(out)


def _check_known(version: str) -> tuple[int, ...]:
    v = version_tuple(version)
    if len(v) < 2 or not (0, 11) <= v[:2] < (2, 0):
        raise StageError(f"qbcompiler {version}: unknown API version; this pipeline supports {SUPPORTED}. "
                         "Install one of those, or extend whisper_npu/backends/qbcompiler.py (see its docstring)")
    return v


def api_of(version: str) -> str:
    """The call style of a compiler known only by its version (no module to inspect)."""
    v = _check_known(version)
    if v[:2] in ((0, 11), (0, 12)):
        return f"{v[0]}.{v[1]}"
    if v[:3] == (1, 0, 0) or v[:2] == (1, 0) and len(v) == 2:
        return "1.0"
    if v[:2] >= (1, 3):
        return "1.3"
    return "1.2" if v[:2] >= (1, 2) else "1.x"


def _takes(fn: Any, name: str, default: bool) -> bool:
    """Whether ``fn`` has a parameter ``name``; ``default`` when its signature cannot tell (``**kwargs``)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return default
    if name in params:
        return True
    return default if any(p.kind is p.VAR_KEYWORD for p in params.values()) else False


def call_style(module: Any, name: str, version: str) -> str:
    """The call style the installed compiler offers (feature detection; see the module docstring)."""
    v = _check_known(version)
    for fn in ("mblt_compile", "mxq_compile"):
        if not callable(getattr(module, fn, None)):
            raise StageError(f"{name} {version}: has no {fn}(); this pipeline supports {SUPPORTED}")
    if _takes(module.mxq_compile, "target_device", v[:2] >= (1, 2)):
        return "1.3" if _takes(module.mblt_compile, "model_part", v[:2] >= (1, 3)) else "1.2"
    try:
        if hasattr(importlib.import_module(f"{name}.configs"), "LlmConfig"):
            return "1.x"
    except ImportError:
        pass
    if callable(getattr(module, "get_llm_config", None)):
        return {(0, 11): "0.11", (0, 12): "0.12"}.get(v[:2], "1.0")
    raise StageError(f"{name} {version}: neither {name}.configs.LlmConfig nor get_llm_config(); "
                     f"this pipeline supports {SUPPORTED}")


def find_installed() -> Installed | None:
    """The installed compiler (qbcompiler first, then the pre-rename qubee), or None."""
    for name in MODULE_NAMES:
        if importlib.util.find_spec(name) is None:
            continue
        module = importlib.import_module(name)
        version = _version(module, name)
        return Installed(name, version, call_style(module, name, version))
    return None


def require() -> Installed:
    found = find_installed()
    if found is None:
        raise StageError(f"compile.backend = qbcompiler: {INSTALL_HINT}")
    return found


# ------------------------------------------------------------------------------------------- the plan

KEY = "compile.qbcompiler"


def _device(api: str, wanted: str, gpu: bool) -> str:
    """The device name this style uses: cuda up to 1.0.0, gpu from 1.0.1 (explicit cuda/gpu mapped across)."""
    accel = "gpu" if api in OBJECT_STYLES else "cuda"
    if wanted == "auto":
        return accel if gpu else "cpu"
    return "cpu" if wanted == "cpu" else accel


def _has_all(api: str, version: str) -> bool:
    v = version_tuple(version)
    return api in OBJECT_STYLES and (not v or v >= (1, 0, 2))   # docs CHANGELOG: `all` from 1.0.2


def _scheme(api: str, version: str, component: str, wanted: str, target: str) -> str | None:
    key = f"{KEY}.{component}_scheme"
    if target in REGULUS:
        if wanted not in ("auto", "single"):   # also refused at params check
            raise StageError(f"{key} = {wanted}: REGULUS ({KEY}.target_device = {target}) runs only single")
        return "single"
    if wanted == "auto":
        if _has_all(api, version):
            return "all"
        if api == "0.11" and component == "decoder":
            return None   # the 0.11 tutorial passed no inference_scheme to the decoder's mxq_compile
        return "global4" if component == "encoder" else "single"
    if wanted == "all" and not _has_all(api, version):
        raise StageError(f"{key} = all: needs qbcompiler >= 1.0.2 (installed {version or api}, call style "
                         f"{api}); use auto, single, multi, global4 or global8")
    return wanted


def _check_target(api: str, version: str, target: str) -> None:
    key = f"{KEY}.target_device"
    if target != "aries-rb" and api not in TARGET_STYLES:
        raise StageError(f"{key} = {target}: the installed qbcompiler {version or api} (call style {api}) takes "
                         "no target_device and compiles for ARIES only; REGULUS needs qbcompiler >= 1.2")
    v = version_tuple(version)
    if target == "regulus-rb-usb" and v and v[:2] < (1, 3):
        raise StageError(f"{key} = regulus-rb-usb: documented from qbcompiler 1.3 (installed {version})")


def _llm(api: str, qb: QbcompilerParams, target: str) -> dict:
    full = qb.llm_full_seq_calibration
    seq, cache = qb.llm_max_sequence_length, qb.llm_max_cache_length
    if target in REGULUS:
        seq, cache = seq or REGULUS_LLM_LENGTH, cache or REGULUS_LLM_LENGTH
    if api in OBJECT_STYLES:
        desc: dict[str, Any] = {"factory": "LlmConfig", "use_full_seq_length": full}
        if seq:
            desc["max_sequence_length"] = seq
        if cache:
            desc["max_cache_length"] = cache
        return desc
    if seq or cache:
        raise StageError(f"{KEY}.llm_max_sequence_length / llm_max_cache_length: get_llm_config "
                         f"(call style {api}) takes no lengths; set them to 0 or install qbcompiler >= 1.0.1")
    if api == "0.11":
        return {"factory": "get_llm_config", "kwargs": {"use_full_seq_len_calib": full}}
    return {"factory": "get_llm_config", "kwargs": {"llm_config_apply": True, "use_full_seq_length": full}}


def _configs(api: str, component: str, qb: QbcompilerParams) -> dict:
    data = qb.encoder_configs if component == "encoder" else qb.decoder_configs
    if data and api not in OBJECT_STYLES:
        raise StageError(f"{KEY}.{component}_configs: config objects need qbcompiler.configs (1.0.1+); the "
                         f"installed compiler has call style {api}. Remove the key or upgrade the compiler")
    return {section: data[section] for section in sorted(data)}


def plan_calls(api: str, component: str, qb: QbcompilerParams, *, gpu: bool,
               input_features_shape: tuple[int, ...], version: str = "") -> dict:
    """The keyword arguments of the two compiler calls as plain data (without model and paths).

    ``llm_config`` (decoder only) is described as data: ``{"factory": "get_llm_config", "kwargs": ...}`` or
    ``{"factory": "LlmConfig", "use_full_seq_length": ..., ["max_sequence_length", "max_cache_length"]}``;
    ``configs`` maps params sections (``calibration``, ``bit``, ...) to the data of their config objects;
    ``feed_dict`` maps input names to shapes. ``version`` refines version-documented firsts (``all``).
    """
    if api not in KNOWN_APIS:
        raise StageError(f"qbcompiler API {api!r}: unknown")
    target = qb.target_device
    _check_target(api, version, target)
    mblt: dict[str, Any] = {}
    if api == "1.3":
        mblt.update(backend="torch", model_part=component, target_device=target)
        if component == "decoder":
            if qb.decoder_part_options:
                mblt["model_part_options"] = dict(qb.decoder_part_options)
            if qb.decoder_dynamic_axes:
                mblt["dynamic_axes"] = dict(qb.decoder_dynamic_axes)
    else:
        mblt.update(target=component, device=qb.mblt_device if qb.mblt_device == "cpu"
                    else _device(api, qb.mblt_device, True))
        backend = qb.encoder_mblt_backend if component == "encoder" else "hf"
        if backend == "auto":
            backend = "torch" if api == "1.0" or (api == "1.x" and version_tuple(version)[:2] == (1, 0)) else "hf"
        mblt["backend"] = backend
        if api in TARGET_STYLES:
            mblt["target_device"] = target
    if component == "encoder" and api in OBJECT_STYLES:
        mblt["feed_dict"] = {"input_features": list(input_features_shape)}
    mxq: dict[str, Any] = {"device": _device(api, qb.device, gpu)}
    if api in TARGET_STYLES:
        mxq["target_device"] = target
    scheme = _scheme(api, version, component, qb.encoder_scheme if component == "encoder" else qb.decoder_scheme,
                     target)
    if scheme is not None:
        mxq["inference_scheme"] = scheme
    llm = _llm(api, qb, target) if component == "decoder" else None
    return {"api": api, "mblt_compile": mblt, "mxq_compile": mxq, "llm_config": llm,
            "configs": _configs(api, component, qb), "save_config": qb.save_config and api == "1.3"}


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


def _pascal(key: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in key.split("_"))


def config_object(cls: Any, data: dict) -> Any:
    """``cls(**data)`` where a mapping value whose PascalCase key names a nested class of ``cls`` becomes
    that class, recursively: ``{"norm_conv": {"apply": True}}`` on EquivalentTransformationConfig ->
    ``EquivalentTransformationConfig(norm_conv=EquivalentTransformationConfig.NormConv(apply=True))``, the
    nesting Mobilint's tutorial uses (``BitConfig.Transformer.MixedPrecision.Activation``, ...)."""
    kwargs = {}
    for key, value in data.items():
        nested = getattr(cls, _pascal(key), None) if isinstance(value, dict) else None
        kwargs[key] = config_object(nested, value) if inspect.isclass(nested) else value
    return cls(**kwargs)


def _configs_module(inst: Installed) -> Any:
    return importlib.import_module(f"{inst.module}.configs")


def _llm_config(inst: Installed, desc: dict) -> Any:
    if desc["factory"] == "get_llm_config":
        return getattr(importlib.import_module(inst.module), "get_llm_config")(**desc["kwargs"])
    attributes = {k: desc[k] for k in ("max_sequence_length", "max_cache_length") if k in desc}
    attributes["calibration"] = {"use_full_seq_length": desc["use_full_seq_length"]}
    return config_object(_configs_module(inst).LlmConfig, {"apply": True, "attributes": attributes})


def _config_objects(inst: Installed, component: str, sections: dict, mxq_compile: Any) -> dict:
    configs = _configs_module(inst) if sections else None
    out = {}
    for section, data in sections.items():
        key = f"{KEY}.{component}_configs.{section}"
        cls = getattr(configs, CONFIG_SECTIONS[section], None)
        if cls is None:
            raise StageError(f"{key}: {inst.module} {inst.version} has no {inst.module}.configs."
                             f"{CONFIG_SECTIONS[section]}")
        if not _takes(mxq_compile, f"{section}_config", True):
            raise StageError(f"{key}: {inst.module} {inst.version}'s mxq_compile takes no {section}_config")
        try:
            out[f"{section}_config"] = config_object(cls, data)
        except (TypeError, ValueError) as e:   # pydantic's ValidationError is a ValueError
            raise StageError(f"{key}: {CONFIG_SECTIONS[section]} refused it: {' '.join(str(e).split())}") from None
    return out


def _feed_dict(shapes: dict) -> dict:
    """Example tensors for tracing (tutorial: torch.randn); seeded so reruns trace the same input."""
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
    component = plan["mblt_compile"].get("target") or plan["mblt_compile"].get("model_part")
    if inst.api == "0.11" and component == "decoder":
        check_0_11_decoder(inst)
    module = importlib.import_module(inst.module)
    mblt_path, mxq_path = (out_dir / f"{stem}.mblt").resolve(), (out_dir / f"{stem}.mxq").resolve()
    # objects first: a config the compiler refuses fails before the (long) parse
    mxq_kwargs = dict(plan["mxq_compile"])
    mxq_kwargs.update(_config_objects(inst, component, plan.get("configs", {}), module.mxq_compile))
    if plan["llm_config"] is not None:
        try:
            mxq_kwargs["llm_config"] = _llm_config(inst, plan["llm_config"])
        except Exception as e:  # as above: unknown exception types from the compiler package
            raise StageError(f"qbcompiler LLM config ({plan['llm_config']['factory']}) failed: "
                             f"{type(e).__name__}: {e}") from None
    artifacts = {"mblt": mblt_path.name, "model": mxq_path.name}
    if plan.get("save_config") and _takes(module.mxq_compile, "config_save_path", True):
        saved = (out_dir / f"{stem}.config.yaml").resolve()
        mxq_kwargs["config_save_path"] = str(saved)
        artifacts["compile_config"] = saved.name
    mblt_kwargs = dict(plan["mblt_compile"])
    if "feed_dict" in mblt_kwargs:
        mblt_kwargs["feed_dict"] = _feed_dict(mblt_kwargs["feed_dict"])
    _call("mblt_compile", module.mblt_compile, model=model, mblt_save_path=str(mblt_path), **mblt_kwargs)
    _check_output(mblt_path, "mblt_compile")
    _call("mxq_compile", module.mxq_compile, model=str(mblt_path), calib_data_path=str(calib_file),
          save_path=str(mxq_path), **mxq_kwargs)
    _check_output(mxq_path, "mxq_compile")
    if "compile_config" in artifacts and not (out_dir / artifacts["compile_config"]).is_file():
        log.warning("qbcompiler wrote no %s although config_save_path was given", artifacts["compile_config"])
        del artifacts["compile_config"]
    return artifacts


# ------------------------------------------------------------------------------------------- the interface

def build(model: Any, component: str, spec: Any, cs: CalibSet, cp: CompileParams, out_dir: Path,
          stem: str) -> Built:
    """.mblt and .mxq of one component into ``out_dir``. Nothing can be checked on a compile host (an .mxq
    runs only on the NPU), so it calibrates on every entry and holds none out."""
    import tempfile

    import torch

    from whisper_npu.backends import calib_sets

    calib_idx = list(range(len(cs)))
    inst = require()
    plan = plan_calls(inst.api, component, cp.qbcompiler, gpu=torch.cuda.is_available(),
                      input_features_shape=(1, int(model.config.num_mel_bins),
                                            spec.inputs[0].shape[1] if component == "encoder" else 0),
                      version=inst.version)
    with tempfile.TemporaryDirectory(prefix="whisper-npu-calib-") as tmp:
        # Absolute paths for the compiler, in a temp dir: never inside a DVC output.
        calib_file = calib_sets.write_absolute(cs, calib_idx, Path(tmp).resolve())
        artifacts = compile_component(inst, plan, model, calib_file, out_dir, stem)
    resolved = {"compiler": {"module": inst.module, "version": inst.version, "api": inst.api}, "calls": plan,
                "calibrated_on": calib_idx}
    if "compile_config" in artifacts:   # what the compiler says it resolved (config_save_path, 1.3+)
        import yaml

        saved = out_dir / artifacts["compile_config"]
        try:
            resolved["compiler_config"] = yaml.safe_load(saved.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as e:
            raise StageError(f"{saved.name}: the compiler's saved configuration is unreadable ({e})") from None
    numerics = {"checked": False,
                "reason": "an .mxq runs only on a Mobilint NPU (qbruntime); compare on the device with the "
                          "evaluate stage"}
    return Built(artifacts, resolved, numerics)


def mxq_call(compiled_dir: Path) -> dict:
    """The ``mxq_compile`` keywords the compile stage recorded (provenance ``resolved.calls.mxq_compile``)."""
    prov = read_provenance(compiled_dir)
    calls = prov.get("resolved", {}).get("calls")
    if not isinstance(calls, dict) or not isinstance(calls.get("mxq_compile"), dict):
        raise StageError(f"{Path(compiled_dir) / PROVENANCE}: no resolved.calls.mxq_compile (written by an "
                         f"older compile stage?); rerun `dvc repro compile@{Path(compiled_dir).name}`")
    return calls["mxq_compile"]


def compiled_scheme(compiled_dir: Path) -> str:
    """The inference scheme the compile stage passed to ``mxq_compile``; ``single`` when it passed none
    (qbcompiler's documented default; the 0.11 decoder call)."""
    return str(mxq_call(compiled_dir).get("inference_scheme") or "single")


def compiled_target(compiled_dir: Path) -> str:
    """The target device passed to ``mxq_compile``; ``aries-rb`` for compilers without the argument."""
    return str(mxq_call(compiled_dir).get("target_device") or "aries-rb")


def load(enc_dir: Path, dec_dir: Path, model_config: Any) -> Any:
    """The two .mxq files on the NPU through Mobilint's runtime; CompiledNotRunnable without one."""
    from whisper_npu.backends.mxq_runtime import RuntimeUnavailable, import_runtime, load_mxq_backend

    try:
        import_runtime()   # no runtime: not runnable here, whatever the artifacts say
        return load_mxq_backend(enc_dir, dec_dir, model_config, encoder_scheme=compiled_scheme(enc_dir),
                                decoder_scheme=compiled_scheme(dec_dir), target_device=compiled_target(dec_dir))
    except RuntimeUnavailable as e:
        raise CompiledNotRunnable(f"{dec_dir}: {e}") from None
