"""STAND-IN for Mobilint's qbcompiler. This is NOT the real compiler and compiles nothing.

Tests put ``tests/standin_qbcompiler`` first on ``sys.path`` so ``import qbcompiler`` finds this module.
Per version it pretends to be, it offers the functions, signatures and config classes that Mobilint's
compiler docs (v1.3, docs/mobilint.md lists them) and, for versions the docs do not cover, the
tutorial's call sites (mblt-sdk-tutorial at the commits docs/mobilint.md names) show:

=========  ===============================================================================================
version    surface
=========  ===============================================================================================
0.11-1.0.0 ``get_llm_config`` (0.11: ``use_full_seq_len_calib``; else ``llm_config_apply``,
           ``use_full_seq_length``), ``mblt_compile(model, mblt_save_path, backend, target, device)``
1.0.1+     ``qbcompiler.configs`` (LlmConfig, CalibrationConfig, ...), ``*_config`` keywords, ``feed_dict``;
           device gpu|cpu; ``all`` from 1.0.2 (CHANGELOG); ``get_llm_config`` until 1.0.x
1.1.x      ``target_device`` on both calls (optional) with the per-NPU wheels' names ``aries2`` / ``regulus2``
           (tutorial ``d923fa3c``, VLM tutorial v1.1.2; 1.2 refuses them: a user's report, docs/mobilint.md)
1.2+       ``target_device`` on both calls (optional): ``aries-rb``, ``regulus-rb``, ``regulus-ra``
1.3+       ``target_device`` required, ``backend="hf"`` and ``target`` gone, ``model_part``,
           ``model_part_options``, ``dynamic_axes``, ``config_save_path``, LayerBiasCorrectionConfig; REGULUS
           takes only single (``all`` narrows to single)
1.4+       BiasCorrectionConfig instead of LayerBiasCorrectionConfig; ``qbcompiler.model_dict.parser.patcher.parts
           .load_for_part(model_id, part, *, dtype, device, revision, trust_remote_code)`` (tutorial guide
           ``00_about_compilation_pipeline.md``, STT compile of ``1a5d15de``)

An equivalent-transformation config with ``spin_r2`` applied writes ``spinWeight/<.mblt stem>/R2/`` into the
current working directory during ``mxq_compile``, as the 1.4-era config guide says the real one does.
=========  ===============================================================================================

It checks every call (keyword names, allowed values, the calibration file: every listed path absolute and
existing) and records each call as one JSON line so tests can compare the exact calls. It writes small
JSON output files (the .mxq names its component, scheme and target, which the stand-in runtime reads), and
can be told to raise or to write nothing. Configured through the environment, read at import (version)
and at each call (the rest):

* ``STANDIN_QBCOMPILER_VERSION``: the version it reports (default 0.12.0.0);
* ``STANDIN_QBCOMPILER_LOG``: JSON-lines file the calls are appended to;
* ``STANDIN_QBCOMPILER_BEHAVIOR``: ``<action>:<function>`` with action ``raise`` (RuntimeError),
  ``nooutput`` (returns without writing) or ``empty`` (writes a 0-byte file), e.g. ``raise:mxq_compile``.
"""
from __future__ import annotations

import inspect
import json
import os
from pathlib import Path
from typing import Any

__version__ = os.environ.get("STANDIN_QBCOMPILER_VERSION", "0.12.0.0")
STANDIN = True
V = tuple(int(x) for x in __version__.split(".")[:3] if x.isdigit())


def api() -> str:
    if V[:2] in ((0, 11), (0, 12)):
        return f"{V[0]}.{V[1]}"
    if V[:3] == (1, 0, 0):
        return "1.0"
    if V[:2] >= (1, 3):
        return "1.3"
    return "1.2" if V[:2] >= (1, 2) else "1.x"


HAS_CONFIGS = V >= (1, 0, 1)
HAS_ALL = V >= (1, 0, 2)
_OLD_SCHEMES = {"single", "multi", "global", "global4", "global8"}
SCHEMES = _OLD_SCHEMES | ({"all"} if HAS_ALL else set())
TARGETS = ({"aries2", "regulus2"} if V < (1, 2) else
           {"aries-rb", "regulus-ra", "regulus-rb"} | ({"regulus-rb-usb"} if V >= (1, 3) else set()))
_CONFIG_KWARGS = {"calibration_config", "bit_config", "equivalent_transformation_config", "hessian_quant_config",
                  "search_weight_scale_config", "resource_management_config"}
if V[:2] == (1, 3):
    _CONFIG_KWARGS |= {"layer_bias_correction_config"}
if V >= (1, 4):
    _CONFIG_KWARGS |= {"bias_correction_config"}

# (required, optional, allowed values) per function for this version
if V < (1, 3):
    _MBLT = ({"model", "mblt_save_path", "backend", "target", "device"},
             ({"feed_dict"} if HAS_CONFIGS else set()) | ({"target_device"} if V >= (1, 1) else set()),
             {"backend": {"hf"} if V < (1, 0) else {"hf", "torch"}, "target": {"encoder", "decoder"},
              "target_device": TARGETS})
    _MXQ = ({"model", "calib_data_path", "save_path", "device"} | ({"inference_scheme"} if V >= (0, 12) else set()),
            {"llm_config"} | ({"inference_scheme"} if V < (0, 12) else set())
            | (_CONFIG_KWARGS if HAS_CONFIGS else set()) | ({"target_device"} if V >= (1, 1) else set()),
            {"device": {"gpu", "cpu"} if HAS_CONFIGS else {"cuda", "cpu"}, "inference_scheme": SCHEMES,
             "target_device": TARGETS})
else:   # docs v1.3 REF: mblt_compile / mxq_compile arguments
    _MBLT = ({"model", "mblt_save_path", "target_device", "backend"},
             {"feed_dict", "cpu_offload", "device", "model_part", "model_part_options", "dynamic_axes"},
             {"backend": {"onnx", "tf", "tflite", "torchscript", "torch"}, "target_device": TARGETS,
              "model_part": {"encoder", "decoder"}, "device": {"gpu", "cpu"}})
    _MXQ = ({"model", "target_device", "calib_data_path", "save_path"},
            {"device", "inference_scheme", "llm_config", "config_save_path", "use_random_calib", "cpu_offload",
             "compile_config", "config_preset"} | _CONFIG_KWARGS,
            {"device": {"gpu", "cpu"}, "inference_scheme": SCHEMES, "target_device": TARGETS})
_LLM_KWARGS = {"0.11": {"use_full_seq_len_calib"}, "0.12": {"llm_config_apply", "use_full_seq_length"},
               "1.0": {"llm_config_apply", "use_full_seq_length"}, "1.x": {"llm_config_apply", "use_full_seq_length"}}


def _signature(table: tuple) -> inspect.Signature:
    """The documented keyword-only signature, so the adapter's feature detection can inspect it."""
    required, optional, _ = table
    params = [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY) for n in sorted(required)]
    params += [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=None) for n in sorted(optional)]
    return inspect.Signature(params)


class StandinLlmConfig(dict):
    """What the stand-in's get_llm_config returns: its arguments, recorded."""


def _check(fn: str, kwargs: dict, table: tuple) -> None:
    required, optional, values = table
    missing, unknown = required - set(kwargs), set(kwargs) - required - optional
    if missing or unknown:
        raise TypeError(f"stand-in qbcompiler {__version__}: {fn} missing {sorted(missing)}, "
                        f"unexpected {sorted(unknown)}")
    for key, allowed in values.items():
        if key in kwargs and kwargs[key] not in allowed:
            raise ValueError(f"stand-in qbcompiler {__version__}: {fn}({key}={kwargs[key]!r}) not in {sorted(allowed)}")


def _record(entry: dict) -> None:
    log = os.environ.get("STANDIN_QBCOMPILER_LOG")
    if log:
        with open(log, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry, sort_keys=True, default=str) + "\n")


def _behave(fn: str, out: str, content: dict) -> None:
    action, _, target = os.environ.get("STANDIN_QBCOMPILER_BEHAVIOR", "").partition(":")
    if target == fn and action == "raise":
        raise RuntimeError(f"stand-in {fn} failure (simulated compiler error)")
    if target == fn and action == "nooutput":
        return
    Path(out).write_bytes(b"" if (target == fn and action == "empty") else
                          json.dumps({"standin": f"qbcompiler {fn}", **content}, sort_keys=True).encode())


def _calib_paths(path: str) -> list[list[str]]:
    """Every path the calibration file lists; each must be absolute and exist."""
    p = Path(path)
    if not p.is_absolute() or not p.is_file():
        raise FileNotFoundError(f"stand-in: calib_data_path {path} must be an existing absolute path")
    if p.suffix == ".txt":
        entries = [[ln.strip()] for ln in p.read_text().splitlines() if ln.strip()]
    else:
        data = json.loads(p.read_text())
        if data["info"]["input names"] != ["decoder_hidden_states", "encoder_hidden_states"]:
            raise ValueError(f"stand-in: unexpected input names {data['info']['input names']}")
        entries = data["calib paths"]
    for entry in entries:
        for q in entry:
            if not Path(q).is_absolute() or not Path(q).is_file():
                raise FileNotFoundError(f"stand-in: calibration file {q} is not an existing absolute path")
    return entries


def _as_data(obj: Any) -> Any:
    return obj.as_dict() if hasattr(obj, "as_dict") else dict(obj) if isinstance(obj, dict) else obj


def mblt_compile(**kwargs: Any) -> None:
    _check("mblt_compile", kwargs, _MBLT)
    model = kwargs["model"]
    if V >= (1, 3) and isinstance(model, (str, Path)):
        raise TypeError("stand-in qbcompiler 1.3: load the model yourself and pass it (hf_config is removed)")
    part = kwargs.get("target") or kwargs.get("model_part")
    if part is None:
        raise KeyError("stand-in: a Whisper model has several parts; model_part is required")
    rec = {k: v for k, v in kwargs.items() if k not in ("model", "feed_dict")}
    rec["model"] = type(model).__name__
    if "feed_dict" in kwargs:
        rec["feed_dict"] = {k: list(v.shape) for k, v in kwargs["feed_dict"].items()}
    _record({"fn": "mblt_compile", "version": __version__, "kwargs": rec})
    _behave("mblt_compile", kwargs["mblt_save_path"], {"component": part})


def mxq_compile(**kwargs: Any) -> None:
    _check("mxq_compile", kwargs, _MXQ)
    try:
        part = json.loads(Path(kwargs["model"]).read_text())["component"]
    except (OSError, ValueError, KeyError):
        raise FileNotFoundError(f"stand-in: model {kwargs['model']} is not a stand-in .mblt") from None
    target = {"aries2": "aries-rb", "regulus2": "regulus-rb"}.get(kwargs.get("target_device", "aries-rb"),
                                                                 kwargs.get("target_device", "aries-rb"))
    scheme = kwargs.get("inference_scheme") or "single"
    if V >= (1, 3) and target.startswith("regulus"):
        if scheme not in ("single", "all"):
            raise ValueError(f"stand-in qbcompiler {__version__}: {target} supports only single, got {scheme}")
        scheme = "single"   # docs: `all` narrows to single on REGULUS
    rec = {k: _as_data(v) if k.endswith("_config") else v for k, v in kwargs.items()}
    rec["calib_entries"] = _calib_paths(kwargs["calib_data_path"])
    _record({"fn": "mxq_compile", "version": __version__, "kwargs": rec})
    if kwargs.get("config_save_path"):   # docs: written before compiling, .yaml -> YAML
        import yaml

        resolved = {"inferenceScheme": scheme, "device": kwargs.get("device", "gpu"),
                    **{k: _as_data(v) for k, v in kwargs.items() if k.endswith("_config")}}
        Path(kwargs["config_save_path"]).write_text(yaml.safe_dump(resolved, sort_keys=True))
    et = _as_data(kwargs.get("equivalent_transformation_config")) or {}
    if isinstance(et.get("spin_r2"), dict) and et["spin_r2"].get("apply"):   # the 1.4 guide: rotations into the cwd
        rotations = Path("spinWeight") / Path(kwargs["model"]).stem / "R2"
        rotations.mkdir(parents=True, exist_ok=True)
        (rotations / "layer_0.pth").write_bytes(b"stand-in rotation")
    _behave("mxq_compile", kwargs["save_path"], {"component": part, "inference_scheme": scheme,
                                                 "target_device": target})


mblt_compile.__signature__ = _signature(_MBLT)
mxq_compile.__signature__ = _signature(_MXQ)


def get_llm_config(**kwargs: Any) -> StandinLlmConfig:
    a = api()
    if set(kwargs) != _LLM_KWARGS[a]:
        raise TypeError(f"stand-in qbcompiler {__version__}: get_llm_config takes {sorted(_LLM_KWARGS[a])}, "
                        f"got {sorted(kwargs)}")
    return StandinLlmConfig(factory="get_llm_config", kwargs=kwargs)


if V >= (1, 1):
    del get_llm_config   # the 1.1+ tutorials use qbcompiler.configs.LlmConfig only
