"""Real-time factor of ``whisper-npu transcribe`` on one long real recording: the fp32 reference (torch) and the
compiled model (ONNX Runtime here, whatever the compile stage built) side by side, in the same run.

    python -m bench.transcribe_rtf                  # after `make demo`: models/reference, compiled/, 60 s of en_us
    python -m bench.transcribe_rtf --recording talk.wav
    python -m bench.transcribe_rtf --quick --model M --compiled C --audio A   # 20 s, one repeat (code path only)

The recording is the workspace's real English evaluation clips (Debian's Asterisk prompts, data/audio) joined with
half a second of silence until it lasts ``--seconds``, or ``--recording``. Each repeat runs both systems, in
alternating order, through the command's own code (``whisper_npu.cli``: window after window, timestamp rules, the
features per window); the table gives the median seconds, the real-time factor (seconds of compute per second of
audio) and their ratio, with the WER of the compiled text against the fp32 text.
"""
from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bench.common import ROOT, Table, command, machine, machine_line, median, print_tables

log = logging.getLogger(__name__)


def joined_recording(audio_root: Path, seconds: float, out: Path) -> Path:
    """The evaluation clips of en_us (sorted by id) with 0.5 s of silence between them, until ``seconds``."""
    import soundfile as sf

    from whisper_npu.audio.clips import read_clips
    from whisper_npu.audio.prepare import SAMPLE_RATE, read_wav

    parts, total = [], 0.0
    for clip in read_clips(audio_root, ["en_us"], "evaluation"):
        y = read_wav(clip.audio)
        parts += [y, np.zeros(SAMPLE_RATE // 2, np.float32)]
        total += len(y) / SAMPLE_RATE + 0.5
        if total >= seconds:
            break
    if total < seconds:
        log.warning("the en_us evaluation clips give %.1f s of audio, less than --seconds %.0f", total, seconds)
    sf.write(out, np.concatenate(parts), SAMPLE_RATE, subtype="PCM_16")
    return out


def run(argv: Sequence[str] | None = None) -> list[Table]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=ROOT / "models" / "reference", help="the reference model folder")
    p.add_argument("--compiled", type=Path, default=ROOT / "compiled", help="the compile stage's outputs")
    p.add_argument("--audio", type=Path, default=ROOT / "data" / "audio", help="the audio stage's root (en_us)")
    p.add_argument("--recording", type=Path, default=None, help="a recording of your own instead")
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="20 s, one repeat")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = p.parse_args(argv)
    if args.quick:
        args.seconds, args.repeats = 20.0, 1

    from whisper_npu.cli import load_system, read_audio, run_file
    from whisper_npu.eval.metrics import error_rate

    m = machine()
    with tempfile.TemporaryDirectory(prefix="bench-rtf-") as tmp:
        path = args.recording or joined_recording(args.audio, args.seconds, Path(tmp) / "recording.wav")
        audio = read_audio(path)
        systems = [load_system(name, args.model, args.compiled) for name in ("fp32", "compiled")]
        try:
            results: dict[str, list[dict]] = {s.name: [] for s in systems}
            for r in range(args.repeats):
                for s in systems if r % 2 == 0 else systems[::-1]:
                    log.info("repeat %d: %s", r, s.name)
                    results[s.name].append(run_file(s, audio, "transcribe", "en", path.name))
        finally:
            for s in systems:
                s.close()
    duration = results["fp32"][0]["duration"]
    seconds = {name: median([x["seconds"] for x in rs]) for name, rs in results.items()}
    texts = {name: rs[0]["text"] for name, rs in results.items()}
    labels = {s.name: s.label for s in systems}
    t = Table(f"whisper-npu transcribe: {duration:.1f} s of real English, fp32 vs compiled",
              ["system", "backend", "seconds (median)", "RTF", "vs fp32", "segments", "WER vs fp32 text"],
              command=command("bench.transcribe_rtf", argv), digits=3)
    for name in ("fp32", "compiled"):
        t.add(name, labels[name], seconds[name], seconds[name] / duration, seconds[name] / seconds["fp32"],
              len(results[name][0]["segments"]),
              None if name == "fp32" else error_rate([texts["fp32"]], [texts["compiled"]], "en_us"))
    t.notes += [f"{args.repeats} repeat(s), the two systems in alternating order; model loading outside the timings",
                f"recording: {path.name if args.recording else 'the en_us evaluation clips joined (Asterisk prompts)'}",
                f"machine: {machine_line(m)}"]
    return [t]


if __name__ == "__main__":
    print_tables(run)
