"""``calibration``: the encoder and decoder calibration sets (stages/calibrate_*.py)."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from whisper_npu.params.base import Section


class CalibrationParams(Section):
    KEY = "calibration"
    text_source: Literal["generated", "labels", "reference"]
    translate_ratio: float = Field(ge=0, le=1)
    samples_per_language: int = Field(ge=1)   # calibration clips used per language
    max_new_tokens: int = Field(ge=1, le=440)
    batch_size: int = Field(ge=1)
    # Decoder-set recipe. Seed (tutorial 0.12): [1.0], 0, false, full. Newest public recipe: [0.2, 0.4, 0.6,
    # 0.8, 1.0], 8, true, minimal (params/tutorial-latest.yaml).
    prefix_fractions: list[float]
    min_tokens: int = Field(ge=0)
    strip_final_eot: bool
    json_layout: Literal["full", "minimal"]

    @model_validator(mode="after")
    def _fractions(self) -> "CalibrationParams":
        key, fr = "prefix_fractions", self.prefix_fractions
        if not fr:
            raise ValueError(f"{key} = []: list at least one fraction (1.0 = the whole clip, the seed)")
        for i, f in enumerate(fr):
            if not 0 < f <= 1:
                raise ValueError(f"{key}[{i}] = {f!r}: must be > 0 and <= 1")
        pct = [round(float(f) * 100) for f in fr]
        if len(set(pct)) != len(pct) or pct != sorted(pct):
            raise ValueError(f"{key} = {fr!r}: must be increasing and distinct in whole percent")
        if fr != [1.0] and self.text_source != "generated":
            raise ValueError(f"{key} = {fr!r}: audio prefixes need calibration.text_source = generated (a "
                             f"{self.text_source} text belongs to the whole clip)")
        return self
