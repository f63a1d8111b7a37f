"""Stage audio@<lang>: one language's clips as 16 kHz mono WAV, a manifest and a calibration/evaluation split.

    python -m stages.audio --lang ko_kr --out data/audio/ko_kr

Writes ``<out>/<lang>_<i:04d>.wav`` (the tutorial's names), ``manifest.jsonl`` (one row per kept clip),
``skipped.jsonl`` (bad clips, dropped pieces and files the source did not offer, with the reason) and
``split.json``. The params that apply are ``audio.per_language.<lang>`` over the ``audio`` defaults
(source, clips, eval_clips, selection).

The split is made over *source* clips: ``audio.eval_clips`` of them (a seeded choice) go to
evaluation with all their pieces, the rest to calibration, so the pieces of one long clip never
straddle the split. The stage fails when more than ``audio.max_skipped_fraction`` of the selected
source clips is unusable, or when no calibration clip would be left.
"""
from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from whisper_npu.audio import prepare as A
from whisper_npu.core.errors import StageError
from whisper_npu.core.files import atomic_output, write_json, write_jsonl
from whisper_npu.core.seeds import lang_rng
from whisper_npu.core.stage import run_stage
from whisper_npu.params.audio import AudioParams
from whisper_npu.params.base import ParamsError, read, seed_of
from whisper_npu.sources.base import SourceClip
from whisper_npu.sources.loader import get_clips

log = logging.getLogger(__name__)


@dataclass
class Clip:
    """A kept piece ready to write: its manifest row (without split) and its samples."""
    row: dict
    samples: np.ndarray
    group: int              # index of the source clip it came from


def process(lang: str, sources: list[SourceClip], long_clips: str) -> tuple[list[Clip], list[dict]]:
    """Validate and cut the selected clips; return the kept pieces (numbered in order) and skipped rows."""
    kept: list[Clip] = []
    skipped: list[dict] = []
    for group, src in enumerate(tqdm(sources, desc=f"audio {lang}", unit="clip", leave=False)):
        try:
            prep = A.prepare(src.read(), long_clips)
        except A.BadAudio as e:
            skipped.append({"source_ref": src.ref, "reason": str(e)})
            continue
        for label, reason in prep.dropped:
            skipped.append({"source_ref": f"{src.ref}#{label}", "reason": reason})
        for piece in prep.pieces:
            cid = f"{lang}_{len(kept):04d}"
            info = dict(prep.info)
            if prep.cut:
                info["piece"] = [piece.start, piece.end]
            row = {"id": cid, "file": f"{cid}.wav", "lang": lang, "duration": round(piece.duration, 3),
                   # a cut clip's text covers audio that is not in this piece
                   "text": None if prep.cut else src.text, "text_en": None if prep.cut else src.text_en,
                   "source": {**src.source, "audio": info}}
            kept.append(Clip(row, piece.samples, group))
    return kept, skipped


def split(groups: list[int], eval_clips: int, seed: int, lang: str) -> set[int]:
    """The source-clip groups held out for evaluation: a seeded choice of ``eval_clips`` of them."""
    unique = sorted(set(groups))
    if len(unique) <= eval_clips:
        raise StageError(f"audio@{lang}: only {len(unique)} usable clips, audio.eval_clips = {eval_clips} "
                         "would leave none for calibration; lower audio.eval_clips or raise audio.clips")
    rng = lang_rng(seed, lang, "split")
    return {unique[int(i)] for i in rng.choice(len(unique), size=eval_clips, replace=False)}


def build(lang: str, params: AudioParams, seed: int, sources: list[SourceClip]) -> tuple[list[Clip], list[dict], dict]:
    """Pure core: selected source clips -> kept clips with split set, skipped rows, split dict."""
    kept, skipped = process(lang, sources, params.long_clips)
    n_bad = len(sources) - len({c.group for c in kept})
    if sources and n_bad / len(sources) > params.max_skipped_fraction:
        reasons = "; ".join(f"{s['source_ref']}: {s['reason']}" for s in skipped[:3])
        raise StageError(f"audio@{lang}: {n_bad} of {len(sources)} clips unusable "
                         f"(> audio.max_skipped_fraction = {params.max_skipped_fraction}): {reasons}")
    held_out = split([c.group for c in kept], params.eval_clips, seed, lang)
    for c in kept:
        c.row["split"] = "evaluation" if c.group in held_out else "calibration"
    ids = {"calibration": [c.row["id"] for c in kept if c.row["split"] == "calibration"],
           "evaluation": [c.row["id"] for c in kept if c.row["split"] == "evaluation"]}
    return kept, skipped, ids


def write(out: Path, kept: list[Clip], skipped: list[dict], ids: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for c in kept:
        A.write_wav(out / c.row["file"], c.samples)
    write_jsonl(out / "manifest.jsonl", sorted((c.row for c in kept), key=lambda r: r["id"]))
    write_jsonl(out / "skipped.jsonl", skipped)
    write_json(out / "split.json", {k: sorted(v) for k, v in ids.items()})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lang", required=True, help="FLEURS language code, e.g. ko_kr")
    parser.add_argument("--out", type=Path, required=True, help="output folder, e.g. data/audio/ko_kr")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args(argv)
    raw = read(args.params)
    seed_ = seed_of(raw)
    try:
        audio = AudioParams.of(raw).check_counts(args.lang)  # audio.per_language.<lang> over the audio defaults
    except ValueError as e:
        raise ParamsError(f"{raw.source}: {e}") from None
    log.info("audio@%s: %d clips from %s", args.lang, audio.clips, audio.source)
    # all work inside atomic_output: a failure also removes a previous run's output
    with atomic_output(args.out) as tmp:
        selection = get_clips(args.lang, audio, seed_)
        kept, skipped, ids = build(args.lang, audio, seed_, selection.clips)
        # a source also reports the files it did not offer at all (asterisk: no transcript, empty audio)
        write(tmp, kept, selection.skipped + skipped, ids)
    log.info("audio@%s: %d clips kept (%d calibration, %d evaluation), %d skipped", args.lang, len(kept),
             len(ids["calibration"]), len(ids["evaluation"]), len(skipped))


if __name__ == "__main__":
    run_stage(main)
