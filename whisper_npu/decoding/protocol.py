"""The small protocol every Whisper backend implements, so one decode loop runs them all.

A backend is an encoder (log-mel in NPU layout -> hidden states) and a decoder session that keeps its own
cache, fed the prompt first and then one token per step, exactly as Mobilint's runtime drives the
decoder .mxq (prefill with cache_size=0, then one token per call; docs/mobilint.md).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np


class Encoder(Protocol):
    def __call__(self, features: np.ndarray) -> np.ndarray:
        """``[1, 3000, 80]`` float32 log-mel (frames x bins) -> ``[1, 1500, d]`` float32 hidden states."""
        ...


class DecoderSession(Protocol):
    def reset(self, encoder_states: np.ndarray) -> None:
        """Start a new sequence on ``[1, 1500, d]`` encoder states (clears the cache)."""
        ...

    def step(self, tokens: Sequence[int]) -> np.ndarray:
        """Append ``tokens`` (the prompt first, then one token at a time) and return the float32 logits
        ``[vocab]`` for the last of them."""
        ...


class BatchDecoderSession(DecoderSession, Protocol):
    """A decoder session that also runs ``B`` sequences at once (the torch reference; not the NPU, whose
    decoder .mxq is compiled for batch 1, nor the ONNX decoder, exported in the same batch-1 layout)."""

    def reset_batch(self, encoder_states: np.ndarray) -> None:
        """Start ``B`` new sequences on ``[B, 1500, d]`` encoder states (clears the cache)."""
        ...

    def step_batch(self, tokens: Sequence[Sequence[int]]) -> np.ndarray:
        """Append ``tokens[i]`` (all of one length) to sequence ``i``; float32 logits ``[B, vocab]`` of the
        last position of each."""
        ...

    def select(self, rows: Sequence[int]) -> None:
        """Keep only these batch rows (in this order) for the next steps (finished sequences leave)."""
        ...


class Backend(Protocol):
    name: str
    encoder: Encoder
    decoder: DecoderSession

    def close(self) -> None:
        """Release what the backend holds (the NPU's models); the backend is not used afterwards."""
        ...
