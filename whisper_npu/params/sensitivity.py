"""``sensitivity``: the per-group INT8 sensitivity study and the mixed-precision recipe it writes
(stages/sensitivity.py; the study itself is whisper_npu/compilers/onnxruntime/sensitivity.py)."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from whisper_npu.params.base import Section

COMPONENTS = ("encoder", "decoder")


class SensitivityParams(Section):
    KEY = "sensitivity"
    enabled: bool                         # false: the stage writes outputs that say it did not run, in seconds
    proxy: Literal["matmul", "npu"]       # which ops get Q/DQ in the study (groups.py)
    top_k: int = Field(ge=0)              # groups isolated at 16 bits, the worst by local channel SQNR
    samples: int = Field(ge=1)            # held-out calibration entries the study scores on; the rest calibrate
    components: list[str]                 # encoder and/or decoder
    min_gain_db: float = Field(ge=0)      # encoder: output SQNR gained alone at 16 bits (dB) to be promoted
    min_kl_reduction: float = Field(ge=0)   # decoder: logit KL removed alone at 16 bits (nats) to be promoted
    wer_languages: list[str]              # promotion checked by decoding these languages' evaluation clips; [] = off
    wer_clips: int = Field(ge=1)          # evaluation clips per language decoded per promotion step (the first N)
    max_wer_increase: float = Field(ge=0)   # the goal per language: candidate WER minus fp32 WER (0.01 = 1 point)
    max_steps: int = Field(ge=1)          # promotion steps tried at most (one more role family per component each)
    search: Literal["bisect", "linear"]   # which steps are decoded: bisection of 1..max_steps, or each in turn
    # range methods chosen among per group for what stays at 8 bits; fewer than two: no choice
    range_methods: list[Literal["minmax", "percentile", "entropy"]]

    @model_validator(mode="after")
    def _components(self) -> "SensitivityParams":
        for i, c in enumerate(self.components):
            if c not in COMPONENTS:
                raise ValueError(f"components[{i}] = {c!r}: must be one of {', '.join(COMPONENTS)}")
        if not self.components or len(set(self.components)) != len(self.components):
            raise ValueError(f"components = {self.components!r}: list encoder and/or decoder, each once")
        if len(set(self.wer_languages)) != len(self.wer_languages):
            raise ValueError(f"wer_languages = {self.wer_languages!r}: each language once")
        if len(set(self.range_methods)) != len(self.range_methods):
            raise ValueError(f"range_methods = {self.range_methods!r}: each method once")
        return self
