"""The public API surface of an installed Mobilint runtime module, as plain data.

Used by tests/test_mxq_runtime.py to check the stand-in runtime (tests/standin_qbruntime) against the
real ``qbruntime`` wheel, and to check that every call whisper_npu/backends/mxq_runtime.py makes exists
there with a compatible signature.
"""
from __future__ import annotations

import inspect
from typing import Any

CLASSES = ("Accelerator", "Model", "ModelConfig", "CoreId", "Cluster", "Core", "BufferInfo")
FUNCTIONS = ("get_available_device_numbers",)


def _params(fn: Any) -> list[str] | None:
    try:
        return [p.name for p in inspect.signature(fn).parameters.values() if p.name != "self"]
    except (TypeError, ValueError):
        return None


def surface(rt: Any) -> dict:
    """``{"classes": {name: {member: [parameter names] | None}}, "functions": {...}}`` of ``rt``."""
    classes = {}
    for name in CLASSES:
        cls = getattr(rt, name, None)
        if cls is None:
            continue
        members = {"__init__": _params(cls.__init__)} if inspect.isclass(cls) else {}
        for m in sorted(n for n in dir(cls) if not n.startswith("_")):
            attr = inspect.getattr_static(cls, m)
            members[m] = _params(getattr(cls, m)) if callable(getattr(cls, m)) and not isinstance(
                attr, property) and not inspect.isclass(getattr(cls, m)) else None
        classes[name] = members
    functions = {n: _params(getattr(rt, n)) for n in FUNCTIONS if hasattr(rt, n)}
    return {"module": rt.__name__, "version": str(getattr(rt, "__version__", "")), "classes": classes,
            "functions": functions}
