"""The reference-model store every stage reads (the ``model`` stage writes it).

Layout of ``models/reference/`` (``model_dir`` below)::

    hf/                   Hugging Face Whisper folder: config.json, generation_config.json,
                          model.safetensors (float32), tokenizer.json + vocab.json/merges.txt (fast and
                          slow tokenizers), tokenizer_config.json, special_tokens_map.json,
                          preprocessor_config.json
    openai-whisper.pt     the same weights for openai-whisper (whisper.load_model(path))
    model.json            {name, source, id, revision, multilingual, dims, files: {relative path: sha256}}

Files are written deterministically (same inputs, same bytes), so DVC sees no change on a rerun.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from whisper_npu.io import StageError, read_json, sha256_file, write_json

log = logging.getLogger(__name__)

HF_DIR = "hf"
OPENAI_CKPT = "openai-whisper.pt"
MODEL_JSON = "model.json"
WEIGHTS = "model.safetensors"
# What a usable HF folder must hold (vocab.json/merges.txt: the slow tokenizer of transformers 4.x).
HF_REQUIRED = ("config.json", "generation_config.json", WEIGHTS, "tokenizer.json", "tokenizer_config.json",
               "vocab.json", "merges.txt", "preprocessor_config.json")
# The Whisper front-end: 16 kHz audio, 30 s windows, 80 mel bins (128 for large-v3: from the config).
SAMPLING_RATE = 16000


# ------------------------------------------------------------------------------------------ writing

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
    from whisper_npu.openai_ckpt import dims_from_config, save_openai_checkpoint
    from whisper_npu.ct2 import is_multilingual

    write_hf_folder(model_dir / HF_DIR, state_dict, config, generation_config, tokenizer_files)
    save_openai_checkpoint(model_dir / OPENAI_CKPT, state_dict, config)
    files = {p.relative_to(model_dir).as_posix(): sha256_file(p)
             for p in sorted(model_dir.rglob("*")) if p.is_file() and p.name != MODEL_JSON}
    meta = {**info, "multilingual": is_multilingual(int(config["vocab_size"])),
            "dims": dims_from_config(config), "files": files}
    write_json(model_dir / MODEL_JSON, meta)
    return meta


# ------------------------------------------------------------------------------------------ reading

def check_store(model_dir: str | Path) -> Path:
    """Raise StageError unless ``model_dir`` holds a complete store; returns it as a Path."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise StageError(f"{model_dir}: no reference model here; run the model stage first (`dvc repro model`)")
    missing = [n for n in (MODEL_JSON, OPENAI_CKPT) if not (model_dir / n).is_file()]
    missing += [f"{HF_DIR}/{n}" for n in HF_REQUIRED if not (model_dir / HF_DIR / n).is_file()]
    if missing:
        raise StageError(f"{model_dir}: incomplete reference model (missing {', '.join(missing)}); "
                         f"rerun the model stage (`dvc repro -f model`)")
    return model_dir


def model_info(model_dir: str | Path) -> dict[str, Any]:
    """model.json: name, source, id, revision, multilingual, dims, files (sha256 per file)."""
    return read_json(check_store(model_dir) / MODEL_JSON)


def hf_dir(model_dir: str | Path) -> Path:
    """The Hugging Face format folder inside the store."""
    return check_store(model_dir) / HF_DIR


def openai_checkpoint(model_dir: str | Path) -> Path:
    """Path of the openai-whisper checkpoint (``whisper.load_model(str(path), device="cpu")``)."""
    return check_store(model_dir) / OPENAI_CKPT


def load_processor(model_dir: str | Path) -> Any:
    """The WhisperProcessor (feature extractor + tokenizer) of the store, offline."""
    from transformers import WhisperProcessor

    return WhisperProcessor.from_pretrained(str(hf_dir(model_dir)), local_files_only=True)


def load_hf(model_dir: str | Path) -> tuple[Any, Any]:
    """(WhisperForConditionalGeneration in eval mode, float32 on CPU; WhisperProcessor), offline."""
    import torch
    from transformers import WhisperForConditionalGeneration

    folder = hf_dir(model_dir)
    try:
        # Weights are stored as float32, so the default dtype of any transformers version gives float32
        # (no torch_dtype/dtype argument: its name changed between 4.x and 5.x).
        model = WhisperForConditionalGeneration.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as e:
        raise StageError(f"{folder}: cannot load the Whisper model ({e}); rerun the model stage") from None
    model = model.to(torch.float32).eval()
    return model, load_processor(model_dir)
