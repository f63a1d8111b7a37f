"""Writing the reference-model store (the model stage): the Hugging Face folder, the openai-whisper checkpoint and
model.json, deterministically (same inputs, same bytes). The layout is store.py's."""
from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from whisper_npu.core.files import sha256_file, write_json
from whisper_npu.model import ct2
from whisper_npu.model.openai_ckpt import dims_from_config, save_openai_checkpoint
from whisper_npu.model.store import HF_DIR, MODEL_JSON, OPENAI_CKPT, WEIGHTS


def save_weights(path: str | Path, state_dict: Mapping[str, Any]) -> None:
    """float32 safetensors without the tied LM head; safetensors orders tensors itself (stable bytes)."""
    import torch
    from safetensors.torch import save_file

    tensors = {k: torch.as_tensor(np.asarray(v) if not isinstance(v, torch.Tensor) else v)
               .detach().to(torch.float32).contiguous().clone()
               for k, v in state_dict.items() if k != "proj_out.weight"}
    save_file(tensors, str(path), metadata={"format": "pt"})


def save_feature_extractor(hf_dir: Path, num_mel_bins: int) -> None:
    """preprocessor_config.json of a WhisperFeatureExtractor (computes its mel filters, no download)."""
    from transformers import WhisperFeatureExtractor

    fe = WhisperFeatureExtractor(feature_size=num_mel_bins)
    data = json.loads(fe.to_json_string())
    data.pop("mel_filters", None)   # derived from the other fields; older versions drop it as well
    data.pop("transformers_version", None)
    data["processor_class"] = "WhisperProcessor"
    write_json(hf_dir / "preprocessor_config.json", data)


def write_hf_folder(hf_dir: Path, state_dict: Mapping[str, Any], config: Mapping[str, Any],
                    generation_config: Mapping[str, Any], tokenizer_files: Mapping[str, str]) -> None:
    """Write a complete HF Whisper folder from tensors, config dicts and tokenizer file texts."""
    hf_dir.mkdir(parents=True, exist_ok=True)
    save_weights(hf_dir / WEIGHTS, state_dict)
    write_json(hf_dir / "config.json", dict(config))
    write_json(hf_dir / "generation_config.json", dict(generation_config))
    for name, text in sorted(tokenizer_files.items()):
        (hf_dir / name).write_text(text, encoding="utf-8")
    save_feature_extractor(hf_dir, int(config["num_mel_bins"]))


def write_store(model_dir: Path, state_dict: Mapping[str, Any], config: Mapping[str, Any],
                generation_config: Mapping[str, Any], tokenizer_files: Mapping[str, str],
                info: Mapping[str, Any]) -> dict[str, Any]:
    """Write hf/, openai-whisper.pt and model.json into ``model_dir``; returns model.json's content.

    ``info`` holds name, source, id, revision (and anything else worth recording, e.g. wheel hashes).
    """
    write_hf_folder(model_dir / HF_DIR, state_dict, config, generation_config, tokenizer_files)
    save_openai_checkpoint(model_dir / OPENAI_CKPT, state_dict, config)
    files = {p.relative_to(model_dir).as_posix(): sha256_file(p)
             for p in sorted(model_dir.rglob("*")) if p.is_file() and p.name != MODEL_JSON}
    meta = {**info, "multilingual": ct2.is_multilingual(int(config["vocab_size"])),
            "dims": dims_from_config(config), "files": files}
    write_json(model_dir / MODEL_JSON, meta)
    return meta
