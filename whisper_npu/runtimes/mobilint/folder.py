"""Mobilint's model folder for a compiled Whisper: what ``transformers-mblt`` (Mobilint's own loader) opens, with
``MobilintWhisperForConditionalGeneration.from_pretrained(folder)`` or through transformers' Auto classes.

Layout, as Mobilint's ``compilation/stt/prepare_model.py`` (mblt-sdk-tutorial f3f9d540) prepares it:

* ``config.json``: the reference model's WhisperConfig plus ``model_type: mobilint-whisper``,
  ``architectures: [MobilintWhisperForConditionalGeneration]``, ``auto_map`` (``AutoConfig``, ``AutoModel``,
  ``AutoModelForSpeechSeq2Seq``, ``AutoFeatureExtractor`` -> ``proxy_whisper.<class>``, the entries Mobilint's Hub
  folders carry; transformers-mblt's AGENTS.md, 7e03a45) and, per component (``encoder_`` / ``decoder_`` prefix),
  the NPU fields transformers-mblt 0.6.1's ``MobilintEncoderDecoderConfigMixin`` reads: ``mxq_path`` (file name,
  resolved against the folder), ``target_device``, ``dev_no``, ``core_mode`` and ``target_cores``
  (``"cluster:core"``, single, as Mobilint's prepare_model.py writes them) or ``target_clusters``
  (multi/global4/global8), from params ``npu`` (``[cluster, core]`` pairs) checked against
  the compiled scheme and target by the one placement table (whisper_npu/npu.py) the .mxq runner uses too;
* ``proxy_whisper.py``: the remote-code module ``auto_map`` names; it imports the three classes from
  transformers-mblt (as transformers-mblt's own ``models/whisper/proxy_whisper.py`` does), so
  ``AutoModelForSpeechSeq2Seq.from_pretrained(folder, trust_remote_code=True)`` works with transformers-mblt
  installed, and after ``transformers_mblt.register()`` without remote code;
* the two ``.mxq`` files (copied);
* ``model.safetensors``: only the host-side decoder embeddings ``model.decoder.embed_tokens.weight`` and
  ``model.decoder.embed_positions.weight`` (they are not inside the decoder MXQ);
* tokenizer, preprocessor and generation config files of the reference model.

Checked against transformers-mblt 0.6.1's real config, model and Auto-class registration (tests/test_mblt_folder.py,
with the wheel read from a download, not installed: it needs transformers < 5.18). NOT checked: loading the .mxq
files on an NPU.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from whisper_npu.artifacts import EMBED_POSITIONS, EMBED_TOKENS, read_provenance
from whisper_npu.core.errors import StageError
from whisper_npu.core.files import read_json, write_json
from whisper_npu.npu import Placement
from whisper_npu.runtimes.mobilint.runtime import compiled_target, placements

if TYPE_CHECKING:
    from whisper_npu.params.npu import NpuParams

MODEL_TYPE = "mobilint-whisper"
ARCHITECTURE = "MobilintWhisperForConditionalGeneration"
PROXY = "proxy_whisper"
AUTO_MAP = {"AutoConfig": f"{PROXY}.MobilintWhisperConfig", "AutoModel": f"{PROXY}.{ARCHITECTURE}",
            "AutoModelForSpeechSeq2Seq": f"{PROXY}.{ARCHITECTURE}",
            "AutoFeatureExtractor": f"{PROXY}.MobilintWhisperFeatureExtractor"}
PROXY_SOURCE = '''"""The classes config.json's auto_map names, from Mobilint's transformers-mblt (pip install
transformers-mblt). Written by whisper-npu (stages/mobilint_model.py), as Mobilint's Hub folders ship one."""
from transformers_mblt.models.whisper.configuration_whisper import MobilintWhisperConfig
from transformers_mblt.models.whisper.modeling_whisper import MobilintWhisperForConditionalGeneration
from transformers_mblt.models.whisper.processing_whisper import MobilintWhisperFeatureExtractor

__all__ = ["MobilintWhisperConfig", "MobilintWhisperFeatureExtractor", "MobilintWhisperForConditionalGeneration"]
'''
EMBEDDINGS = ("model.decoder.embed_tokens.weight", "model.decoder.embed_positions.weight")
HOST_FILES = ("generation_config.json", "preprocessor_config.json", "tokenizer.json", "tokenizer_config.json",
              "special_tokens_map.json", "vocab.json", "merges.txt", "normalizer.json", "added_tokens.json")


def npu_fields(prefix: str, mxq: str, where: Placement, target_device: str) -> dict:
    """transformers-mblt's per-component NPU keys for an MXQ placed at ``where``."""
    out = {f"{prefix}mxq_path": mxq, f"{prefix}target_device": target_device, f"{prefix}dev_no": where.dev_no,
           f"{prefix}core_mode": where.core_mode}
    if where.core_mode == "single":
        out[f"{prefix}target_cores"] = where.target_cores()
    else:
        out[f"{prefix}target_clusters"] = list(where.clusters)
    return out


def write_folder(out: Path, hf_dir: Path, enc_dir: Path, dec_dir: Path, npu: NpuParams) -> dict:
    """Write the folder into ``out`` (must not exist); returns its config.json data."""
    from safetensors.numpy import save_file

    for d in (enc_dir, dec_dir):
        if read_provenance(d).get("backend") != "qbcompiler":
            raise StageError(f"{d}: compiled with {read_provenance(d).get('backend')!r}, not qbcompiler: no .mxq "
                             "files for Mobilint's model folder")
    where = placements(enc_dir, dec_dir, npu)
    config = read_json(hf_dir / "config.json")
    out.mkdir(parents=True)
    config.update(model_type=MODEL_TYPE, architectures=[ARCHITECTURE], auto_map=dict(AUTO_MAP))
    for component, d in (("encoder", enc_dir), ("decoder", dec_dir)):
        mxq = read_provenance(d)["artifacts"]["model"]
        shutil.copyfile(d / mxq, out / mxq)
        config.update(npu_fields(f"{component}_", mxq, where[component], compiled_target(d)))
    write_json(out / "config.json", config)
    (out / f"{PROXY}.py").write_text(PROXY_SOURCE, encoding="utf-8")
    tables = [np.ascontiguousarray(np.load(dec_dir / n), dtype=np.float32) for n in (EMBED_TOKENS, EMBED_POSITIONS)]
    save_file(dict(zip(EMBEDDINGS, tables)), str(out / "model.safetensors"))
    for name in HOST_FILES:
        if (hf_dir / name).is_file():
            shutil.copyfile(hf_dir / name, out / name)
    return config
