"""The qbcompiler calls as plain data: which call style the SDK interpreter's compiler offers (feature detection on
the surface sdk_side.py probes) and the keyword arguments each of the two calls gets for a component and the
``compile.qbcompiler`` params. No compiler import here (see build.py's docstring for the styles)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from whisper_npu.core.errors import StageError
from whisper_npu.npu import REGULUS

if TYPE_CHECKING:
    from whisper_npu.params.compile import QbcompilerParams

MODULE_NAMES = ("qbcompiler", "qubee")   # the package was renamed qubee -> qbcompiler in 2026-01
INSTALL_HINT = ("qbcompiler is not installed (it is not on PyPI): download the wheel for your platform from "
                "Mobilint's download center (https://dl.mobilint.com, login; ARIES -> qb Compiler) and run "
                "`pip install qbcompiler-<version>-<platform>.whl` in its own environment and point "
                "compile.qbcompiler.python at that environment's python (or the mobilint/qbcompiler Docker "
                "image's, e.g. mobilint/qbcompiler:1.0-cpu-ubuntu22.04); or set compile.backend to onnxruntime")
KNOWN_APIS = ("0.11", "0.12", "1.0", "1.x", "1.1", "1.2", "1.3")
OBJECT_STYLES = ("1.x", "1.1", "1.2", "1.3")      # qbcompiler.configs objects
TARGET_STYLES = ("1.1", "1.2", "1.3")             # target_device argument
SUPPORTED = ("qbcompiler/qubee 0.11, 0.12, 1.0 and 1.x (1.0.1+: config objects; 1.1: target_device aries2/regulus2; "
             "1.2+: aries-rb/regulus-rb; 1.3+: model_part; 1.4: load_for_part)")
# qbcompiler 1.1.x (per-NPU wheels) names the NPUs aries2 / regulus2; 1.2 refuses those names ("Unsupported device
# name: 'aries2'. Available devices: ['regulus-ra', 'aries-rb', 'regulus-rb']", a user's report; docs/mobilint.md).
OLD_TARGET_NAMES = {"aries-rb": "aries2", "regulus-rb": "regulus2"}
# the transformers version of the SDK's Docker image / the tutorial's requirements, per compiler minor version: the
# Whisper parser is checked against it (docs troubleshooting: "match the transformers version of the Docker image
# or the parsing script"); versions not listed are not checked (warned)
PARSER_TRANSFORMERS = {(0, 12): "4.50.0", (1, 0): "4.50.0", (1, 1): "4.50.0", (1, 2): "4.50.0", (1, 4): "4.57.1"}
PARSER_PATCH_LINE = 538   # qubee 0.11.0.1 model_dict/parser/parser.py (tutorial v0.11.0.1)
REGULUS_LLM_LENGTH = 1024   # newest public STT compile (f3f9d540): REGULUS max_sequence/cache length
# params section -> (qbcompiler.configs class, mxq_compile keyword); docs REF/MQ "*_config objects"
CONFIG_SECTIONS = {
    "calibration": "CalibrationConfig", "bit": "BitConfig",
    "equivalent_transformation": "EquivalentTransformationConfig",
    "hessian_quant": "HessianQuantConfig", "search_weight_scale": "SearchWeightScaleConfig",
    "resource_management": "ResourceManagementConfig", "layer_bias_correction": "LayerBiasCorrectionConfig",
    "bias_correction": "BiasCorrectionConfig",
}


@dataclass(frozen=True)
class Installed:
    """The compiler the SDK interpreter has (from sdk_side.py's probe) and the call style it offers."""
    module: str     # import name: qbcompiler or qubee
    version: str
    api: str        # call style, one of KNOWN_APIS
    load_for_part: bool = False   # qbcompiler.model_dict.parser.patcher.parts.load_for_part (newest tutorial)
    config_classes: tuple[str, ...] = ()
    probe: dict = field(default_factory=dict, compare=False)


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
                         "Install one of those, or extend whisper_npu/compilers/mobilint/plan.py")
    return v


def api_of(version: str) -> str:
    """The call style of a compiler known only by its version (no surface to inspect)."""
    v = _check_known(version)
    if v[:2] in ((0, 11), (0, 12)):
        return f"{v[0]}.{v[1]}"
    if v[:3] == (1, 0, 0) or v[:2] == (1, 0) and len(v) == 2:
        return "1.0"
    if v[:2] >= (1, 3):
        return "1.3"
    if v[:2] >= (1, 2):
        return "1.2"
    return "1.1" if v[:2] == (1, 1) else "1.x"


def takes(params: list[str] | None, name: str, default: bool) -> bool:
    """Whether a function with these parameter names (``**``: a catch-all) has ``name``; ``default`` when its
    signature cannot tell (unknown, or ``**kwargs``)."""
    if params is None:
        return default
    if name in params:
        return True
    return default if "**" in params else False


def call_style(compiler: dict) -> Installed:
    """The call style a compiler offers, from its probed surface (feature detection; see build.py's docstring)."""
    name, version = compiler["module"], compiler["version"]
    v = _check_known(version)
    for fn in ("mblt_compile", "mxq_compile"):
        if fn not in compiler.get("has", []):
            raise StageError(f"{name} {version}: has no {fn}(); this pipeline supports {SUPPORTED}")
    mxq, mblt = compiler.get("mxq_compile"), compiler.get("mblt_compile")
    classes = tuple(compiler.get("config_classes", ()))
    if takes(mxq, "target_device", v[:2] >= (1, 1)):
        if v[:2] < (1, 2):
            api = "1.1"   # per-NPU wheels: target names aries2 / regulus2
        else:
            api = "1.3" if takes(mblt, "model_part", v[:2] >= (1, 3)) else "1.2"
    elif "LlmConfig" in classes:
        api = "1.x"
    elif "get_llm_config" in compiler.get("has", []):
        api = {(0, 11): "0.11", (0, 12): "0.12"}.get(v[:2], "1.0")
    else:
        raise StageError(f"{name} {version}: neither {name}.configs.LlmConfig nor get_llm_config(); "
                         f"this pipeline supports {SUPPORTED}")
    return Installed(name, version, api, bool(compiler.get("has_load_for_part")) and api == "1.3", classes, compiler)


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


def _target_name(api: str, version: str, target: str) -> str:
    """The name this compiler knows the target by (1.1.x: aries2 / regulus2), or a refusal naming the key."""
    key = f"{KEY}.target_device"
    if target != "aries-rb" and api not in TARGET_STYLES:
        raise StageError(f"{key} = {target}: the installed qbcompiler {version or api} (call style {api}) takes "
                         "no target_device and compiles for ARIES only; REGULUS needs qbcompiler >= 1.1")
    if api == "1.1":
        if target not in OLD_TARGET_NAMES:
            raise StageError(f"{key} = {target}: qbcompiler {version} (per-NPU wheels) knows only "
                             f"{', '.join(OLD_TARGET_NAMES)} (sent as {', '.join(OLD_TARGET_NAMES.values())})")
        return OLD_TARGET_NAMES[target]
    v = version_tuple(version)
    if target == "regulus-rb-usb" and v and v[:2] < (1, 3):
        raise StageError(f"{key} = regulus-rb-usb: documented from qbcompiler 1.3 (installed {version})")
    return target


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


# Config fields first documented in a later release than their config class (docs v1.3 release note and CHANGELOG:
# the "Accuracy Degradation Handling" knobs; the 1.4-era quantization guide: HessianQuant's solver), by their path
# under ``compile.qbcompiler.<component>_configs``. An older compiler is refused naming the key, never sent them.
FIELDS_SINCE = {
    ("calibration", "layer_overrides"): (1, 3), ("calibration", "group_lut"): (1, 3),
    ("calibration", "optimize_lut"): (1, 3), ("calibration", "max_sample_size_for_quant_scheme"): (1, 3),
    ("bit", "layer_overrides", "weight_8bits"): (1, 3),
    ("hessian_quant", "hessian_dtype"): (1, 3), ("hessian_quant", "accumulation_device"): (1, 3),
    ("hessian_quant", "solver"): (1, 4), ("hessian_quant", "rescomp"): (1, 4),
}
PARSER_WORKERS_SINCE = (1, 3)   # docs 1.3: MBLT_HL_PARSER_NUM_WORK


def _paths(data: dict, prefix: tuple = ()) -> list[tuple]:
    out = []
    for k, v in data.items():
        out.append((*prefix, k))
        if isinstance(v, dict):
            out += _paths(v, (*prefix, k))
    return out


def _configs(api: str, component: str, qb: QbcompilerParams, version: str, mxq_params: list[str] | None,
             classes: tuple[str, ...]) -> dict:
    """The config objects for a component, refused (naming the key) where the compiler cannot take them."""
    data = qb.encoder_configs if component == "encoder" else qb.decoder_configs
    key = f"{KEY}.{component}_configs"
    if data and api not in OBJECT_STYLES:
        raise StageError(f"{key}: config objects need qbcompiler.configs (1.0.1+); the "
                         f"installed compiler has call style {api}. Remove the key or upgrade the compiler")
    for section in sorted(data):
        if classes and CONFIG_SECTIONS[section] not in classes:
            raise StageError(f"{key}.{section}: qbcompiler {version} has no qbcompiler.configs."
                             f"{CONFIG_SECTIONS[section]}")
        if not takes(mxq_params, f"{section}_config", True):
            raise StageError(f"{key}.{section}: qbcompiler {version}'s mxq_compile takes no {section}_config")
    v = version_tuple(version)
    for path in _paths(data):
        since = FIELDS_SINCE.get(path)
        if since and v and v[:2] < since:
            raise StageError(f"{key}.{'.'.join(path)}: documented from qbcompiler {since[0]}.{since[1]} on; the "
                             f"installed compiler is {version}. Remove the key or upgrade the compiler")
    return {section: data[section] for section in sorted(data)}


def warnings(component: str, qb: QbcompilerParams, version: str) -> list[str]:
    """What the plan sends that is known to hurt on this compiler version (said in the log and in provenance)."""
    out = []
    hq = (qb.encoder_configs if component == "encoder" else qb.decoder_configs).get("hessian_quant", {})
    v = version_tuple(version)
    if hq.get("apply") and v and v[:2] < (1, 2):
        out.append(f"{KEY}.{component}_configs.hessian_quant: HessianQuant (OPTQ) was reported to lower accuracy "
                   f"on qbcompiler 1.1.x and to raise it from 1.2.0 (a user's measurement, docs/mobilint.md); "
                   f"installed {version}")
    return out


def plan_calls(api: str, component: str, qb: QbcompilerParams, *, gpu: bool,
               input_features_shape: tuple[int, ...], version: str = "", inst: Installed | None = None) -> dict:
    """The keyword arguments of the two compiler calls as plain data (without model and paths).

    ``llm_config`` (decoder only) is described as data: ``{"factory": "get_llm_config", "kwargs": ...}`` or
    ``{"factory": "LlmConfig", "use_full_seq_length": ..., ["max_sequence_length", "max_cache_length"]}``;
    ``configs`` maps params sections (``calibration``, ``bit``, ...) to the data of their config objects;
    ``feed_dict`` maps input names to shapes. ``version`` refines version-documented firsts (``all``); ``inst``
    (the probed compiler) refines what its functions and config classes take and how the model is loaded.
    """
    if api not in KNOWN_APIS:
        raise StageError(f"qbcompiler API {api!r}: unknown")
    target = _target_name(api, version, qb.target_device)
    v = version_tuple(version)
    if qb.parser_workers and v and v[:2] < PARSER_WORKERS_SINCE:
        raise StageError(f"{KEY}.parser_workers = {qb.parser_workers}: the parser's worker count "
                         f"(MBLT_HL_PARSER_NUM_WORK) is documented from qbcompiler 1.3; installed {version}. Set 0")
    part_options = {"decoder_part_options": qb.decoder_part_options, "decoder_dynamic_axes": qb.decoder_dynamic_axes}
    for name, value in part_options.items():
        if value and api != "1.3":
            raise StageError(f"{KEY}.{name}: needs qbcompiler >= 1.3 (mblt_compile model_part); the installed "
                             f"compiler {version or ''} has call style {api}. Remove the key or upgrade the compiler")
    probe = inst.probe if inst is not None else {}
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
                     qb.target_device)
    if scheme is not None:
        mxq["inference_scheme"] = scheme
    llm = _llm(api, qb, qb.target_device) if component == "decoder" else None
    configs = _configs(api, component, qb, version, probe.get("mxq_compile"), inst.config_classes if inst else ())
    return {"api": api, "mblt_compile": mblt, "mxq_compile": mxq, "llm_config": llm, "configs": configs,
            "save_config": qb.save_config and api == "1.3" and takes(probe.get("mxq_compile"), "config_save_path",
                                                                     True),
            "load_for_part": bool(inst and inst.load_for_part),
            "warnings": warnings(component, qb, version)}
