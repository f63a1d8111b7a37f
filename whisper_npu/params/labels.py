"""``labels``: the label stage's model and decoding (stages/label.py)."""
from __future__ import annotations

from pydantic import Field, model_validator

from whisper_npu.params.base import Section, check_list

SPLITS = ("calibration", "evaluation")


class LabelsParams(Section):
    KEY = "labels"
    enabled: bool                 # false: the label stages write empty files and load no model
    # reference: the model stage's Whisper through openai-whisper (temperature fallback); any other value: an
    # openai-whisper model name (large-v3, as the tutorial) or a .pt checkpoint path
    labeler: str
    beam_size: int = Field(ge=1)
    logprob_fallback: bool        # also retry when the average log-prob < -1 (openai-whisper's default)
    best_of: int = Field(ge=1)    # samples per fallback temperature (openai-whisper's default: 5)
    max_new_tokens: int = Field(ge=1, le=224)
    without_timestamps: bool
    splits: list[str]             # which clips get labelled: calibration, evaluation
    batch_size: int = Field(ge=1)

    @model_validator(mode="after")
    def _splits(self) -> "LabelsParams":
        check_list("splits", self.splits, SPLITS)
        if not self.splits or len(set(self.splits)) != len(self.splits):
            raise ValueError(f"splits = {self.splits!r}: list calibration and/or evaluation, each once")
        return self
