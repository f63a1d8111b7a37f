"""``npu``: running the compiled ``.mxq`` files on a Mobilint NPU (stages/transcribe_compiled.py, and the placement
written into Mobilint's model folder by stages/mobilint_model.py). A section of its own, not part of ``transcribe``:
the fp32 transcription reads ``transcribe``, and setting these on an NPU host must not rerun it."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from whisper_npu.npu import CORE_MODES, Placement, placement
from whisper_npu.params.base import Section

COMPONENTS = ("encoder", "decoder")


class PlacementParams(Section):
    dev_no: int = Field(ge=0)                  # the NPU device number (qbruntime Accelerator dev_no)
    core_mode: Literal[CORE_MODES]             # type: ignore[valid-type]
    cores: Any                                 # auto, or [cluster, core] pairs (folders: "cluster:core"); checked below


class NpuParams(Section):
    KEY = "npu"
    # true: a compiled model that cannot run here (no runtime, NPU device not openable, runtime API mismatch) fails
    # the compiled transcription with the reason; false: it is recorded as not run and the budget as not_checked
    require_compiled: bool
    encoder: PlacementParams
    decoder: PlacementParams

    @model_validator(mode="after")
    def _cores(self) -> NpuParams:
        for component in COMPONENTS:   # the cores' form; the target's limits are checked with the compile section
            self.placement(component, "aries-rb")
        return self

    def placement(self, component: str, target: str, scheme: str | None = None) -> Placement:
        """``npu.<component>`` checked against ``target`` (and an MXQ compiled with ``scheme``); ValueError naming
        the key."""
        p = getattr(self, component)
        return placement(f"npu.{component}", component, p.dev_no, p.core_mode, p.cores, target, scheme)
