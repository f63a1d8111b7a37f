"""Stage transcribe_fp32@<lang>: the fp32 reference (Hugging Face Whisper in torch) on one language's evaluation
clips (never calibration clips), every task each clip has, through the one greedy decode loop.

    python -m stages.transcribe_fp32 --lang en_us --audio data/audio/evaluation/en_us --model models/reference \
        --out data/transcripts/fp32/en_us.jsonl --timing data/transcripts/fp32/en_us.timing.json

It reads the reference model, the language's evaluation folder and the ``transcribe`` decode options, nothing
else: a compile or calibration experiment (a change of the calibration clips included) never reruns it, and an NPU
host reuses it (pulled). ``transcribe.batch_size`` clips are decoded together (same tokens as one at a time). The
transcripts are reproducible; their timings (wall-clock, for real-time factors) go to ``--timing``.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from whisper_npu.audio.clips import Clip, read_folder
from whisper_npu.audio.features import npu_features
from whisper_npu.audio.prepare import read_wav
from whisper_npu.core.files import atomic_output
from whisper_npu.core.stage import run_stage
from whisper_npu.decoding.greedy import DecodeConfig, tokenizer_text
from whisper_npu.decoding.run import run_clips
from whisper_npu.device import log_device, resolve
from whisper_npu.eval import transcripts
from whisper_npu.params.base import device_of, read, seed_of
from whisper_npu.params.transcribe import TranscribeParams

log = logging.getLogger(__name__)

FP32 = "fp32"


def write_outputs(out: Path, timing: Path, records: list[dict], clips: list[Clip], device: str = "cpu") -> None:
    """The transcripts and their timings (with where they were measured), each atomically."""
    with atomic_output(out) as tmp:
        transcripts.write(tmp, records, clips)
    with atomic_output(timing) as tmp:
        transcripts.write_timings(tmp, records, device)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lang", required=True)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--model", type=Path, required=True, help="reference model store (models/reference)")
    parser.add_argument("--audio", type=Path, required=True,
                        help="the language's evaluation folder (data/audio/evaluation/<lang>)")
    parser.add_argument("--out", type=Path, required=True, help="transcripts (JSONL)")
    parser.add_argument("--timing", type=Path, required=True, help="seconds per clip and task (JSON)")
    args = parser.parse_args(argv)
    raw = read(args.params)
    seed, p, device = seed_of(raw), TranscribeParams.of(raw), device_of(raw)
    clips = read_folder(args.audio, args.lang, "evaluation")
    log.info("transcribe_fp32@%s: %d evaluation clips", args.lang, len(clips))

    import torch

    from whisper_npu.runtimes.torch_ref import load_torch_backend

    torch.manual_seed(seed)  # greedy decoding draws nothing; set for any library that might
    fp32, processor = load_torch_backend(args.model, resolve(device))
    log_device(f"transcribe_fp32@{args.lang}", str(fp32.model.device))

    def features(clip: Clip):
        return npu_features(processor.feature_extractor, read_wav(clip.audio))

    cfg = DecodeConfig.from_params(fp32.model.generation_config, fp32.model.config, p)
    records = run_clips(FP32, fp32, clips, features, cfg,
                        tokenizer_text(processor.tokenizer), p.batch_size)
    write_outputs(args.out, args.timing, records, clips, str(fp32.model.device))


if __name__ == "__main__":
    run_stage(main)
