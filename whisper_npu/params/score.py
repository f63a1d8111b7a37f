"""``score``: the accuracy budget and the statistics behind the verdicts (stages/score.py)."""
from __future__ import annotations

from pydantic import Field

from whisper_npu.params.base import Section


class ScoreParams(Section):
    KEY = "score"
    max_wer_increase: float = Field(ge=0)     # compiled WER/CER minus fp32, absolute, per language
    strict: bool                              # fail the stage when a language's verdict is fail
    bootstrap_samples: int = Field(ge=100)    # paired bootstrap resamples for the 95 % intervals
    min_verdict_clips: int = Field(ge=1)      # fewer scored clips than this: verdict inconclusive
