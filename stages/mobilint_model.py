"""Mobilint's model folder (what transformers-mblt loads) from the compiled .mxq files.

With ``compile.backend`` resolved to qbcompiler, ``--out`` (compiled/mobilint-whisper/) holds config.json
(``model_type: mobilint-whisper``, ``auto_map``, the mxq paths and each component's placement from params ``npu``),
``proxy_whisper.py``, both .mxq files, ``model.safetensors`` with the host-side embeddings, and the
tokenizer/preprocessor/generation files; see whisper_npu/runtimes/mobilint/folder.py. With the onnxruntime backend
there is nothing for Mobilint's loader: the folder holds only NOT_BUILT.txt saying so (a DVC output must exist).

On the NPU host (``pip install transformers-mblt``, in its own environment: it needs transformers < 5.18)::

    import transformers_mblt
    from transformers import AutoModelForSpeechSeq2Seq, AutoProcessor
    transformers_mblt.register()   # or from_pretrained(..., trust_remote_code=True): the folder's proxy_whisper.py
    model = AutoModelForSpeechSeq2Seq.from_pretrained("compiled/mobilint-whisper")
    processor = AutoProcessor.from_pretrained("compiled/mobilint-whisper")
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from whisper_npu.artifacts import compiled_backend_name
from whisper_npu.core.files import atomic_output
from whisper_npu.core.stage import run_stage
from whisper_npu.params.base import read
from whisper_npu.params.npu import NpuParams
from whisper_npu.runtimes.mobilint import folder as mblt_folder

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--params", type=Path, default=Path("params.yaml"))
    p.add_argument("--model", type=Path, required=True, help="reference model store (models/reference)")
    p.add_argument("--encoder", type=Path, required=True, help="compiled/encoder")
    p.add_argument("--decoder", type=Path, required=True, help="compiled/decoder")
    p.add_argument("--out", type=Path, required=True, help="compiled/mobilint-whisper")
    a = p.parse_args(argv)
    npu = NpuParams.of(read(a.params))   # bad params fail before any input is read
    backend = compiled_backend_name(a.encoder, a.decoder)
    with atomic_output(a.out) as tmp:
        if backend != "qbcompiler":
            tmp.mkdir()
            (tmp / "NOT_BUILT.txt").write_text(
                f"compiled with {backend}: no .mxq files, so no folder for Mobilint's transformers-mblt.\n"
                "Compile with compile.backend = qbcompiler to get one.\n", encoding="utf-8")
            log.info("%s: %s backend, nothing for transformers-mblt", a.out, backend)
            return
        mblt_folder.write_folder(tmp, a.model / "hf", a.encoder, a.decoder, npu)
    log.info("wrote Mobilint's model folder %s", a.out)


if __name__ == "__main__":
    run_stage(main)
