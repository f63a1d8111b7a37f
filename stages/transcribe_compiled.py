"""Stage transcribe_compiled: the compiled model (whatever the compile stage built: ONNX Runtime INT8 here, the
``.mxq`` files on a Mobilint NPU host) on the evaluation clips of the listed languages, through the same greedy
decode loop as the fp32 reference.

    python -m stages.transcribe_compiled --model models/reference --encoder compiled/encoder \
        --decoder compiled/decoder --audio data/audio --out data/transcripts/compiled \
        --timing data/transcripts/compiled.timing.json

``--out`` holds ``<lang>.jsonl`` per language and ``run.json``: whether the compiled model ran here (when it cannot,
e.g. ``.mxq`` files without Mobilint's runtime or NPU, the reason, and no transcripts), ``device``: what ran it (the
runtime and version; on an NPU the target and each component's ``dev_no``, ``core_mode`` and ``cores``, also when
it could not run: where it was asked to), and the sizes of the fp32 weights and of the compiled artifacts. It reads
the compiled artifacts, the reference model's config and tokenizer, the evaluation clips
(``<audio>/evaluation/<lang>/``), the ``transcribe`` decode options and ``npu`` (placement; with
``npu.require_compiled`` a compiled model that cannot run here fails the stage with the reason instead of being
recorded as not run).
"""
from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

from whisper_npu.artifacts import CompiledNotRunnable, compiled_backend_name
from whisper_npu.audio.clips import Clip, read_clips
from whisper_npu.audio.features import npu_features
from whisper_npu.audio.prepare import read_wav
from whisper_npu.core.errors import StageError
from whisper_npu.core.files import atomic_output, write_json
from whisper_npu.core.stage import run_stage
from whisper_npu.decoding.greedy import DecodeConfig, tokenizer_text
from whisper_npu.decoding.run import run_clips
from whisper_npu.eval import transcripts
from whisper_npu.model.store import load_configs, load_processor
from whisper_npu.params.base import languages_of, read
from whisper_npu.params.npu import NpuParams
from whisper_npu.params.transcribe import TranscribeParams
from whisper_npu.runtimes.registry import load_compiled

log = logging.getLogger(__name__)

COMPILED = "compiled"
RUN = "run.json"


def _bytes(paths: Sequence[Path]) -> int:
    return sum(p.stat().st_size for p in paths if p.is_file())


def model_sizes(model_dir: Path, enc_dir: Path, dec_dir: Path) -> dict[str, int | float | None]:
    """Bytes of the fp32 weights and of the compiled artifacts: the models themselves (.onnx/.mxq and any
    external data), the CPU-side embedding tables (.npy, float32: not inside the NPU model), and the total.
    provenance/JSON files are not counted."""
    fp32 = _bytes([model_dir / "hf" / "model.safetensors"])
    files = [p for d in (enc_dir, dec_dir) for p in sorted(d.rglob("*")) if p.suffix != ".json"]
    tables = _bytes([p for p in files if p.suffix == ".npy"])
    models = _bytes([p for p in files if p.suffix != ".npy"])
    return {"fp32_bytes": fp32, "compiled_model_bytes": models, "embedding_table_bytes": tables,
            "compiled_bytes": models + tables,
            "compression": round(fp32 / (models + tables), 6) if models + tables else None}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--model", type=Path, required=True, help="reference model store (models/reference)")
    parser.add_argument("--encoder", type=Path, required=True, help="compiled encoder folder")
    parser.add_argument("--decoder", type=Path, required=True, help="compiled decoder folder")
    parser.add_argument("--audio", type=Path, required=True,
                        help="audio root (data/audio): reads evaluation/<lang>/manifest.jsonl")
    parser.add_argument("--out", type=Path, required=True, help="folder: <lang>.jsonl per language + run.json")
    parser.add_argument("--timing", type=Path, required=True, help="seconds per clip and task (JSON)")
    args = parser.parse_args(argv)
    raw = read(args.params)
    langs, p, npu = languages_of(raw), TranscribeParams.of(raw), NpuParams.of(raw)
    clips = read_clips(args.audio, langs, "evaluation")
    log.info("transcribe_compiled: %d evaluation clips in %d languages", len(clips), len(langs))

    config, generation = load_configs(args.model)
    processor = load_processor(args.model)
    cfg = DecodeConfig.from_params(generation, config, p)
    records: list[dict] = []
    try:
        compiled = load_compiled(args.encoder, args.decoder, config, npu)
        run, device = {"status": "run", "reason": None}, getattr(compiled, "device", None)
    except CompiledNotRunnable as e:
        if npu.require_compiled:
            raise StageError(f"npu.require_compiled = true and the compiled model cannot run here: {e}") from None
        # e.g. .mxq files on a host without Mobilint's runtime or NPU: the score stage scores fp32 only
        log.warning("compiled model not run (npu.require_compiled = false): %s", e)
        compiled, run, device = None, {"status": "not_run", "reason": str(e)}, e.device
    log.info("compiled model %s: %s", "runs on" if compiled is not None else "would run on", device)
    if compiled is not None:
        def features(clip: Clip):
            return npu_features(processor.feature_extractor, read_wav(clip.audio))

        try:
            records = run_clips(COMPILED, compiled, clips, features, cfg, tokenizer_text(processor.tokenizer),
                                p.batch_size)
        finally:
            compiled.close()
    backend = (getattr(compiled, "name", None) if compiled is not None else None) or \
        compiled_backend_name(args.encoder, args.decoder)
    with atomic_output(args.out) as tmp:
        tmp.mkdir()
        for lang in langs:
            if compiled is not None:
                transcripts.write(tmp / f"{lang}.jsonl", [r for r in records if r["lang"] == lang],
                                  [c for c in clips if c.lang == lang])
        write_json(tmp / RUN, {"compiled_run": run, "backend": backend, "device": device,
                               "sizes": model_sizes(args.model, args.encoder, args.decoder)})
    with atomic_output(args.timing) as tmp:
        transcripts.write_timings(tmp, records)


if __name__ == "__main__":
    run_stage(main)
