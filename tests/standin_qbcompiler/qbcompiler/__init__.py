"""STAND-IN for Mobilint's qbcompiler. This is NOT the real compiler and compiles nothing.

Tests put ``tests/standin_qbcompiler`` first on ``sys.path`` so ``import qbcompiler`` finds this module.
It checks every call against the call sites of Mobilint's tutorial for the version it pretends to be
(shared/notes/mobilint-qbcompiler.md §2.4-2.6, §3): keyword names and allowed values, the calibration
file (every listed path absolute and existing), and records each call as one JSON line so tests can
compare the exact calls. It writes small dummy output files, and can be told to raise or to write nothing.

Configured through the environment, read at import (version) and at each call (the rest):

* ``STANDIN_QBCOMPILER_VERSION``: the version it reports (default 0.12.0.0);
* ``STANDIN_QBCOMPILER_LOG``: JSON-lines file the calls are appended to;
* ``STANDIN_QBCOMPILER_BEHAVIOR``: ``<action>:<function>`` with action ``raise`` (RuntimeError),
  ``nooutput`` (returns without writing) or ``empty`` (writes a 0-byte file), e.g. ``raise:mxq_compile``.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__version__ = os.environ.get("STANDIN_QBCOMPILER_VERSION", "0.12.0.0")
STANDIN = True


def api() -> str:
    major, minor = (int(x) for x in __version__.split(".")[:2])
    if (major, minor) in ((0, 11), (0, 12), (1, 0)):
        return f"{major}.{minor}"
    return "1.x" if major == 1 else "unknown"


_OLD_SCHEMES = {"single", "multi", "global", "global4", "global8"}
# Documented keyword names (required, optional) and values per API family, from the tutorial scripts.
_MBLT = {
    "0.11": ({"model", "mblt_save_path", "backend", "target", "device"}, set(), {"backend": {"hf"}}),
    "0.12": ({"model", "mblt_save_path", "backend", "target", "device"}, set(), {"backend": {"hf"}}),
    "1.0": ({"model", "mblt_save_path", "backend", "target", "device"}, set(), {"backend": {"hf", "torch"}}),
    "1.x": ({"model", "mblt_save_path", "backend", "target", "device"}, {"feed_dict"}, {"backend": {"hf", "torch"}}),
}
_MXQ = {
    "0.11": ({"model", "calib_data_path", "save_path", "device"}, {"inference_scheme", "llm_config"},
             {"device": {"cuda", "cpu"}, "inference_scheme": _OLD_SCHEMES}),
    "0.12": ({"model", "calib_data_path", "save_path", "device", "inference_scheme"}, {"llm_config"},
             {"device": {"cuda", "cpu"}, "inference_scheme": _OLD_SCHEMES}),
    "1.0": ({"model", "calib_data_path", "save_path", "device", "inference_scheme"}, {"llm_config"},
            {"device": {"cuda", "cpu"}, "inference_scheme": _OLD_SCHEMES | {"all"}}),
    "1.x": ({"model", "calib_data_path", "save_path", "device", "inference_scheme"}, {"llm_config"},
            {"device": {"gpu", "cpu"}, "inference_scheme": _OLD_SCHEMES | {"all"}}),
}
_LLM_KWARGS = {"0.11": {"use_full_seq_len_calib"}, "0.12": {"llm_config_apply", "use_full_seq_length"},
               "1.0": {"llm_config_apply", "use_full_seq_length"}}


class StandinLlmConfig(dict):
    """What the stand-in's get_llm_config returns: its arguments, recorded."""


def _check(fn: str, kwargs: dict, table: dict) -> None:
    a = api()
    if a not in table:
        raise TypeError(f"stand-in qbcompiler {__version__}: {fn} has no documented signature for this version")
    required, optional, values = table[a]
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


def _behave(fn: str, out: str) -> None:
    action, _, target = os.environ.get("STANDIN_QBCOMPILER_BEHAVIOR", "").partition(":")
    if target == fn and action == "raise":
        raise RuntimeError(f"stand-in {fn} failure (simulated compiler error)")
    if target == fn and action == "nooutput":
        return
    Path(out).write_bytes(b"" if (target == fn and action == "empty") else f"stand-in {fn} output\n".encode())


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


def mblt_compile(**kwargs: Any) -> None:
    _check("mblt_compile", kwargs, _MBLT)
    model = kwargs["model"]
    rec = {k: v for k, v in kwargs.items() if k not in ("model", "feed_dict")}
    rec["model"] = type(model).__name__
    if "feed_dict" in kwargs:
        rec["feed_dict"] = {k: list(v.shape) for k, v in kwargs["feed_dict"].items()}
    _record({"fn": "mblt_compile", "version": __version__, "kwargs": rec})
    _behave("mblt_compile", kwargs["mblt_save_path"])


def mxq_compile(**kwargs: Any) -> None:
    _check("mxq_compile", kwargs, _MXQ)
    if not Path(kwargs["model"]).is_file():
        raise FileNotFoundError(f"stand-in: model {kwargs['model']} does not exist")
    rec = {k: v for k, v in kwargs.items() if k != "llm_config"}
    if "llm_config" in kwargs:
        cfg = kwargs["llm_config"]
        rec["llm_config"] = cfg.as_dict() if hasattr(cfg, "as_dict") else dict(cfg)
    rec["calib_entries"] = _calib_paths(kwargs["calib_data_path"])
    _record({"fn": "mxq_compile", "version": __version__, "kwargs": rec})
    _behave("mxq_compile", kwargs["save_path"])


def get_llm_config(**kwargs: Any) -> StandinLlmConfig:
    a = api()
    if a not in _LLM_KWARGS:
        raise TypeError(f"stand-in qbcompiler {__version__}: the {a} tutorials use qbcompiler.configs.LlmConfig")
    if set(kwargs) != _LLM_KWARGS[a]:
        raise TypeError(f"stand-in qbcompiler {__version__}: get_llm_config takes {sorted(_LLM_KWARGS[a])}, "
                        f"got {sorted(kwargs)}")
    return StandinLlmConfig(factory="get_llm_config", kwargs=kwargs)
