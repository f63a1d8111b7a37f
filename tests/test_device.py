"""Placement on the `device` params key (cpu, cuda, cuda:N). No GPU here: what can be checked on the CPU is that
the code that runs on that device never leaves a tensor or a generator on torch's default device, which is where a
CUDA run breaks ("expected all tensors to be on the same device"). The label, decoder-calibration and fp32
transcription code is read for every torch factory call and numpy hand-over; the CPU outputs themselves are
byte-identical to main's (the committed dvc.lock). Nothing here has run on a GPU."""
from __future__ import annotations

import ast

import pytest
from conftest import ROOT

from whisper_npu import device
from whisper_npu.core.errors import StageError

# the modules whose tensors live on params `device`
ON_DEVICE = ("whisper_npu/labeler.py", "stages/calibrate_decoder.py", "whisper_npu/runtimes/torch_ref.py")
FACTORIES = {"zeros", "ones", "full", "empty", "arange", "tensor", "as_tensor", "rand", "randn", "randint",
             "linspace", "eye", "Generator"}


def _placement_defects(source: str) -> list[str]:
    """torch factory calls without ``device=`` and ``torch.from_numpy(...)`` not followed by ``.to(...)``."""
    tree = ast.parse(source)
    moved = {id(n.func.value) for n in ast.walk(tree) if isinstance(n, ast.Call)
             and isinstance(n.func, ast.Attribute) and n.func.attr == "to" and n.args + n.keywords}
    defects = []
    for n in ast.walk(tree):
        if not (isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
                and isinstance(n.func.value, ast.Name) and n.func.value.id == "torch"):
            continue
        if n.func.attr in FACTORIES and "device" not in {k.arg for k in n.keywords}:
            defects.append(f"line {n.lineno}: torch.{n.func.attr}(...) without device=")
        if n.func.attr == "from_numpy" and id(n) not in moved:
            defects.append(f"line {n.lineno}: torch.from_numpy(...) left on the CPU")
    return sorted(defects, key=lambda d: int(d.split()[1].rstrip(":")))


@pytest.mark.parametrize("module", ON_DEVICE)
def test_every_tensor_and_generator_is_made_on_the_models_device(module):
    source = (ROOT / module).read_text(encoding="utf-8")
    assert "from_numpy" in source or "Generator" in source or "torch." in source   # the check reads real code
    assert _placement_defects(source) == []


def test_the_check_finds_what_breaks_on_cuda():
    bad = ("import torch\n"
           "g = torch.Generator().manual_seed(1)\n"
           "x = torch.zeros(3)\n"
           "y = torch.from_numpy(a)\n"
           "ok = [torch.zeros(3, device=d), torch.from_numpy(a).to(d), torch.Generator(device=d)]\n")
    assert _placement_defects(bad) == ["line 2: torch.Generator(...) without device=",
                                       "line 3: torch.zeros(...) without device=",
                                       "line 4: torch.from_numpy(...) left on the CPU"]


def test_device_values():
    assert device.resolve("cpu") == "cpu"
    assert device.resolve("auto") == "cpu"    # this interpreter's torch is the CPU build
    for bad in ("gpu", "cuda:x", "CUDA"):
        with pytest.raises(StageError, match=rf"device = '{bad}': must be auto, cpu, cuda or cuda:N"):
            device.resolve(bad)
    with pytest.raises(StageError, match=r"device = cuda:1: this interpreter's torch sees no CUDA device"):
        device.resolve("cuda:1")
    assert device.describe("cpu") == {}       # CPU outputs carry no device fields: their bytes stay main's
