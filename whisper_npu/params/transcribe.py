"""``transcribe``: the decode options of the fp32 and compiled transcriptions (stages/transcribe_*.py)."""
from __future__ import annotations

from pydantic import Field

from whisper_npu.params.base import Section


class TranscribeParams(Section):
    KEY = "transcribe"
    # 224 tokens per 30 s window (openai-whisper's sample_len, n_text_ctx // 2) minus the 4 prompt tokens
    max_new_tokens: int = Field(ge=1, le=440)
    repeat_max_ngram: int = Field(ge=1)   # repetition guard: longest repeated n-gram (tokens) it looks for
    repeat_times: int = Field(ge=0)       # stop when an n-gram repeats this often in a row; 0 = off
    suppress_timestamps: bool             # mask timestamp tokens (HF generate does not when timestamps are off)
    batch_size: int = Field(ge=1, le=256)  # clips decoded at once by backends that batch (the torch reference)
