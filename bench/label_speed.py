"""The label stage vs openai-whisper ``transcribe()`` twice per clip (transcribe, then translate), as a new
user would label the clips: same model, same clips, same options, each as its own process (start-up and model
loading included), alternating, medians of repeats.

    python -m bench.label_speed                     # 8 real English + 8 synthetic German clips, 3 repeats
    python -m bench.label_speed --clips 16 --repeats 5
    python -m bench.label_speed --quick             # tiny random Whisper, 2 synthetic clips, 1 repeat: code path only

Real speech: Debian's Asterisk prompts (``asterisk-core-sounds-en-wav`` 1.6.1-1, fetched with ``apt-get
download`` into the whisper-npu cache, sha256 pinned), 8 kHz resampled to 16 kHz. Synthetic: espeak-ng
through the audio stage. The bound printed next to each ratio comes from the same run: the baseline's time
divided by the least the stage could take with one encoder pass per clip and batched greedy decoding, i.e.
process start + model load (as the baseline measured it) + n x encoder pass (batch 1) + the batched greedy
decode of both tasks (``labels.batch_size`` clips at a time), with no fallback decode at all.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bench.common import (
    ROOT,
    Table,
    command,
    default_params,
    machine,
    machine_line,
    median,
    print_tables,
    reference_model,
    synth_audio,
    write_params,
)


class AptUnavailable(RuntimeError):
    """This machine has no apt-get to fetch the Debian package with."""


def asterisk_english(n: int, min_seconds: float = 2.0, max_seconds: float = 30.0,
                     cache: Path | None = None) -> list[tuple[str, np.ndarray]]:
    """The first ``n`` (by name) real English prompts of ``min_seconds`` to ``max_seconds``, 16 kHz mono float32,
    from the pinned package the pipeline's ``asterisk`` source reads (whisper_npu/sources/asterisk.py fetches, checks
    its sha256 and unpacks it). Raises :class:`AptUnavailable` when the package is not cached and apt-get is
    missing."""
    from whisper_npu.audio.prepare import decode, to_mono_16k
    from whisper_npu.model.pypi_weights import cache_root
    from whisper_npu.sources import asterisk

    cache = cache or cache_root() / "debs"
    wav = asterisk.prompt_set("en_us").wav
    if not (cache / wav.filename).is_file() and shutil.which("apt-get") is None:
        raise AptUnavailable(f"apt-get not found: cannot fetch Debian's {wav.name}")
    deb = asterisk.fetch(wav, cache)
    voice = asterisk.SOUNDS / asterisk.prompt_set("en_us").voice
    unpacked = cache / f"{deb.stem}.unpacked"
    if not (unpacked / voice).is_dir():
        with tempfile.TemporaryDirectory(dir=cache) as tmp:
            asterisk.unpack([deb], Path(tmp))
            shutil.rmtree(unpacked, ignore_errors=True)
            Path(tmp).replace(unpacked)
            Path(tmp).mkdir()  # TemporaryDirectory removes it again
    clips = []
    for path in sorted((unpacked / voice).glob("*.wav")):
        samples, rate = decode(path)
        y = to_mono_16k(samples, rate)
        if min_seconds <= len(y) / 16000 <= max_seconds:
            clips.append((path.stem, y))
        if len(clips) == n:
            break
    return clips


def write_audio_dir(root: Path, lang: str, clips: Sequence[tuple[str, np.ndarray]]) -> Path:
    """Clips as the audio stage writes them, all calibration clips (``<root>/calibration/<lang>/``: wavs +
    manifest); returns the audio root."""
    from whisper_npu.audio.prepare import write_wav
    from whisper_npu.core.files import write_jsonl

    folder = root / "calibration" / lang
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (name, y) in enumerate(clips):
        cid = f"{lang}_{i:04d}"
        write_wav(folder / f"{cid}.wav", y)
        rows.append({"id": cid, "file": f"{cid}.wav", "lang": lang, "split": "calibration",
                     "duration": round(len(y) / 16000, 3), "text": None, "text_en": None, "source": {"name": name}})
    write_jsonl(folder / "manifest.jsonl", rows)
    return root


# ---------------------------------------------------------------------------------------------- baseline

def baseline(argv: Sequence[str]) -> None:
    """What a new user writes: load the model with openai-whisper, transcribe() and translate every clip
    (the stage's own options and seeds). Prints JSON: load seconds, labelling seconds, the labels."""
    started = time.perf_counter()
    p = argparse.ArgumentParser()
    for flag in ("--lang", "--audio", "--model", "--params", "--out"):
        p.add_argument(flag, required=True)
    args = p.parse_args(argv)
    from whisper_npu.audio.prepare import read_wav
    from whisper_npu.core import languages as langs
    from whisper_npu.core.files import read_jsonl, write_jsonl
    from whisper_npu.core.seeds import clip_seed
    from whisper_npu.labeler import label_clip, load_labeler
    from whisper_npu.params.base import read, seed_of
    from whisper_npu.params.labels import LabelsParams

    raw = read(args.params)
    lp, seed = LabelsParams.of(raw), seed_of(raw)
    lab = load_labeler(lp.labeler, Path(args.model))
    loaded = time.perf_counter()
    options = {"best_of": lp.best_of, "sample_len": lp.max_new_tokens, "without_timestamps": lp.without_timestamps}
    rows = []
    folder = Path(args.audio) / "calibration" / args.lang   # the clips the stage labels (labels.splits below)
    for m in sorted(read_jsonl(folder / "manifest.jsonl"), key=lambda r: r["id"]):
        text, translation = label_clip(lab, read_wav(folder / m["file"]), langs.get(args.lang).whisper,
                                       lp.beam_size, clip_seed(seed, m["id"]), lp.logprob_fallback, **options)
        rows.append({"id": m["id"], "transcription": text, "translation": translation})
    write_jsonl(Path(args.out), rows)
    print(json.dumps({"load_s": loaded - started, "label_s": time.perf_counter() - loaded}))


# ---------------------------------------------------------------------------------------------- bound

def components(model_dir: Path, audio_dir: Path, lang: str, batch_size: int, options: dict) -> tuple[float, float]:
    """(encoder seconds per clip at batch 1 (median), batched greedy decode seconds of both tasks for all clips)."""
    import torch

    from whisper_npu import labeler as L
    from whisper_npu.audio.prepare import read_wav
    from whisper_npu.core import languages as langs
    from whisper_npu.core.files import read_jsonl

    lab = L.load_labeler("reference", model_dir)
    audio = [read_wav(audio_dir / m["file"]) for m in sorted(read_jsonl(audio_dir / "manifest.jsonl"),
                                                             key=lambda r: r["id"])]
    whisper_lang = langs.get(lang).whisper
    encoder, decode = [], 0.0
    with torch.inference_mode():
        for start in range(0, len(audio), batch_size):
            mels = [L._first_window(lab.model, y)[0] for y in audio[start:start + batch_size]]
            feats = []
            for mel in mels:
                t0 = time.perf_counter()
                feats.append(lab.model.encoder(mel[None]))
                encoder.append(time.perf_counter() - t0)
            feats = torch.cat(feats)
            for task in ("transcribe", "translate"):
                _, dec = L._split_options(L.transcribe_options(whisper_lang, task, 1, **options))
                t0 = time.perf_counter()
                L._decode(lab.model, feats, L._decoding_options(dec, 0.0), [None] * len(mels))
                decode += time.perf_counter() - t0
    return median(encoder), decode


# ---------------------------------------------------------------------------------------------- run

def _timed_process(cmd: list[str]) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} ... failed: {done.stderr.strip()[-2000:]}")
    return elapsed, done


STATS = re.compile(r"(\d+) encoder passes, (\d+) batched decodes, (\d+) fallback decodes")


def compare(kind: str, lang: str, audio_root: Path, model_dir: Path, work: Path, repeats: int,
            max_new_tokens: int | None = None) -> list:
    from whisper_npu.core.files import read_jsonl

    audio_dir = audio_root / "calibration" / lang

    params = default_params()
    params["languages"] = [lang]
    params["labels"]["splits"] = ["calibration"]
    if max_new_tokens:
        params["labels"]["max_new_tokens"] = max_new_tokens
    p = write_params(work / f"params-{kind}.yaml", params)
    common = ["--lang", lang, "--audio", str(audio_root), "--model", str(model_dir), "--params", str(p)]
    stage_cmd = [sys.executable, "-m", "stages.label", *common, "--out", str(work / f"stage-{kind}.jsonl")]
    base_cmd = [sys.executable, "-m", "bench.label_speed", "--baseline", *common, "--out",
                str(work / f"baseline-{kind}.jsonl")]
    options = {"best_of": params["labels"]["best_of"], "sample_len": params["labels"]["max_new_tokens"],
               "without_timestamps": params["labels"]["without_timestamps"]}
    stage_s, base_s, load_s, enc_s, dec_s, fallbacks = [], [], [], [], [], 0
    for r in range(repeats):
        # alternate which goes first, so a trend in the machine's load hits both alike
        order = [("stage", stage_cmd), ("base", base_cmd)] if r % 2 == 0 else [("base", base_cmd), ("stage", stage_cmd)]
        for name, cmd in order:
            elapsed, done = _timed_process(cmd)
            if name == "stage":
                stage_s.append(elapsed)
                m = STATS.search(done.stderr)
                fallbacks = int(m.group(3)) if m else -1
            else:
                base_s.append(elapsed)
                load_s.append(elapsed - json.loads(done.stdout.strip().splitlines()[-1])["label_s"])
        # the bound's parts, measured in each repeat next to the two runs (same load)
        enc, dec = components(model_dir, audio_dir, lang, params["labels"]["batch_size"], options)
        enc_s.append(enc)
        dec_s.append(dec)
    n = len(read_jsonl(audio_dir / "manifest.jsonl"))
    enc, dec = median(enc_s), median(dec_s)
    floor = median(load_s) + n * enc + dec
    ours = {r["id"]: (r["transcription"], r["translation"]) for r in read_jsonl(work / f"stage-{kind}.jsonl")}
    theirs = {r["id"]: (r["transcription"], r["translation"]) for r in read_jsonl(work / f"baseline-{kind}.jsonl")}
    same = sum(ours[k] == theirs.get(k) for k in ours)
    audio_s = sum(r["duration"] for r in read_jsonl(audio_dir / "manifest.jsonl"))
    return [kind, f"{n} ({audio_s:.0f} s)", fallbacks, median(stage_s), median(base_s),
            median(base_s) / median(stage_s), median(base_s) / floor, enc, dec, median(load_s), f"{same}/{n}"]


def run(argv: Sequence[str] | None = None) -> list[Table]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=8, help="clips per kind of speech")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--synthetic-lang", default="de_de")
    ap.add_argument("--model", choices=("base", "tiny"), default="base",
                    help="base: real whisper-base (PyPI wheels); tiny: random tiny Whisper (code path only)")
    ap.add_argument("--max-new-tokens", type=int, default=None, help="labels.max_new_tokens (default: params.yaml)")
    ap.add_argument("--no-real", action="store_true", help="synthetic speech only (no Asterisk prompts, no apt)")
    ap.add_argument("--quick", action="store_true",
                    help="tiny random Whisper, 2 synthetic clips, 1 repeat, 8 tokens (code path only; no download)")
    ap.add_argument("--workdir", type=Path, default=None)
    argv = sys.argv[1:] if argv is None else list(argv)
    args = ap.parse_args(argv)
    if args.quick:
        args.clips, args.repeats, args.model, args.no_real = 2, 1, "tiny", True
        args.max_new_tokens = args.max_new_tokens or 8
    m = machine()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-labels-"))
    work.mkdir(parents=True, exist_ok=True)
    model_dir = reference_model(args.model, work)
    labels = default_params()["labels"]
    if args.max_new_tokens:
        labels["max_new_tokens"] = args.max_new_tokens
    table = Table("Label stage vs openai-whisper transcribe() twice per clip"
                  + ("" if args.model == "base" else " (tiny random Whisper, code path only)"),
                  ["speech", "clips (audio)", "fallback decodes", "label stage s", "transcribe() x2 s", "speedup",
                   "bound", "encoder s/clip", "batched greedy decode s", "start-up + load s", "same labels"],
                  command=command("bench.label_speed", argv))
    kinds = []
    if args.no_real:
        table.notes.append("real speech skipped: --no-real" + (" (--quick)" if args.quick else ""))
    else:
        try:
            real = asterisk_english(args.clips)
            kinds.append(("real (Asterisk en)", "en_us",
                          write_audio_dir(work / "audio-real", "en_us", real)))
        except AptUnavailable as e:
            table.notes.append(f"real speech skipped: {e}")
    # the audio stage's own output: both sides label its calibration folder (labels.splits: [calibration])
    synth_root = synth_audio(work, [args.synthetic_lang], args.clips, 1)
    kinds.append((f"synthetic (espeak-ng {args.synthetic_lang})", args.synthetic_lang, synth_root))
    for kind, lang, audio_root in kinds:
        table.add(*compare(kind.split()[0], lang, audio_root, model_dir, work, args.repeats, args.max_new_tokens))
    model_name = "whisper-base (the offline reference)" if args.model == "base" else "the tiny random Whisper"
    table.notes += [
        f"Machine: {machine_line(m, os.getloadavg()[0])}",
        f"{model_name} for both; params.yaml's labels options (greedy, best_of "
        f"{labels['best_of']}, {labels['max_new_tokens']} tokens, "
        f"without timestamps: {labels['without_timestamps']}, logprob_fallback: "
        f"{labels['logprob_fallback']}), batch_size {labels['batch_size']}; "
        f"median of {args.repeats} alternating runs, each a fresh process (start-up and model load included).",
        "bound = transcribe() x2 time / (start-up + load + clips x encoder s/clip + batched greedy decode s): the "
        "stage with no fallback decode and no other cost; its parts measured in each repeat next to the two runs "
        "(medians).",
        "same labels: clips whose transcription and translation equal transcribe()'s.",
    ]
    return [table]


def main(argv: Sequence[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--baseline"]:
        baseline(argv[1:])
        return
    print_tables(run, argv)


if __name__ == "__main__":
    main()
