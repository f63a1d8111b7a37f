"""The CPU a result was computed on: its model name and the instruction-set extensions that pick float and INT8
kernels (MKL / oneDNN / ONNX Runtime's MLAS choose code paths by them, so results can differ between CPUs;
docs/guarantees.md)."""
from __future__ import annotations

import platform
from pathlib import Path

# AVX2/FMA vs AVX-512 change float summation order; VNNI and AMX change which INT8 kernels run
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_int8")


def cpu() -> dict:
    """``{"model": ..., "isa": [...]}`` from /proc/cpuinfo (Linux); the platform's processor name elsewhere."""
    info: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    flags = set(info.get("flags", "").split())
    return {"model": info.get("model name") or platform.processor() or platform.machine(),
            "isa": [f for f in ISA_FLAGS if f in flags]}
