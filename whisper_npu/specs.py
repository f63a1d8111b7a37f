"""The encoder/decoder I/O contracts, written once as data, and the one host-side computation they imply.

Calibration writes files that match these specs, compile builds models with these inputs and outputs, the
runtimes run them. Widths and lengths come from the model config, never from literals. The decoder's input is
token + position embeddings computed outside the NPU (:func:`embed`, from the tables :func:`embedding_tables`
takes out of the model): calibration, the ONNX Runtime decoder and Mobilint's runtime all use this one function.
Sources: docs/mobilint.md (the tutorial's scripts and Mobilint's runtime).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

# File names the tutorial's compile scripts read; kept so a tutorial user recognises them.
ENCODER_LIST = "whisper_encoder_cali.txt"
DECODER_JSON = "whisper_decoder_calib.json"
DECODER_METADATA_JSON = "whisper_decoder_calib_metadata.json"


class SpecError(ValueError):
    """An array does not match its tensor spec."""


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]   # -1 marks a dynamic dimension
    dtype: str = "float32"

    def check(self, arr: Any, where: str = "", max_dynamic: int | None = None) -> None:
        """Raise SpecError unless ``arr`` has this spec's dtype, rank, fixed dims and finite values."""
        label = f"{where}: {self.name}" if where else self.name
        if not isinstance(arr, np.ndarray):
            raise SpecError(f"{label}: expected a numpy array, got {type(arr).__name__}")
        if arr.dtype != np.dtype(self.dtype):
            raise SpecError(f"{label}: dtype {arr.dtype}, expected {self.dtype}")
        if arr.ndim != len(self.shape) or any(s != -1 and s != a for s, a in zip(self.shape, arr.shape)):
            raise SpecError(f"{label}: shape {list(arr.shape)}, expected {list(self.shape)}")
        for s, a in zip(self.shape, arr.shape):
            if s == -1 and (a < 1 or (max_dynamic is not None and a > max_dynamic)):
                raise SpecError(f"{label}: dynamic length {a} outside 1..{max_dynamic}")
        if not np.isfinite(arr).all():
            raise SpecError(f"{label}: contains NaN or inf values")

    def to_dict(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}


@dataclass(frozen=True)
class ComponentSpec:
    component: str                      # "encoder" or "decoder"
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    max_length: int | None = None       # longest dynamic sequence (decoder positions)

    def to_dict(self) -> dict:
        return {"component": self.component, "inputs": [t.to_dict() for t in self.inputs],
                "outputs": [t.to_dict() for t in self.outputs], "max_length": self.max_length}


def _cfg(config: Any, key: str) -> int:
    return int(config[key] if isinstance(config, dict) else getattr(config, key))


def n_frames(config: Any) -> int:
    """Mel frames in Whisper's 30 s window: encoder positions x the two convs' total stride of 2."""
    return _cfg(config, "max_source_positions") * 2


def encoder_spec(config: Any) -> ComponentSpec:
    """Encoder: log-mel [1, 3000, 80] (frames x bins, HF features transposed) -> hidden [1, 1500, d]."""
    d, mels, pos = _cfg(config, "d_model"), _cfg(config, "num_mel_bins"), _cfg(config, "max_source_positions")
    return ComponentSpec(
        "encoder",
        inputs=(TensorSpec("input_features", (1, n_frames(config), mels)),),
        outputs=(TensorSpec("encoder_hidden_states", (1, pos, d)),),
    )


def decoder_spec(config: Any) -> ComponentSpec:
    """Decoder: token+position embeddings [1, L, d] then encoder states [1, 1500, d] -> logits [1, L, V]."""
    d, pos, vocab = _cfg(config, "d_model"), _cfg(config, "max_source_positions"), _cfg(config, "vocab_size")
    return ComponentSpec(
        "decoder",
        inputs=(TensorSpec("decoder_hidden_states", (1, -1, d)), TensorSpec("encoder_hidden_states", (1, pos, d))),
        outputs=(TensorSpec("logits", (1, -1, vocab)),),
        max_length=_cfg(config, "max_target_positions"),
    )


def component_spec(component: str, config: Any) -> ComponentSpec:
    if component == "encoder":
        return encoder_spec(config)
    if component == "decoder":
        return decoder_spec(config)
    raise ValueError(f"unknown component {component!r}: encoder or decoder")


# ---------------------------------------------------------------------------------------------- host-side embedding

def embedding_tables(model: Any) -> tuple[np.ndarray, np.ndarray]:
    """(token table ``[V, d]``, position table ``[max_target_positions, d]``) float32 of a HF Whisper model: what
    the NPU runtime adds on the CPU (the compiled decoder starts after them)."""
    dec = model.model.decoder
    return (dec.embed_tokens.weight.detach().float().cpu().numpy().copy(),
            dec.embed_positions.weight.detach().float().cpu().numpy().copy())


def embed(tokens: np.ndarray, positions: np.ndarray, ids: Any, past: int = 0, scale: float = 1.0) -> np.ndarray:
    """``[1, L, d]`` float32 decoder input for token ``ids`` at positions ``past .. past+L-1``: token row (times
    ``scale``; 1 for every Whisper checkpoint) plus position row, exactly what the HF decoder adds before its first
    layer (float32 additions: the same bits as torch's)."""
    ids = np.asarray(ids, dtype=np.int64)
    rows = tokens[ids] if scale == 1.0 else tokens[ids] * np.float32(scale)
    return np.ascontiguousarray((rows + positions[past:past + len(ids)])[None], dtype=np.float32)
