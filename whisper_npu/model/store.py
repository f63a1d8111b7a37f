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
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
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


@dataclass(frozen=True)
class MelSettings:
    """What the feature code (whisper_npu/audio/features.py ``log_mel``) reads of transformers'
    ``WhisperFeatureExtractor``: the same attribute names and the same filterbank, built by the same call
    (transformers.audio_utils ``mel_filter_bank`` with the extractor's arguments) without importing the extractor's
    module, which imports torch."""
    sampling_rate: int
    n_fft: int
    hop_length: int
    n_samples: int
    mel_filters: Any   # [n_fft // 2 + 1, feature_size] float64, as the extractor's


@dataclass(frozen=True)
class Processor:
    """The parts of a WhisperProcessor the stages use: ``feature_extractor`` (:class:`MelSettings`) and
    ``tokenizer`` (transformers' WhisperTokenizer of the store)."""
    feature_extractor: MelSettings
    tokenizer: Any


def load_processor(model_dir: str | Path) -> Processor:
    """Feature settings and tokenizer of the store, offline. Read from preprocessor_config.json and the tokenizer
    files directly: transformers' WhisperProcessor imports torch and its processing machinery (about 4 s of every
    stage that decodes); a test checks both parts equal the WhisperProcessor's."""
    from transformers import WhisperTokenizer
    from transformers.audio_utils import mel_filter_bank

    folder = hf_dir(model_dir)
    pre = read_json(folder / "preprocessor_config.json")
    try:
        n_fft, rate = int(pre["n_fft"]), int(pre["sampling_rate"])
        fe = MelSettings(sampling_rate=rate, n_fft=n_fft, hop_length=int(pre["hop_length"]),
                         n_samples=int(pre["n_samples"]),
                         mel_filters=mel_filter_bank(num_frequency_bins=1 + n_fft // 2,
                                                     num_mel_filters=int(pre["feature_size"]), min_frequency=0.0,
                                                     max_frequency=8000.0, sampling_rate=rate, norm="slaney",
                                                     mel_scale="slaney"))
    except (KeyError, TypeError, ValueError) as e:
        raise StageError(f"{folder / 'preprocessor_config.json'}: not a Whisper feature extractor config ({e!r}); "
                         "rerun the model stage") from None
    return Processor(fe, WhisperTokenizer.from_pretrained(str(folder), local_files_only=True))


def load_configs(model_dir: str | Path) -> tuple[SimpleNamespace, dict[str, Any]]:
    """(config.json as attributes, generation_config.json as a dict) of the store, without the weights: the ids and
    sizes the decoding loop and the runtimes read. Plain JSON, no transformers config classes (their module imports
    torch): the store's config.json is complete (writer.py writes the whole ``to_dict()``), so no class default is
    needed."""
    folder = hf_dir(model_dir)
    return SimpleNamespace(**read_json(folder / "config.json")), dict(read_json(folder / "generation_config.json"))


def load_hf(model_dir: str | Path) -> tuple[Any, Any]:
    """(WhisperForConditionalGeneration in eval mode, float32 on CPU; Processor: feature settings and tokenizer),
    offline."""
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
