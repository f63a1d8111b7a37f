"""Mobilint's model folder for a compiled Whisper: what ``transformers-mblt`` (Mobilint's own loader,
``MobilintWhisperForConditionalGeneration.from_pretrained(folder)``) opens.

Layout, as Mobilint's ``runtime/python/stt/prepare_model.py`` (mblt-sdk-tutorial cb631ed) writes it:

* ``config.json``: the reference model's WhisperConfig plus ``model_type: mobilint-whisper``,
  ``architectures: [MobilintWhisperForConditionalGeneration]`` and, per component (``encoder_`` /
  ``decoder_`` prefix), the NPU fields transformers-mblt 0.6.1's ``MobilintEncoderDecoderConfigMixin``
  reads: ``mxq_path`` (file name, resolved against the folder), ``target_device``, ``dev_no``,
  ``core_mode`` and ``target_cores`` (single) or ``target_clusters`` (multi/global4/global8), from the one
  placement table (whisper_npu/npu.py) the .mxq runner uses too;
* the two ``.mxq`` files (copied);
* ``model.safetensors``: only the host-side decoder embeddings ``model.decoder.embed_tokens.weight`` and
  ``model.decoder.embed_positions.weight`` (they are not inside the decoder MXQ);
* tokenizer, preprocessor and generation config files of the reference model.

Keys checked against transformers-mblt 0.6.1's source and its real config class (tests/test_mblt_folder.py,
with the wheel read from a download, not installed: it needs transformers < 5.18). NOT checked: loading
the .mxq files on an NPU.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from whisper_npu.artifacts import EMBED_POSITIONS, EMBED_TOKENS, read_provenance
from whisper_npu.core.errors import StageError
from whisper_npu.core.files import read_json, write_json
from whisper_npu.npu import placement
from whisper_npu.runtimes.mobilint.runtime import mxq_call

MODEL_TYPE = "mobilint-whisper"
ARCHITECTURE = "MobilintWhisperForConditionalGeneration"
EMBEDDINGS = ("model.decoder.embed_tokens.weight", "model.decoder.embed_positions.weight")
HOST_FILES = ("generation_config.json", "preprocessor_config.json", "tokenizer.json", "tokenizer_config.json",
              "special_tokens_map.json", "vocab.json", "merges.txt", "normalizer.json", "added_tokens.json")


def npu_fields(prefix: str, mxq: str, scheme: str, target_device: str, component: str, dev_no: int = 0) -> dict:
    """transformers-mblt's per-component NPU keys for an MXQ compiled with ``scheme``."""
    out = {f"{prefix}mxq_path": mxq, f"{prefix}target_device": target_device, f"{prefix}dev_no": dev_no}
    try:
        where = placement(scheme, component, target_device)
    except ValueError as e:
        raise StageError(f"inference scheme {scheme!r}: no transformers-mblt core mode for it ({e})") from None
    out[f"{prefix}core_mode"] = where.core_mode
    if where.cores:
        out[f"{prefix}target_cores"] = list(where.cores)
    else:
        out[f"{prefix}target_clusters"] = list(where.clusters)
    return out


def _calls(compiled: Path) -> tuple[dict, dict]:
    prov = read_provenance(compiled)
    if prov.get("backend") != "qbcompiler":
        raise StageError(f"{compiled}: compiled with {prov.get('backend')!r}, not qbcompiler: no .mxq files for "
                         "Mobilint's model folder")
    return mxq_call(compiled), prov["artifacts"]


def write_folder(out: Path, hf_dir: Path, enc_dir: Path, dec_dir: Path) -> dict:
    """Write the folder into ``out`` (must not exist); returns its config.json data."""
    from safetensors.numpy import save_file

    config = read_json(hf_dir / "config.json")
    out.mkdir(parents=True)
    config.update(model_type=MODEL_TYPE, architectures=[ARCHITECTURE])
    for component, d in (("encoder", enc_dir), ("decoder", dec_dir)):
        calls, artifacts = _calls(d)
        mxq = artifacts["model"]
        shutil.copyfile(d / mxq, out / mxq)
        config.update(npu_fields(f"{component}_", mxq, calls.get("inference_scheme") or "single",
                                 calls.get("target_device", "aries-rb"), component))
    write_json(out / "config.json", config)
    tables = [np.ascontiguousarray(np.load(dec_dir / n), dtype=np.float32) for n in (EMBED_TOKENS, EMBED_POSITIONS)]
    save_file(dict(zip(EMBEDDINGS, tables)), str(out / "model.safetensors"))
    for name in HOST_FILES:
        if (hf_dir / name).is_file():
            shutil.copyfile(hf_dir / name, out / name)
    return config
