"""Where the models of the label, decoder-calibration and fp32-transcription stages run (params ``device``):
``auto`` (CUDA when this interpreter's torch sees it, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``.

On the CPU every output is byte-stable for the same params and machine. On a GPU the numerics differ from the CPU's
(other kernels; the labeler runs in fp16 there, as openai-whisper's ``transcribe()`` does by default), so DVC hashes
differ too; outputs made on a GPU say so (``device``/``precision`` fields, absent on the CPU).
"""
from __future__ import annotations

import logging
import os
import re

from whisper_npu.core.errors import StageError

log = logging.getLogger(__name__)
PATTERN = re.compile(r"^(auto|cpu|cuda|cuda:\d+)$")
# torch's CPU kernels chosen by what they compute, not by the CPU's SIMD width: ATen's portable kernels (softmax,
# layer norm, GELU), MKL's conditional-numerical-reproducibility mode for its GEMMs, and no oneDNN (convolutions)
PINNED_KERNELS = {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE,STRICT"}


def pin_cpu_kernels() -> bool:
    """Make torch's float results on the CPU the same on every x86-64 CPU (AVX2, AVX-512...), at some speed (about
    20 % on the whisper-base encoder). Must run before this process's first torch operation: returns False (and
    says so) when torch had already picked its kernels. Results still depend on the thread count."""
    os.environ.update(PINNED_KERNELS)
    import torch

    torch.backends.mkldnn.enabled = False
    pinned = torch.backends.cpu.get_cpu_capability() == "DEFAULT"
    if not pinned:
        log.warning("torch had already chosen its %s kernels in this process: results may depend on the CPU",
                    torch.backends.cpu.get_cpu_capability())
    return pinned


def resolve(wanted: str, key: str = "device") -> str:
    """``cpu`` or ``cuda:N`` for a params value; StageError naming ``key`` when CUDA is asked for and absent."""
    import torch

    if not PATTERN.match(wanted):
        raise StageError(f"{key} = {wanted!r}: must be auto, cpu, cuda or cuda:N")
    if wanted == "cpu":
        return "cpu"
    available = torch.cuda.is_available()
    if wanted == "auto":
        return "cuda:0" if available else "cpu"
    if not available:
        raise StageError(f"{key} = {wanted}: this interpreter's torch sees no CUDA device ({torch.__version__}, "
                         f"built for CUDA {torch.version.cuda or 'none'}); set {key}: cpu or auto, or install "
                         "a CUDA build of torch")
    index = int(wanted.split(":")[1]) if ":" in wanted else 0
    if index >= torch.cuda.device_count():
        raise StageError(f"{key} = {wanted}: only {torch.cuda.device_count()} CUDA device(s) here")
    return f"cuda:{index}"


def describe(device: str, fp16: bool = False) -> dict[str, str]:
    """What an output records about where it was made: nothing on the CPU in fp32 (outputs stay as they were)."""
    if device == "cpu" and not fp16:
        return {}
    return {"device": device, "precision": "fp16" if fp16 else "fp32"}


def log_device(stage: str, device: str, fp16: bool = False) -> None:
    name = device
    if device.startswith("cuda"):
        import torch

        name = f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    log.info("%s: models run on %s in %s", stage, name, "fp16" if fp16 else "fp32")
