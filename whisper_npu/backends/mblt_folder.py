"""Mobilint's model folder for a compiled Whisper: what ``transformers-mblt`` (Mobilint's own loader,
``MobilintWhisperForConditionalGeneration.from_pretrained(folder)``) opens.

Layout, as Mobilint's ``runtime/python/stt/prepare_model.py`` (mblt-sdk-tutorial cb631ed) writes it:

* ``config.json``: the reference model's WhisperConfig plus ``model_type: mobilint-whisper``,
  ``architectures: [MobilintWhisperForConditionalGeneration]`` and, per component (``encoder_`` /
  ``decoder_`` prefix), the NPU fields transformers-mblt 0.6.1's ``MobilintEncoderDecoderConfigMixin``
  reads: ``mxq_path`` (file name, resolved against the folder), ``target_device``, ``dev_no``,
  ``core_mode`` and ``target_cores`` (single) or ``target_clusters`` (multi/global4/global8), matching
  the core modes whisper_npu/backends/mxq_runtime.py uses for the compile's recorded scheme;
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

from whisper_npu.backends import EMBED_POSITIONS, EMBED_TOKENS, read_provenance
from whisper_npu.backends.qbcompiler import mxq_call
from whisper_npu.io import StageError, read_json, write_json

MODEL_TYPE = "mobilint-whisper"
ARCHITECTURE = "MobilintWhisperForConditionalGeneration"
EMBEDDINGS = ("model.decoder.embed_tokens.weight", "model.decoder.embed_positions.weight")
HOST_FILES = ("generation_config.json", "preprocessor_config.json", "tokenizer.json", "tokenizer_config.json",
              "special_tokens_map.json", "vocab.json", "merges.txt", "normalizer.json", "added_tokens.json")


def npu_fields(prefix: str, mxq: str, scheme: str, target_device: str, component: str, dev_no: int = 0) -> dict:
    """transformers-mblt's per-component NPU keys for an MXQ compiled with ``scheme``."""
    out = {f"{prefix}mxq_path": mxq, f"{prefix}target_device": target_device, f"{prefix}dev_no": dev_no}
    if scheme in ("single", "all"):   # `all` holds every mode: single cores, as the .mxq runner
        core = "0:3" if component == "decoder" and not target_device.startswith("regulus") else "0:0"
        out.update({f"{prefix}core_mode": "single", f"{prefix}target_cores": [core]})
    elif scheme in ("global", "global4"):
        out.update({f"{prefix}core_mode": "global4", f"{prefix}target_clusters": [1]})
    elif scheme in ("multi", "global8"):
        out.update({f"{prefix}core_mode": scheme, f"{prefix}target_clusters": [0, 1]})
    else:
        raise StageError(f"inference scheme {scheme!r}: no transformers-mblt core mode for it")
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
