"""The reference-model store: its layout and reading it (every stage after ``model``; writer.py writes it).

Layout of ``models/reference/`` (``model_dir`` below)::

    hf/                   Hugging Face Whisper folder: config.json, generation_config.json,
                          model.safetensors (float32), tokenizer.json + vocab.json/merges.txt (fast and
                          slow tokenizers), tokenizer_config.json, special_tokens_map.json,
                          preprocessor_config.json
    openai-whisper.pt     the same weights for openai-whisper (whisper.load_model(path))
    model.json            {name, source, id, revision, multilingual, dims, files: {relative path: sha256}}
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from whisper_npu.core.errors import StageError
from whisper_npu.core.files import read_json

log = logging.getLogger(__name__)

HF_DIR = "hf"
OPENAI_CKPT = "openai-whisper.pt"
MODEL_JSON = "model.json"
WEIGHTS = "model.safetensors"
# What a usable HF folder must hold (vocab.json/merges.txt: the slow tokenizer of transformers 4.x).
HF_REQUIRED = ("config.json", "generation_config.json", WEIGHTS, "tokenizer.json", "tokenizer_config.json",
               "vocab.json", "merges.txt", "preprocessor_config.json")


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


def load_processor(model_dir: str | Path) -> Any:
    """The WhisperProcessor (feature extractor + tokenizer) of the store, offline."""
    from transformers import WhisperProcessor

    return WhisperProcessor.from_pretrained(str(hf_dir(model_dir)), local_files_only=True)


def load_configs(model_dir: str | Path) -> tuple[Any, Any]:
    """(WhisperConfig, GenerationConfig) of the store, without the weights."""
    from transformers import GenerationConfig, WhisperConfig

    folder = hf_dir(model_dir)
    return WhisperConfig.from_pretrained(str(folder)), GenerationConfig.from_pretrained(str(folder))


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
