"""The transcription stages' decodes: the fp32 reference (transcribe_fp32@<lang>) batched across clips
(``transcribe.batch_size``) vs batch 1, and the compiled ONNX INT8 decoder (transcribe_compiled) with its
clip-constant part run once per clip vs the whole graph per step.

    python -m bench.evaluate_speed                   # 16 real English clips, whisper-base, batch 8 vs 1, 3 repeats
    python -m bench.evaluate_speed --clips 24 --batch-size 16
    python -m bench.evaluate_speed --only compiled   # the compiled-decoder table only
    python -m bench.evaluate_speed --quick           # tiny random Whisper, synthetic clips: code path only

Both sides run ``whisper_npu.decoding.run.run_clips`` (the stages' own loop: features per batch, encoder per clip,
then the greedy decode of every (clip, task)) on the same clips in one process, alternating which goes first,
medians of the repeats; model loading is outside the timings. Only the torch reference batches: the ONNX and
.mxq decoders run batch 1 either way. The second table times the compiled decoder as the stage runs it
(whisper_npu/runtimes/onnxruntime.py: the cross-attention K/V of the encoder states computed once per clip)
against the whole compiled graph at every step, on the same clips: the decoder exported and quantized by the
pipeline's own code (params.yaml's compile.onnxruntime options, dynamic mode). Each table says whether both sides
gave the same tokens and stop reasons for every clip.

Real speech: Debian's Asterisk prompts (bench/label_speed.py's ``asterisk_english``); English clips have the
transcribe task only.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.common import (
    ROOT,
    Table,
    command,
    machine,
    machine_line,
    median,
    print_tables,
    reference_model,
    synth_audio,
    timed,
)

MODULE = "bench.evaluate_speed"


def _clips(args: argparse.Namespace, work: Path) -> list:
    """Evaluation clips: real English (Asterisk) or, with --quick, synthetic German (both tasks)."""
    from bench.label_speed import asterisk_english, write_audio_dir
    from whisper_npu.audio.clips import Clip, read_clips

    if args.quick:
        root = synth_audio(work, ["de_de"], 1, args.clips)
        return read_clips(root, ["de_de"], "evaluation")
    root = write_audio_dir(work / "audio", "en_us", asterisk_english(args.clips, 2.0, 30.0))
    audio_dir = root / "calibration" / "en_us"
    from whisper_npu.core.files import read_jsonl

    return [Clip(r["id"], "en_us", audio_dir / r["file"], float(r["duration"]), None, None, "asterisk")
            for r in sorted(read_jsonl(audio_dir / "manifest.jsonl"), key=lambda r: r["id"])]


def run(argv: Sequence[str] | None = None) -> list[Table]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=None, help="default: params.yaml transcribe.batch_size")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-new-tokens", type=int, default=None, help="decode cap (default: transcribe.max_new_tokens)")
    ap.add_argument("--only", choices=("reference", "compiled"), help="one of the two tables")
    ap.add_argument("--quick", action="store_true", help="tiny random Whisper, 3 synthetic clips, 1 repeat, 8 tokens")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = ap.parse_args(argv)
    if args.quick:
        args.clips, args.repeats = 3, 1
        args.max_new_tokens = args.max_new_tokens or 8

    from whisper_npu.audio.features import npu_features
    from whisper_npu.audio.prepare import read_wav
    from whisper_npu.decoding.greedy import DecodeConfig, tokenizer_text
    from whisper_npu.decoding.run import run_clips
    from whisper_npu.eval.score import FP32
    from whisper_npu.params.base import read
    from whisper_npu.params.transcribe import TranscribeParams
    from whisper_npu.runtimes.torch_ref import load_torch_backend

    m = machine()
    p = TranscribeParams.of(read(ROOT / "params.yaml"))
    if args.max_new_tokens:
        p = p.model_copy(update={"max_new_tokens": args.max_new_tokens})
    batch = args.batch_size or p.batch_size
    with tempfile.TemporaryDirectory(prefix="bench-evaluate-") as tmp:
        work = Path(tmp)
        clips = _clips(args, work)
        backend, processor = load_torch_backend(reference_model("tiny" if args.quick else "base", work))
        cfg = DecodeConfig.from_params(backend.model.generation_config, backend.model.config, p)
        to_text = tokenizer_text(processor.tokenizer)

        def features(clip):
            return npu_features(processor.feature_extractor, read_wav(clip.audio))

        def decode(bs: int, subset: Sequence = clips) -> list[dict]:
            return run_clips(FP32, backend, subset, features, cfg, to_text, bs)

        compiled = ([] if args.only == "reference" else
                    [_compiled_table(args, argv, work, clips, features, cfg, to_text, backend.model)])
        if args.only == "compiled":
            return compiled
        decode(batch, clips[:2])   # warm-up (allocator, thread pools)
        seconds, same = _side_by_side({f"batch {bs}": lambda bs=bs: decode(bs) for bs in (1, batch)}, args.repeats)
    audio_s = sum(c.duration for c in clips)
    name = "tiny random Whisper, code path only" if args.quick else "whisper-base, real English (Asterisk)"
    t = Table(f"Transcription, fp32 reference (transcribe_fp32): batched decode vs batch 1 ({name})",
              ["decode", "clips (audio)", "median s", "runs (s)", "clips/s", "speed-up", "same tokens + stops"],
              command=command(MODULE, argv))
    _add_rows(t, seconds, f"{len(clips)} ({audio_s:.0f} s)", len(clips), same)
    t.notes += [f"Machine: {machine_line(m, os.getloadavg()[0])}",
                "whisper_npu.decoding.run.run_clips on the torch fp32 reference (features, encoder per clip, greedy "
                f"decode of each (clip, task), params.yaml's transcribe options: max_new_tokens {p.max_new_tokens}, "
                f"repetition guard {p.repeat_max_ngram}/{p.repeat_times}); model load outside the timings; "
                f"alternating order, median of {args.repeats}; the ONNX / .mxq decoders run batch 1 on both sides "
                "and are left out"]
    return [t, *compiled]


def _side_by_side(sides: dict[str, Callable[[], list[dict]]], repeats: int) -> tuple[dict[str, list[float]], str]:
    """Seconds per repeat of each side (its decode records), alternating which goes first, and "k/n": how many
    (clip, task) decodes gave the same tokens and stop reason on every side."""
    seconds: dict[str, list[float]] = {k: [] for k in sides}
    outputs: dict[str, list] = {}
    for r in range(repeats):
        for name in (list(sides) if r % 2 == 0 else list(sides)[::-1]):
            recs, s = timed(sides[name])
            seconds[name].append(s)
            outputs[name] = sorted((x["id"], x["task"], x["tokens"], x["stop"]) for x in recs)
    first, *others = outputs.values()
    same = sum(all(o[i] == row for o in others) for i, row in enumerate(first))
    return seconds, f"{same}/{len(first)}"


def _add_rows(t: Table, seconds: dict[str, list[float]], clips_cell: Any, clips: int, same: str) -> None:
    """One row per side, speed-up against the first side."""
    base = median(next(iter(seconds.values())))
    for name, runs in seconds.items():
        t.add(name, clips_cell, median(runs), " ".join(f"{s:.1f}" for s in runs), clips / median(runs),
              f"{base / median(runs):.2f}x", same)


def _compiled_table(args, argv, work: Path, clips, features, cfg, to_text, model) -> Table:
    """The compiled ONNX INT8 decoder as the stage runs it (clip-constant part hoisted, LM head on the last
    position) vs the file's whole graph per token, and hoisting alone."""
    import shutil

    from bench.compiled_models import export_fp32
    from whisper_npu.artifacts import artifact
    from whisper_npu.compilers.onnxruntime.quantize import quantize
    from whisper_npu.decoding.run import run_clips
    from whisper_npu.eval.score import COMPILED
    from whisper_npu.params.base import read
    from whisper_npu.params.compile import CompileParams
    from whisper_npu.runtimes.onnxruntime import load_ort_backend

    m = machine()
    op = CompileParams.of(read(ROOT / "params.yaml")).onnxruntime
    enc_dir, dec_dir = export_fp32(model, work / "compiled", 17, "bench")
    for d in (enc_dir, dec_dir):
        fp32 = artifact(d)
        shutil.move(fp32, fp32.with_suffix(".fp32.onnx"))
        quantize(fp32.with_suffix(".fp32.onnx"), fp32, mode="dynamic", per_channel=op.per_channel,
                 op_types=op.op_types, nodes_to_exclude=op.nodes_to_exclude, keep_float=op.keep_float)
    stage = "hoisted + last-position LM head"
    sides = {"whole graph": load_ort_backend(enc_dir, dec_dir, hoist=False, last_position=False),
             "hoisted": load_ort_backend(enc_dir, dec_dir, last_position=False),
             stage: load_ort_backend(enc_dir, dec_dir)}
    run_clips(COMPILED, sides[stage], clips[:1], features, cfg, to_text, 1)   # warm-up
    seconds, same = _side_by_side(
        {name: lambda name=name: run_clips(COMPILED, sides[name], clips, features, cfg, to_text, 1)
         for name in sides}, args.repeats)
    feats = [features(c) for c in clips]
    encoder_s = median([timed(lambda: [sides[stage].encoder(f) for f in feats])[1] for _ in range(args.repeats)])
    base = median(seconds["whole graph"])
    t = Table("Transcription, compiled ONNX INT8 (dynamic) decoder (transcribe_compiled): as the stage runs it vs the "
              "whole graph per token",
              ["decoder", "clips", "median s", "runs (s)", "clips/s", "speed-up", "same tokens + stops"],
              command=command(MODULE, argv))
    _add_rows(t, seconds, len(clips), len(clips), same)
    t.notes += [f"Machine: {machine_line(m, os.getloadavg()[0])}",
                f"{len(sides[stage].decoder.boundary)} tensors hoisted (the cross-attention K/V projections); "
                "batch 1 as the stage runs the compiled model; times include features and the INT8 encoder, the same "
                f"on both sides: the encoder alone took {encoder_s:.1f} s of each run (median), so the rest "
                f"(features + decoder) went {base - encoder_s:.1f} s -> "
                f"{median(seconds['hoisted']) - encoder_s:.1f} s hoisted -> "
                f"{median(seconds[stage]) - encoder_s:.1f} s with the last-position LM head "
                f"({(base - encoder_s) / max(median(seconds[stage]) - encoder_s, 1e-9):.2f}x)"]
    return t


def main(argv: Sequence[str] | None = None) -> None:
    print_tables(run, argv)


if __name__ == "__main__":
    main()
