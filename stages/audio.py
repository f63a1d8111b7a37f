"""Stage audio@<lang>: one language's calibration clips and evaluation clips as 16 kHz mono WAV, two folders.

    python -m stages.audio --lang ko_kr --out data/audio

Writes ``<out>/calibration/<lang>/`` and ``<out>/evaluation/<lang>/`` (two DVC outputs, so a stage that reads
only evaluation clips does not rerun when the calibration clips change), each with its WAVs, ``manifest.jsonl``
(one row per kept clip, ``split`` = the folder's role) and ``skipped.jsonl`` (the role's bad clips and dropped
pieces, then the files the source did not offer at all, with the reason). Calibration clips are named
``<lang>_<i:04d>.wav`` (the tutorial's names), evaluation clips ``<lang>_eval_<i:04d>.wav``: ids are unique per
language. The params that apply are ``audio.per_language.<lang>`` over the ``audio`` defaults (source,
calibration_clips, eval_clips, selection).

The evaluation clips are chosen first and never depend on ``audio.calibration_clips``; the two pools are
disjoint (whisper_npu/sources/base.py, and per source docs/offline-data.md):

* synth, asterisk, local: one pool of candidates in source order. ``first``: calibration = the first N,
  evaluation = the last N (an error when they would overlap). ``seeded``: candidates ranked by a hash of
  (seed, language, clip); evaluation = the first N of that order, calibration = the next N.
* fleurs: evaluation clips from ``audio.fleurs.eval_split``, calibration clips from ``audio.fleurs.split``, each
  the first N or the first N of the seeded order within its split.

Each role is processed on its own: a bad clip is skipped and recorded, never replaced (by a clip of the other role
or any other), so a role's folder depends on its own clips only, and the pieces of one long clip stay in its
role. The stage fails when more than ``audio.max_skipped_fraction`` of either role's clips is unusable, or when
no calibration clip is left; it then leaves neither folder behind.
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
from whisper_npu.core.files import atomic_output, write_jsonl
from whisper_npu.core.stage import run_stage
from whisper_npu.params.audio import AudioParams
from whisper_npu.params.base import read, seed_of
from whisper_npu.sources.base import CALIBRATION, EVALUATION, ROLES, Selection, SourceClip
from whisper_npu.sources.loader import get_clips

log = logging.getLogger(__name__)

ID_PREFIX = {CALIBRATION: "{lang}_", EVALUATION: "{lang}_eval_"}


@dataclass
class Clip:
    """A kept piece ready to write: its manifest row and its samples."""
    row: dict
    samples: np.ndarray
    group: int              # index of the source clip it came from


def process(lang: str, role: str, sources: list[SourceClip], long_clips: str) -> tuple[list[Clip], list[dict]]:
    """Validate and cut one role's selected clips; return the kept pieces (numbered in order) and skipped rows."""
    prefix = ID_PREFIX[role].format(lang=lang)
    kept: list[Clip] = []
    skipped: list[dict] = []
    for group, src in enumerate(tqdm(sources, desc=f"audio {lang} {role}", unit="clip", leave=False)):
        try:
            prep = A.prepare(src.read(), long_clips)
        except A.BadAudio as e:
            skipped.append({"source_ref": src.ref, "reason": str(e)})
            continue
        for label, reason in prep.dropped:
            skipped.append({"source_ref": f"{src.ref}#{label}", "reason": reason})
        for piece in prep.pieces:
            cid = f"{prefix}{len(kept):04d}"
            info = dict(prep.info)
            if prep.cut:
                info["piece"] = [piece.start, piece.end]
            row = {"id": cid, "file": f"{cid}.wav", "lang": lang, "split": role, "duration": round(piece.duration, 3),
                   # a cut clip's text covers audio that is not in this piece
                   "text": None if prep.cut else src.text, "text_en": None if prep.cut else src.text_en,
                   "source": {**src.source, "audio": info}}
            kept.append(Clip(row, piece.samples, group))
    return kept, skipped


def build(lang: str, role: str, sources: list[SourceClip], params: AudioParams) -> tuple[list[Clip], list[dict]]:
    """One role's selected source clips -> its kept clips and skipped rows; StageError when too many are bad."""
    kept, skipped = process(lang, role, sources, params.long_clips)
    n_bad = len(sources) - len({c.group for c in kept})
    if sources and n_bad / len(sources) > params.max_skipped_fraction:
        reasons = "; ".join(f"{s['source_ref']}: {s['reason']}" for s in skipped[:3])
        raise StageError(f"audio@{lang}: {n_bad} of {len(sources)} {role} clips unusable "
                         f"(> audio.max_skipped_fraction = {params.max_skipped_fraction}): {reasons}")
    if role == CALIBRATION and not kept:
        raise StageError(f"audio@{lang}: no usable calibration clip (all {len(sources)} skipped); raise "
                         "audio.calibration_clips or use other clips")
    return kept, skipped


def write(folder: Path, kept: list[Clip], skipped: list[dict]) -> None:
    """One role's folder: its WAVs, manifest.jsonl (sorted by id) and skipped.jsonl."""
    folder.mkdir(parents=True, exist_ok=True)
    for c in kept:
        A.write_wav(folder / c.row["file"], c.samples)
    write_jsonl(folder / "manifest.jsonl", sorted((c.row for c in kept), key=lambda r: r["id"]))
    write_jsonl(folder / "skipped.jsonl", skipped)


def make(lang: str, params: AudioParams, seed: int, out: Path) -> dict[str, list[Clip]]:
    """Select, check and write both folders of one language below the audio root ``out``; all work happens
    inside atomic outputs, so a failure leaves neither folder (and removes a previous run's)."""
    folders = {role: out / role / lang for role in ROLES}
    kept: dict[str, list[Clip]] = {}
    with atomic_output(folders[CALIBRATION]) as cal_tmp, atomic_output(folders[EVALUATION]) as eval_tmp:
        selection: Selection = get_clips(lang, params, seed)
        for role, tmp in ((EVALUATION, eval_tmp), (CALIBRATION, cal_tmp)):
            kept[role], skipped = build(lang, role, selection.role(role), params)
            # a source also reports the files it did not offer at all (asterisk: no transcript, empty audio)
            write(tmp, kept[role], skipped + selection.skipped)
            log.info("audio@%s: %d %s clips kept from %d, %d skipped", lang, len(kept[role]), role,
                     len(selection.role(role)), len(skipped))
    return kept


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lang", required=True, help="FLEURS language code, e.g. ko_kr")
    parser.add_argument("--out", type=Path, required=True,
                        help="audio root, e.g. data/audio: writes <out>/calibration/<lang> and <out>/evaluation/<lang>")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args(argv)
    raw = read(args.params)
    seed_ = seed_of(raw)
    audio = AudioParams.of(raw).for_lang(args.lang)   # audio.per_language.<lang> over the audio defaults
    log.info("audio@%s: %d calibration + %d evaluation clips from %s", args.lang, audio.calibration_clips,
             audio.eval_clips, audio.source)
    make(args.lang, audio, seed_, args.out)


if __name__ == "__main__":
    run_stage(main)
