"""Decoder calibration set: the tutorial's ``whisper_decoder_calib.json`` and per-clip input pairs.

Per calibration clip (same clips as the encoder set) a folder ``sample_<clip id>/`` with

* ``encoder_hidden_states.npy`` ``[1, 1500, d]``: the float reference encoder's output, and
* ``decoder_hidden_states.npy`` ``[1, L, d]``: token + position embeddings (positions 0..L-1) of
  ``[SOT, <|lang|>, <|task|>, <|notimestamps|>, text..., EOT]``,

listed in ``whisper_decoder_calib.json`` (``calib paths`` = [decoder input, encoder states] pairs relative to
the JSON's folder) with per-sample ``metadata``, plus ``whisper_decoder_calib_metadata.json`` (the decoded
sequences) and a small DVC metric with the task counts per language.

The task per clip is a seeded, exact, per-language draw (``calibration.translate_ratio``). Recipe knobs
cover the seed (0.12) and the newest public recipe: ``calibration.prefix_fractions`` (one sample per clip
and fraction, from the first fraction of its audio, folder ``sample_<id>_p<percent>``; the task mix drawn
exactly per fraction), ``min_tokens`` (shorter samples skipped, listed in the metric), ``strip_final_eot``
and ``json_layout`` (``full``: info + calib paths + metadata; ``minimal``: info names/shapes + calib
paths). The text comes from ``calibration.text_source``:

* ``generated`` (the tutorial's choice): the reference model's greedy output for the drawn task, at most
  ``calibration.max_new_tokens`` tokens, used as token ids directly;
* ``labels``: the label stage's ``transcription`` / ``translation``;
* ``reference``: the audio manifest's ``text`` (transcribe) / ``text_en`` (translate). A missing reference is an
  error naming the clip, except English clips, whose ``text`` is their own English reference.

The encoder runs once per clip in batches of ``calibration.batch_size`` grouped by (language, task), and its
output feeds both the saved states and ``generate(encoder_outputs=...)``. Samples are written as they are
made, so memory does not grow with the number of clips.
"""
from __future__ import annotations

import argparse
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from whisper_npu import specs
from whisper_npu.audio.clips import Clip, read_clips
from whisper_npu.audio.features import npu_features
from whisper_npu.audio.prepare import read_wav
from whisper_npu.calibration import lists
from whisper_npu.calibration import sequences as cal
from whisper_npu.core.errors import StageError
from whisper_npu.core.files import atomic_output, read_jsonl, write_json
from whisper_npu.core.languages import TRANSCRIBE, TRANSLATE
from whisper_npu.core.stage import run_stage
from whisper_npu.device import describe, log_device, pin_cpu_kernels, resolve
from whisper_npu.params.base import device_of, languages_of, read, seed_of
from whisper_npu.params.calibration import CalibrationParams

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sample:
    clip: Clip
    task: str
    text: str | None = None   # None: generate it
    fraction: float = 1.0     # the first ``fraction`` of the clip's audio

    @property
    def folder(self) -> str:
        if self.fraction == 1.0:
            return f"sample_{self.clip.id}"
        return f"sample_{self.clip.id}_p{cal.percent(self.fraction):03d}"


# ---------------------------------------------------------------------------------------------- planning

def read_labels(path: Path, languages: Sequence[str]) -> dict[str, dict]:
    """Clip id -> label row of the given languages, from the labels stage's ``decoder_text.jsonl``."""
    if not path.is_file():
        raise StageError(f"{path}: missing; calibration.text_source = labels needs the label and labels stages "
                         "(`dvc repro labels`)")
    rows = {r["id"]: r for r in read_jsonl(path) if r.get("lang") in languages}
    if not rows:
        raise StageError(f"{path}: no label rows for {', '.join(sorted(languages))}; calibration.text_source = "
                         "labels needs labels.enabled: true (rerun `dvc repro labels`)")
    return rows


def _reference_text(clip: Clip, task: str) -> str:
    if task == TRANSCRIBE:
        text = clip.text or ""
    else:
        # English audio: the transcription is its own English translation.
        text = clip.text_en or (clip.text if clip.lang.startswith("en_") else "") or ""
    if not text.strip():
        field = "text" if task == TRANSCRIBE else "text_en"
        raise StageError(f"{clip.id}: no reference {field} in the audio manifest for the {task} task; use "
                         "calibration.text_source = generated or labels")
    return text


def plan_samples(clips: Sequence[Clip], tasks: dict[str, str], text_source: str,
                 labels: dict[str, dict] | None = None, fraction: float = 1.0) -> list[Sample]:
    """One sample per clip with its task and, unless the text is generated, its text."""
    samples = []
    for clip in clips:
        task = tasks[clip.id]
        text: str | None = None
        if text_source == "reference":
            text = _reference_text(clip, task)
        elif text_source == "labels":
            row = (labels or {}).get(clip.id)
            if row is None:
                raise StageError(f"{clip.id}: no label row in the labels (data/labels/{clip.lang}.jsonl); rerun the "
                                 "label stage")
            text = row["translation" if task == TRANSLATE else "transcription"] or ""
        samples.append(Sample(clip, task, text, fraction))
    return samples


def plan_recipe(clips: Sequence[Clip], cp: CalibrationParams, seed: int,
                labels: dict[str, dict] | None = None) -> list[Sample]:
    """Every clip once per ``calibration.prefix_fractions`` entry, the task mix drawn exactly per fraction
    (the newest tutorial recipe: 5 prefixes, 20 % translate each; the seed: the whole clip once)."""
    samples = []
    for fraction in cp.prefix_fractions:
        tasks = cal.task_mix(clips, cp.translate_ratio, seed, fraction)
        samples += plan_samples(clips, tasks, cp.text_source, labels, fraction)
    return samples


def batches(samples: Sequence[Sample], size: int) -> Iterator[list[Sample]]:
    """Batches of at most ``size`` samples sharing (language, task), so forced prefixes batch."""
    groups: dict[tuple[str, str], list[Sample]] = {}
    for s in samples:
        groups.setdefault((s.clip.lang, s.task), []).append(s)
    for key in sorted(groups):
        group = groups[key]
        for i in range(0, len(group), size):
            yield group[i:i + size]


# ---------------------------------------------------------------------------------------------- building

def _generate(model: Any, states: Any, lang: str, task: str, max_new_tokens: int) -> list[list[int]]:
    import torch
    from transformers.modeling_outputs import BaseModelOutput
    from transformers.utils import logging as hf_logging

    # Greedy, so the ids are the same on every run. transformers logs a note per call about max_length vs
    # max_new_tokens and the batch's attention mask (the encoder states have no padding): silenced here.
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        with torch.inference_mode():
            out = model.generate(encoder_outputs=BaseModelOutput(last_hidden_state=states), language=lang,
                                 task=task, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                                 return_timestamps=False)
    finally:
        hf_logging.set_verbosity(verbosity)
    seqs = out.sequences if hasattr(out, "sequences") else out
    return seqs.tolist()


def _audio(s: Sample) -> np.ndarray:
    audio = read_wav(s.clip.audio)
    return audio if s.fraction == 1.0 else audio[: max(1, int(len(audio) * s.fraction))]


def build_decoder_set(model: Any, processor: Any, samples: Sequence[Sample], out_dir: Path,
                      batch_size: int, max_new_tokens: int, text_source: str, strip_eot: bool = False,
                      min_tokens: int = 0, skipped: list | None = None) -> list[dict]:
    """Write every sample's two ``.npy`` files into ``out_dir``; return the metadata rows sorted by clip id
    (then fraction). Samples shorter than ``min_tokens`` are not written; they are appended to ``skipped``."""
    import torch

    tokenizer = processor.tokenizer
    sp = cal.SpecialTokens.from_tokenizer(tokenizer)
    max_len = int(model.config.max_target_positions)
    tables = specs.embedding_tables(model)   # the host-side token and position tables, read once
    rows = []
    bar = tqdm(total=len(samples), desc="decoder calibration", unit="clip")
    for batch in batches(samples, batch_size):
        lang, task = batch[0].clip.whisper_lang, batch[0].task
        feats = np.concatenate([npu_features(processor.feature_extractor, _audio(s)) for s in batch])
        for s, f in zip(batch, feats):  # a corrupt clip fails here, named, not after generating its text
            if not np.isfinite(f).all():
                raise StageError(f"{s.clip.audio}: log-mel features contain NaN or inf values; the clip is "
                                 f"corrupt (rerun `dvc repro audio@{s.clip.lang}`)")
        # The encoder takes HF's [B, mels, frames]; the saved features are in the NPU's [B, frames, mels].
        with torch.inference_mode():
            mels = torch.from_numpy(feats.transpose(0, 2, 1).copy()).to(model.device)
            states = model.model.encoder(mels).last_hidden_state
        prefix = cal.prefix_ids(tokenizer, lang, task)
        generated = _generate(model, states, lang, task, max_new_tokens) if batch[0].text is None else None
        for j, s in enumerate(batch):
            if generated is not None:
                ids, truncated = cal.sequence_from_generated(prefix, generated[j], sp.eot, max_len, strip_eot)
            else:
                ids, truncated = cal.sequence_from_text(tokenizer, prefix, s.text or "", sp.eot, max_len, strip_eot)
            if truncated:
                log.warning("%s: text longer than the decoder's %d positions; truncated", s.clip.id, max_len)
            if len(ids) < min_tokens:
                if skipped is not None:
                    skipped.append({"clip_id": s.clip.id, "fraction": s.fraction, "length": len(ids)})
                continue
            if len(ids) == len(prefix) + (0 if strip_eot else 1):
                log.warning("%s: empty %s text; kept as the bare prefix", s.clip.id, s.task)
            folder = out_dir / s.folder
            folder.mkdir(parents=True, exist_ok=True)
            np.save(folder / cal.ENCODER_STATES, np.ascontiguousarray(states[j:j + 1].to(torch.float32).cpu().numpy()))
            np.save(folder / cal.DECODER_STATES, specs.embed(*tables, ids))
            rows.append({
                "clip_id": s.clip.id, **({} if s.fraction == 1.0 else {"audio_fraction": s.fraction}),
                "language": s.clip.lang, "source_language": s.clip.whisper_lang,
                "task": s.task, "task_type": lists.TASK_TYPES[s.task], "use_translation": s.task == TRANSLATE,
                "text_source": text_source, "tokens": ids, "length": len(ids), "truncated": truncated,
                "decoded_tokens": tokenizer.decode(ids, skip_special_tokens=False),
                "decoder_hidden_states": f"{s.folder}/{cal.DECODER_STATES}",
                "encoder_hidden_states": f"{s.folder}/{cal.ENCODER_STATES}",
            })
        bar.update(len(batch))
    bar.close()
    return sorted(rows, key=lambda r: (r["clip_id"], r.get("audio_fraction", 1.0)))


def task_counts(rows: Sequence[dict]) -> dict:
    """The DVC metric: samples, translate/transcribe counts and mean length, overall and per language."""
    def summary(rs: Sequence[dict]) -> dict:
        n_tr = sum(r["task"] == TRANSLATE for r in rs)
        return {"samples": len(rs), "translate": n_tr, "transcribe": len(rs) - n_tr,
                "mean_length": round(float(np.mean([r["length"] for r in rs])), 2) if rs else 0.0}
    per_lang = {lang: summary([r for r in rows if r["language"] == lang])
                for lang in sorted({r["language"] for r in rows})}
    return {**summary(rows), "per_language": per_lang}


def write_decoder_set(model: Any, processor: Any, samples: Sequence[Sample], out_dir: Path,
                      cp: CalibrationParams, seed: int, skipped: list | None = None) -> list[dict]:
    """Samples, the tutorial's JSON and the decoded-strings JSON in ``out_dir``; returns the metadata rows
    (samples under ``calibration.min_tokens`` are left out and appended to ``skipped``)."""
    skipped = [] if skipped is None else skipped
    rows = build_decoder_set(model, processor, samples, out_dir, cp.batch_size, cp.max_new_tokens, cp.text_source,
                             cp.strip_final_eot, cp.min_tokens, skipped)
    if not rows:
        raise StageError(f"decoder calibration: all {len(samples)} samples are shorter than calibration.min_tokens "
                         f"= {cp.min_tokens}; lower it or raise calibration.max_new_tokens")
    pairs = [(r["decoder_hidden_states"], r["encoder_hidden_states"]) for r in rows]
    extra = {"text_source": cp.text_source, "translate_ratio": cp.translate_ratio, "seed": seed,
             **describe(str(model.device))}   # the device, when not the CPU
    recipe = {"prefix_fractions": cp.prefix_fractions, "min_tokens": cp.min_tokens,
              "strip_final_eot": cp.strip_final_eot}
    if recipe != {"prefix_fractions": [1.0], "min_tokens": 0, "strip_final_eot": False}:
        extra.update(recipe)   # the seed's JSON stays as it was
    write_json(out_dir / specs.DECODER_JSON, lists.decoder_json(model.config, pairs, rows, extra, cp.json_layout))
    write_json(out_dir / specs.DECODER_METADATA_JSON, [r["decoded_tokens"] for r in rows])
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--audio", type=Path, required=True,
                        help="audio stage root (data/audio): reads calibration/<lang>/")
    parser.add_argument("--text", type=Path, required=True,
                        help="the labels stage's decoder_text.jsonl (read when calibration.text_source = labels)")
    parser.add_argument("--model", type=Path, required=True, help="reference model store (models/reference)")
    parser.add_argument("--out", type=Path, required=True, help="output folder (calibration/decoder)")
    parser.add_argument("--metrics", type=Path, required=True, help="task-mix metric (metrics/calibration.json)")
    args = parser.parse_args(argv)
    raw = read(args.params)
    seed, langs, cp, device = seed_of(raw), languages_of(raw), CalibrationParams.of(raw), device_of(raw)
    if resolve(device) == "cpu":
        pin_cpu_kernels()   # float outputs: the same bytes on every x86-64 CPU (docs/guarantees.md)

    import torch

    from whisper_npu.model.store import load_hf

    clips = read_clips(args.audio, langs, "calibration", cp.samples_per_language)
    labels = read_labels(args.text, langs) if cp.text_source == "labels" else None
    samples = plan_recipe(clips, cp, seed, labels)
    torch.manual_seed(seed)
    model, processor = load_hf(args.model)
    model = model.to(resolve(device))
    log_device("calibrate_decoder", str(model.device))
    log.info("decoder set: %d clips, %d translate, text from %s", len(samples),
             sum(s.task == TRANSLATE for s in samples), cp.text_source)
    skipped: list[dict] = []
    with atomic_output(args.out) as tmp:
        rows = write_decoder_set(model, processor, samples, tmp, cp, seed, skipped)
        lists.validate_decoder_set(tmp / specs.DECODER_JSON, model.config)
        if skipped:
            log.info("skipped %d samples under calibration.min_tokens = %d", len(skipped), cp.min_tokens)
        with atomic_output(args.metrics) as mtmp:
            short = {"skipped_short": len(skipped), "skipped": skipped} if cp.min_tokens else {}
            write_json(mtmp, {**task_counts(rows), **describe(str(model.device)), **short})
    log.info("wrote %d decoder calibration samples to %s", len(rows), args.out)


if __name__ == "__main__":
    run_stage(main)
