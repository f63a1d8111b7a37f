"""Stage label@<lang>: transcription and English translation of each clip by the labeler model.

    python -m stages.label --lang ko_kr --audio data/audio --model models/reference \
        --out data/labels/ko_kr.jsonl

Reads the clips the audio stage listed in ``<audio>/<split>/<lang>/manifest.jsonl`` (never whatever sits in the
folder) for each split in ``labels.splits`` (the other folder is not read) and writes one row per clip, sorted by
id: ``id``, ``lang``, ``transcription``, ``translation``, ``labeler``. Clips are labelled ``labels.batch_size`` at
a time (one encoder pass per clip, batched decoding: whisper_npu/labeler.py), so memory does not grow with the
number of clips, and the rows do not depend on the batch size. dvc.yaml lists both split folders of the language
as dependencies (its deps are static), whatever ``labels.splits`` says.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from tqdm import tqdm

from whisper_npu.audio.prepare import read_wav
from whisper_npu.core import languages as langs
from whisper_npu.core.errors import StageError
from whisper_npu.core.files import atomic_output, read_jsonl, write_jsonl
from whisper_npu.core.seeds import clip_seed
from whisper_npu.core.stage import run_stage
from whisper_npu.device import describe, log_device, resolve
from whisper_npu.labeler import Labeler, LabelStats, check_language, label_batch, load_labeler
from whisper_npu.params.base import device_of, read, seed_of
from whisper_npu.params.labels import LabelsParams

log = logging.getLogger(__name__)


def read_split(folder: Path, lang: str, split: str) -> list[dict]:
    """The rows of one split folder's ``manifest.jsonl`` (``<audio>/<split>/<lang>``), sorted by id; a row of
    another language or split is an error (the folder is not the audio stage's)."""
    path = folder / "manifest.jsonl"
    manifest = read_jsonl(path)
    for m in manifest:
        if m.get("lang") != lang:
            raise StageError(f"{path}: row {m.get('id')} is {m.get('lang')!r}, not {lang}")
        if m.get("split") != split:
            raise StageError(f"{path}: row {m.get('id')} has split {m.get('split')!r}, not {split}; rerun the audio "
                             "stage")
    return sorted(manifest, key=lambda r: r["id"])


def label_rows(labeler: Labeler, lang: str, audio_dir: Path, manifest: list[dict], beam_size: int,
               seed: int, logprob_fallback: bool = False, decode_options: dict | None = None,
               batch_size: int = 8, stats: LabelStats | None = None) -> list[dict]:
    """Label every given manifest row of one language, ``batch_size`` clips at a time; rows sorted by id."""
    whisper_lang = langs.get(lang).whisper
    check_language(labeler, whisper_lang, lang)
    todo = sorted(manifest, key=lambda r: r["id"])
    rows = []
    with tqdm(total=len(todo), desc=f"label {lang}", unit="clip", leave=False) as bar:
        for start in range(0, len(todo), batch_size):
            batch = todo[start:start + batch_size]
            clips = []
            for m in batch:
                try:
                    clips.append((read_wav(audio_dir / m["file"]), clip_seed(seed, m["id"])))
                except (OSError, RuntimeError) as e:
                    raise StageError(f"{audio_dir / m['file']}: cannot read ({e}); rerun the audio stage") from None
            labels = label_batch(labeler, clips, whisper_lang, beam_size, logprob_fallback, stats,
                                 **(decode_options or {}))
            made_on = describe(labeler.device, labeler.fp16)   # nothing on the CPU
            rows += [{"id": m["id"], "lang": lang, "transcription": text, "translation": translation,
                      "labeler": labeler.name, **made_on} for m, (text, translation) in zip(batch, labels)]
            bar.update(len(batch))
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lang", required=True)
    parser.add_argument("--audio", type=Path, required=True,
                        help="audio root (data/audio): reads <split>/<lang>/manifest.jsonl")
    parser.add_argument("--model", type=Path, required=True, help="the model stage's folder (for labeler: reference)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args(argv)
    raw = read(args.params)
    seed, labels, device = seed_of(raw), LabelsParams.of(raw), device_of(raw)
    if args.lang not in langs.LANGUAGES:
        raise StageError(f"--lang {args.lang!r}: unknown language")
    todo = {split: read_split(args.audio / split / args.lang, args.lang, split) for split in labels.splits}
    if not labels.enabled:
        log.info("label@%s: labels.enabled = false: nothing labelled (no stage reads the labels)", args.lang)
        with atomic_output(args.out) as tmp:
            write_jsonl(tmp, [])
        return
    labeler = load_labeler(labels.labeler, args.model, resolve(device))
    log_device(f"label@{args.lang}", labeler.device, labeler.fp16)
    log.info("label@%s: %s with %s", args.lang, ", ".join(f"{len(m)} {split} clips" for split, m in todo.items()),
             labeler.name)
    decode_options = {"best_of": labels.best_of, "sample_len": labels.max_new_tokens,
                      "without_timestamps": labels.without_timestamps}
    stats = LabelStats()
    rows: list[dict] = []
    for split, manifest in todo.items():   # rows do not depend on the batches, so one folder at a time
        rows += label_rows(labeler, args.lang, args.audio / split / args.lang, manifest, labels.beam_size, seed,
                           labels.logprob_fallback, decode_options, labels.batch_size, stats)
    rows.sort(key=lambda r: r["id"])
    log.info("label@%s: %d encoder passes, %d batched decodes, %d fallback decodes, %d decoded on demand",
             args.lang, stats.encoder_passes, stats.decode_calls, stats.fallbacks, stats.on_demand)
    with atomic_output(args.out) as tmp:
        write_jsonl(tmp, rows)


if __name__ == "__main__":
    run_stage(main)
