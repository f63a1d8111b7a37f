"""The runtime protocol (whisper_npu/runtime.py) for the ONNX Runtime artifacts of the compile stage.

The decoder has no KV cache: the session keeps the token list and runs the whole sequence at every
step, returning the last position's logits. That is O(n^2) but fine for short outputs, and it is exactly
the full-sequence form the decoder was calibrated on. Embeddings are computed here on the CPU as the NPU
runtime does (token row + position row, positions from 0), from the tables compile saved beside the model.

Batch 1 by design: the ONNX files are exported in the NPU's I/O layout (whisper_npu/specs.py: batch fixed at 1,
only the sequence length dynamic), the graph the INT8 quantizer and the .mxq compiler see, so the evaluate stage
decodes them one clip at a time (``evaluate.batch_size`` batches the torch reference only).
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from whisper_npu.backends import EMBED_POSITIONS, EMBED_TOKENS, artifact, read_provenance


def make_session(path: str | Path, threads: int | None = None):
    """An ORT CPU session using every core (intra-op threads = os.cpu_count())."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or os.cpu_count() or 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


class OrtEncoder:
    """``[1, 3000, 80]`` float32 log-mel -> ``[1, 1500, d]`` hidden states."""

    def __init__(self, path: str | Path, threads: int | None = None):
        self.session = make_session(path, threads)
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, features: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: np.ascontiguousarray(features, dtype=np.float32)})[0]


class OrtDecoderSession:
    """Full-sequence decoder session: reset(encoder_states), then step(tokens) -> last logits ``[V]``."""

    def __init__(self, decoder_onnx: str | Path, embed_tokens: np.ndarray | str | Path,
                 embed_positions: np.ndarray | str | Path, threads: int | None = None):
        self.session = make_session(decoder_onnx, threads)
        self.names = [i.name for i in self.session.get_inputs()]   # decoder_hidden_states, encoder_hidden_states
        self.embed_tokens = np.load(embed_tokens) if not isinstance(embed_tokens, np.ndarray) else embed_tokens
        self.embed_positions = (np.load(embed_positions) if not isinstance(embed_positions, np.ndarray)
                                else embed_positions)
        self.tokens: list[int] = []
        self.encoder_states: np.ndarray | None = None

    @property
    def max_length(self) -> int:
        return int(self.embed_positions.shape[0])

    def reset(self, encoder_states: np.ndarray) -> None:
        self.encoder_states = np.ascontiguousarray(encoder_states, dtype=np.float32)
        self.tokens = []

    def embed(self, tokens: Sequence[int]) -> np.ndarray:
        """``[1, L, d]`` token + position embeddings, positions from 0 (as in calibration)."""
        ids = np.asarray(tokens, dtype=np.int64)
        return (self.embed_tokens[ids] + self.embed_positions[: len(ids)])[None].astype(np.float32)

    def step(self, tokens: Sequence[int]) -> np.ndarray:
        if self.encoder_states is None:
            raise RuntimeError("OrtDecoderSession.step before reset(encoder_states)")
        if not tokens:
            raise ValueError("step needs at least one token")
        if len(self.tokens) + len(tokens) > self.max_length:
            raise ValueError(f"sequence of {len(self.tokens) + len(tokens)} tokens exceeds the decoder's "
                             f"{self.max_length} positions")
        self.tokens.extend(int(t) for t in tokens)
        logits = self.session.run(None, {self.names[0]: self.embed(self.tokens),
                                         self.names[1]: self.encoder_states})[0]
        return np.asarray(logits[0, -1], dtype=np.float32)


@dataclass
class OrtBackend:
    name: str
    encoder: OrtEncoder
    decoder: OrtDecoderSession


def load_ort_backend(compiled_dir_encoder: str | Path, compiled_dir_decoder: str | Path,
                     threads: int | None = None) -> OrtBackend:
    """A Backend over ``compiled/encoder`` and ``compiled/decoder`` written by the onnxruntime backend."""
    dec_dir = Path(compiled_dir_decoder)
    prov = read_provenance(dec_dir)
    if prov.get("backend") != "onnxruntime":
        raise ValueError(f"{dec_dir}: compiled with backend {prov.get('backend')!r}; only onnxruntime "
                         "artifacts run on this machine")
    mode = prov.get("quantization", {}).get("mode", "fp32")
    return OrtBackend(name=f"onnxruntime-{mode}",
                      encoder=OrtEncoder(artifact(compiled_dir_encoder), threads),
                      decoder=OrtDecoderSession(artifact(dec_dir), dec_dir / EMBED_TOKENS,
                                                dec_dir / EMBED_POSITIONS, threads))
