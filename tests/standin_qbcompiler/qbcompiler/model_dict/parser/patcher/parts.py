"""STAND-IN for ``qbcompiler.model_dict.parser.patcher.parts`` (NOT the real compiler): ``available_parts(model)`` (docs
1.3 release note: the parts a model has) and, from the 1.4-era guide on, ``load_for_part(model_id, part, *, dtype=None,
device=None, revision=None, trust_remote_code=False)``, which "loads the checkpoint with the class the parser expects
for that part, in eval() mode" (tutorial guide ``00_about_compilation_pipeline.md``, STT compile of ``1a5d15de``).
Records each load (STANDIN_QBCOMPILER_LOG)."""
from __future__ import annotations

from typing import Any

from qbcompiler import V, __version__, _record

if V < (1, 3):
    raise ImportError(f"stand-in qbcompiler {__version__}: model parts are documented from 1.3 on")

PARTS = ("encoder", "decoder")


def available_parts(model: Any) -> list[str]:
    return list(PARTS)


def load_for_part(model_id: str, part: str, *, dtype: Any = None, device: Any = None, revision: Any = None,
                  trust_remote_code: bool = False) -> Any:
    from transformers import WhisperForConditionalGeneration

    if part not in PARTS:
        raise ValueError(f"stand-in: Whisper has parts {PARTS}, not {part!r}")
    _record({"fn": "load_for_part", "version": __version__,
             "kwargs": {"model_id": model_id, "part": part, "dtype": str(dtype), "device": str(device)}})
    return WhisperForConditionalGeneration.from_pretrained(model_id, revision=revision).to(dtype).eval()


if V < (1, 4):
    del load_for_part   # 1.3 has the parts module, not the loader (the 1.4-era guide introduces it)
