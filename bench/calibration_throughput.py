"""Calibration throughput: the tutorial's per-clip method against this project's calibration stages.

Both sides make the encoder AND the decoder calibration sets from the same clips, with the same model, in
the same process, timed in alternating order (baseline first on even repeats, project first on odd ones).
Model loading is outside the timings on both sides; writing the ``.npy`` files is inside.

* **tutorial** (:func:`tutorial_calibration`, the tutorial's calibration script, docs/tutorial.md): one clip
  at a time, features (encoder set), the encoder for the saved states, ``generate(features, task="transcribe")`` and
  ``generate(features, task="translate")`` (each runs the encoder again), both decoded to text, a random
  80/20 pick, ``tokenizer.normalize`` (the English normalizer), re-tokenized with the slow tokenizer's
  prefix, embeddings.
* **project**: ``stages.calibrate_encoder.build_encoder_set`` and ``stages.calibrate_decoder.write_decoder_set``
  exactly as the stages call them (task drawn first, only that task generated, encoder once per clip,
  batches of ``calibration.batch_size``).

``generate`` in the tutorial has no token cap (the model's 448 positions); the project caps at
``calibration.max_new_tokens``. ``--baseline-max-new-tokens`` gives the baseline the same cap, to
separate the method from the cap. The tables report generated tokens per clip for both sides.
"""
from __future__ import annotations

import argparse
import logging
import os
import random
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import ROOT, Table, command, median, print_tables, reference_model, synth_audio, timed

log = logging.getLogger(__name__)

MODULE = "bench.calibration_throughput"
DEFAULT_LANGUAGES = ("de_de", "en_us", "es_419")


# ---------------------------------------------------------------------------------------------- baseline

def text_tokens(ids: Sequence[int], eot: int) -> int:
    """Text tokens in a Whisper id sequence: every special token (SOT, language, task, timestamps, EOT)
    has an id >= EOT."""
    return sum(1 for t in ids if int(t) < eot)


def tutorial_calibration(model: Any, processor: Any, clips: Sequence[Any], out_dir: Path, seed: int = 0,
                         max_new_tokens: int | None = None) -> dict[str, int]:
    """What the tutorial's ``create_calibration.py`` does, clip by clip (encoder set, then decoder set).

    Kept faithful where it costs time (three encoder passes and two ``generate`` calls per clip, batch 1,
    decode -> normalize -> re-tokenize); its unseeded ``random`` is seeded here so runs are comparable.
    Returns counts (clips, generated tokens).
    """
    import torch

    from whisper_npu.audio import prepare as A
    from whisper_npu.calibration import sequences as cal

    rng = random.Random(seed)
    tok = processor.tokenizer
    decoder = model.model.decoder
    enc_dir, dec_dir = out_dir / "encoder", out_dir / "decoder"
    enc_dir.mkdir(parents=True, exist_ok=True)
    dec_dir.mkdir(parents=True, exist_ok=True)
    gen_kwargs = {"max_new_tokens": max_new_tokens} if max_new_tokens else {}

    # create_encoder_calibration_data: features per file, transposed to [1, 3000, 80], saved.
    for i, clip in enumerate(clips):
        feats = processor(A.read_wav(clip.audio), sampling_rate=A.SAMPLE_RATE, return_tensors="pt").input_features
        np.save(enc_dir / f"encoder_calib_{i:04d}.npy", np.ascontiguousarray(feats.transpose(1, 2).numpy()))

    # create_decoder_calibration_data: per file, encoder states + two generate calls.
    generated = 0
    for i, clip in enumerate(clips):
        lang = clip.whisper_lang
        feats = processor(A.read_wav(clip.audio), sampling_rate=A.SAMPLE_RATE, return_tensors="pt").input_features
        with torch.inference_mode():
            states = model.model.encoder(feats).last_hidden_state
            tr_ids = model.generate(feats, language=lang, task="transcribe", **gen_kwargs)
            tl_ids = model.generate(feats, language=lang, task="translate", **gen_kwargs)
        tr_ids = getattr(tr_ids, "sequences", tr_ids)
        tl_ids = getattr(tl_ids, "sequences", tl_ids)
        generated += (text_tokens(tr_ids[0].tolist(), tok.eos_token_id)
                      + text_tokens(tl_ids[0].tolist(), tok.eos_token_id))
        transcription = processor.batch_decode(tr_ids, skip_special_tokens=True)[0].strip()
        translation = processor.batch_decode(tl_ids, skip_special_tokens=True)[0].strip()
        if not transcription:
            continue
        use_translation = rng.random() < 0.2
        task = "translate" if use_translation and translation else "transcribe"
        target = translation if task == "translate" else transcription
        try:
            target = tok.normalize(target)
        except Exception:  # the tutorial's own fallback, kept for fidelity
            target = " ".join(target.lower().split())
        # The tutorial sets tokenizer.language/.task and tokenizes with special tokens (slow tokenizer); the
        # prefix ids are built explicitly here so the fast tokenizer does the same amount of work.
        ids = cal.prefix_ids(tok, lang, task) + tok.encode(target, add_special_tokens=False) + [tok.eos_token_id]
        ids = torch.tensor([ids[:4096]])
        with torch.inference_mode():
            hidden = decoder.embed_tokens(ids) + decoder.embed_positions.weight[: ids.shape[1]].unsqueeze(0)
        sample = dec_dir / f"sample_{i:04d}"
        sample.mkdir(exist_ok=True)
        np.save(sample / cal.ENCODER_STATES, states.numpy())
        np.save(sample / cal.DECODER_STATES, hidden.numpy())
    return {"clips": len(clips), "generated_tokens": generated}


# ---------------------------------------------------------------------------------------------- project

def project_calibration(model: Any, processor: Any, clips: Sequence[Any], out_dir: Path, cp: Any,
                        seed: int = 0) -> dict[str, int]:
    """The calibrate_encoder and calibrate_decoder stages' cores on ``clips`` (generated text, as the default)."""
    from stages import calibrate_decoder as dec_stage
    from stages import calibrate_encoder as enc_stage
    from whisper_npu.calibration import sequences as cal

    enc_stage.build_encoder_set(list(clips), processor.feature_extractor, model.config, out_dir / "encoder")
    tasks = cal.task_mix(clips, cp.translate_ratio, seed)
    samples = dec_stage.plan_samples(clips, tasks, "generated")
    (out_dir / "decoder").mkdir(parents=True, exist_ok=True)
    rows = dec_stage.write_decoder_set(model, processor, samples, out_dir / "decoder", cp, seed)
    eot = processor.tokenizer.eos_token_id
    return {"clips": len(clips), "generated_tokens": sum(text_tokens(r["tokens"], eot) for r in rows)}


def bound_parts(model: Any, processor: Any, clips: Sequence[Any], cp: Any, seed: int = 0) -> dict[str, float]:
    """The least the project's two sets could take, in parts: log-mel features once per clip, one encoder
    pass per clip (batch 1), and the batched greedy ``generate`` of each clip's drawn task only (the
    stage's batches of ``calibration.batch_size``, one language and task per batch); no file writes."""
    import torch

    from stages import calibrate_decoder as dec_stage
    from whisper_npu.audio.features import npu_features
    from whisper_npu.calibration import sequences as cal

    samples = dec_stage.plan_samples(clips, cal.task_mix(clips, cp.translate_ratio, seed), "generated")
    feats_s, encoder_s, generate_s = 0.0, [], 0.0
    for batch in dec_stage.batches(samples, cp.batch_size):
        feats, seconds = timed(lambda: [npu_features(processor.feature_extractor, dec_stage._audio(s))
                                        for s in batch])
        feats_s += seconds
        states = []
        with torch.inference_mode():
            for f in feats:
                out, seconds = timed(lambda: model.model.encoder(torch.from_numpy(f.transpose(0, 2, 1).copy()))
                                     .last_hidden_state)
                states.append(out)
                encoder_s.append(seconds)
        lang, task = batch[0].clip.whisper_lang, batch[0].task
        _, seconds = timed(lambda: dec_stage._generate(model, torch.cat(states), lang, task, cp.max_new_tokens))
        generate_s += seconds
    return {"features": feats_s, "encoder_per_clip": median(encoder_s), "generate": generate_s,
            "total": feats_s + sum(encoder_s) + generate_s}


# ---------------------------------------------------------------------------------------------- bench

def measure(model: Any, processor: Any, clips: Sequence[Any], cp: Any, repeats: int, workdir: Path,
            baseline_max_new_tokens: int | None) -> dict[str, dict[str, Any]]:
    """Seconds per repeat for both methods (alternating order), after one untimed warm-up clip each."""
    def run(name: str, subset: Sequence[Any]) -> tuple[dict, float]:
        out = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=workdir))
        try:
            if name == "tutorial":
                return timed(lambda: tutorial_calibration(model, processor, subset, out,
                                                          max_new_tokens=baseline_max_new_tokens))
            return timed(lambda: project_calibration(model, processor, subset, out, cp))
        finally:
            shutil.rmtree(out, ignore_errors=True)

    run("tutorial", clips[:1])
    run("project", clips[:1])
    results: dict[str, dict[str, Any]] = {"tutorial": {"seconds": []}, "project": {"seconds": []}, "bound": {}}
    parts: list[dict[str, float]] = []
    for r in range(repeats):
        order = ("tutorial", "project") if r % 2 == 0 else ("project", "tutorial")
        for name in order:
            counts, seconds = run(name, clips)
            log.info("repeat %d %s: %.2f s", r, name, seconds)
            results[name]["seconds"].append(seconds)
            results[name].update(counts)
        # the bound's parts, measured in each repeat next to the two runs (same load)
        parts.append(bound_parts(model, processor, clips, cp))
    results["bound"] = {k: median([p[k] for p in parts]) for k in parts[0]}
    return results


def table(results: dict[str, dict[str, Any]], cmd: str, model_name: str, cp: Any,
          baseline_max_new_tokens: int | None) -> Table:
    t = Table(f"Calibration throughput: tutorial method vs this project ({model_name})",
              ["method", "clips", "median s", "runs (s)", "clips/s", "text tokens generated/clip", "speed-up",
               "bound"], command=cmd)
    base = median(results["tutorial"]["seconds"])
    for name, label in (("tutorial", "tutorial create_calibration.py (per clip, 2x generate, 3 encoder passes)"),
                        ("project", f"calibrate_encoder + calibrate_decoder (batch {cp.batch_size})")):
        r = results[name]
        med = median(r["seconds"])
        t.add(label, r["clips"], med, " ".join(f"{s:.1f}" for s in r["seconds"]), r["clips"] / med,
              round(r["generated_tokens"] / max(1, r["clips"]), 1), f"{base / med:.2f}x",
              f"{base / results['bound']['total']:.2f}x" if name == "project" else "")
    b = results["bound"]
    cap = baseline_max_new_tokens or "none (model's 448 positions)"
    t.notes.append(f"bound = tutorial median / (features once per clip {b['features']:.1f} s + one encoder pass per "
                   f"clip {b['encoder_per_clip']:.2f} s x {results['project']['clips']} + batched generate of the "
                   f"drawn task only {b['generate']:.1f} s) = {b['total']:.1f} s: the project with no file writes "
                   "and no second feature pass; parts measured in each repeat next to the two runs (medians)")
    t.notes += [f"generate token cap: tutorial {cap}, project {cp.max_new_tokens} (calibration.max_new_tokens)",
                "both write the encoder and decoder .npy files; model loading is excluded from both; "
                "alternating order, median of the repeats; speed-up = tutorial median / method median"]
    return t


def run(argv: Sequence[str] | None = None) -> list[Table]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=("base", "tiny"), default="base",
                   help="base: real whisper-base (PyPI wheels); tiny: random tiny Whisper (code path only)")
    p.add_argument("--languages", nargs="+", default=list(DEFAULT_LANGUAGES))
    p.add_argument("--clips", type=int, default=12, help="clips in total, spread over the languages")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=None, help="calibration.batch_size (default: params.yaml)")
    p.add_argument("--max-new-tokens", type=int, default=None,
                   help="calibration.max_new_tokens for the project (default: params.yaml)")
    p.add_argument("--baseline-max-new-tokens", type=int, default=None,
                   help="cap the tutorial's generate too (default: uncapped, as the tutorial)")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--workdir", type=Path, default=None, help="scratch folder (default: a temp dir)")
    p.add_argument("--quick", action="store_true", help="tiny model, 2 clips, 1 repeat, 8 tokens")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = p.parse_args(argv)
    if args.quick:
        args.model, args.clips, args.repeats = "tiny", 2, 1
        args.max_new_tokens = args.max_new_tokens or 8
        args.baseline_max_new_tokens = args.baseline_max_new_tokens or 8

    import torch
    from transformers import WhisperProcessor

    from whisper_npu.audio.clips import read_clips
    from whisper_npu.model.store import hf_dir, load_hf
    from whisper_npu.params.base import read
    from whisper_npu.params.calibration import CalibrationParams

    torch.set_num_threads(args.threads)
    cp = CalibrationParams.of(read(ROOT / "params.yaml"))
    cp = cp.model_copy(update={k: v for k, v in (("batch_size", args.batch_size),
                                                 ("max_new_tokens", args.max_new_tokens)) if v})
    per_lang = -(-args.clips // len(args.languages))
    with tempfile.TemporaryDirectory(prefix="bench-calib-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        audio = synth_audio(workdir, args.languages, per_lang)
        clips = read_clips(audio, args.languages, "calibration", per_lang)[: args.clips]
        reference = reference_model(args.model, workdir)
        model, _ = load_hf(reference)
        # the tutorial's WhisperProcessor (called on audio, batch_decode); the project's side reads only its
        # feature_extractor and tokenizer, as the stages read those of store.load_processor
        processor = WhisperProcessor.from_pretrained(str(hf_dir(reference)), local_files_only=True)
        results = measure(model, processor, clips, cp, args.repeats, workdir, args.baseline_max_new_tokens)
    name = "whisper-base" if args.model == "base" else "tiny random Whisper, code path only"
    return [table(results, command(MODULE, argv), name, cp,
                  args.baseline_max_new_tokens)]


def main(argv: Sequence[str] | None = None) -> None:
    print_tables(run, argv)


if __name__ == "__main__":
    main()
