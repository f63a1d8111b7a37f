"""Label clips with a transcription and an English translation through openai-whisper, as the tutorial.

The tutorial (download_data.py) calls ``model.transcribe(path, task=..., language=...)`` of Whisper
large-v3; openai-whisper's ``transcribe`` retries a window at higher temperatures when the output is
repetitive (compression ratio > 2.4), which keeps labels free of repetition loops, and, by default, when
it is unlikely (average log-prob < -1). ``labels.logprob_fallback`` (default false) turns the second
test off: when all temperatures fail it, openai-whisper keeps the last (t = 1.0) sample, which for a
small reference model on synthetic speech is far worse than the greedy text.

``labels.labeler`` picks the model:

* ``reference`` (offline default): the model stage's checkpoint ``<model dir>/openai-whisper.pt``.
* an openai-whisper model name (``large-v3``, as the tutorial; ``small``, ...): loaded from
  ``~/.cache/whisper``, downloaded there when missing (needs network).
* a path to an openai-whisper ``.pt`` checkpoint.

Decoding is seeded per clip, so labels are the same on every run with the same params.
"""
from __future__ import annotations

import logging
import pickle
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from whisper_npu.io import StageError

log = logging.getLogger(__name__)

# openai-whisper's default fallback schedule, written out: the tutorial relies on it.
TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
CHECKPOINT = "openai-whisper.pt"


@dataclass
class Labeler:
    """A loaded openai-whisper model and the name recorded in the labels."""
    model: Any
    name: str

    @property
    def multilingual(self) -> bool:
        return bool(self.model.is_multilingual)


def _load_path(path: Path) -> Any:
    import whisper
    try:
        return whisper.load_model(str(path), device="cpu")
    except (OSError, RuntimeError, KeyError, TypeError, ValueError, EOFError, pickle.UnpicklingError) as e:
        raise StageError(f"{path}: not a loadable openai-whisper checkpoint ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''})") from None


def _reference_name(model_dir: Path) -> str:
    """``reference:<name>`` with the model stage's name when model.json records one."""
    meta = model_dir / "model.json"
    try:
        import json
        name = json.loads(meta.read_text(encoding="utf-8")).get("name")
    except (OSError, ValueError, AttributeError):
        name = None
    return f"reference:{name}" if name else "reference"


def load_labeler(spec: str, model_dir: Path | None) -> Labeler:
    """Load the model that ``labels.labeler`` names (see the module docstring)."""
    import whisper

    if spec == "reference":
        if model_dir is None:
            raise StageError("labels.labeler = reference: pass --model (the model stage's folder)")
        ckpt = Path(model_dir) / CHECKPOINT
        if not ckpt.is_file():
            raise StageError(f"{ckpt}: missing; run the model stage first (`dvc repro model`)")
        return Labeler(_load_path(ckpt), _reference_name(Path(model_dir)))
    if spec in whisper.available_models():
        try:
            model = whisper.load_model(spec, device="cpu")
        except (OSError, ConnectionError) as e:  # urllib's URLError is an OSError
            raise StageError(f"labels.labeler = {spec!r}: openai-whisper could not download it to ~/.cache/whisper "
                             f"({type(e).__name__}); connect to the network once or use labels.labeler: reference"
                             ) from None
        except RuntimeError as e:  # checksum mismatch of a partial download
            raise StageError(f"labels.labeler = {spec!r}: {str(e).splitlines()[0]}; delete the file in "
                             "~/.cache/whisper and retry") from None
        return Labeler(model, f"openai-whisper:{spec}")
    path = Path(spec)
    if path.suffix == ".pt" or path.is_file():
        if not path.is_file():
            raise StageError(f"labels.labeler = {spec!r}: no such checkpoint file")
        return Labeler(_load_path(path), path.name)
    raise StageError(f"labels.labeler = {spec!r}: not 'reference', an openai-whisper model name "
                     f"({', '.join(whisper.available_models())}) or a .pt checkpoint path")


def check_language(labeler: Labeler, whisper_lang: str, lang: str) -> None:
    """An English-only model (tiny.en, base.en, ...) can neither transcribe nor translate other languages."""
    if not labeler.multilingual and whisper_lang != "en":
        raise StageError(f"labels.labeler = {labeler.name}: an English-only model cannot transcribe or translate "
                         f"{lang}; use a multilingual model (e.g. large-v3, small, or the reference whisper-base)")


def clip_seed(seed: int, clip_id: str) -> int:
    return (seed * 1_000_003 + zlib.crc32(clip_id.encode())) % (2**31)


def transcribe(labeler: Labeler, audio: np.ndarray, whisper_lang: str, task: str, beam_size: int, seed: int,
               logprob_fallback: bool = True, **decode_options: Any) -> str:
    """One task on one 16 kHz clip, deterministic for a given seed. ``decode_options`` go to
    openai-whisper's ``transcribe`` on top of the tutorial's settings (tests shorten decoding with them)."""
    import torch

    torch.manual_seed(seed)
    options: dict[str, Any] = {"language": whisper_lang, "task": task, "fp16": False, "temperature": TEMPERATURES,
                               "verbose": None}
    if beam_size > 1:
        options["beam_size"] = beam_size  # openai-whisper drops it for the sampled (t > 0) fallbacks
    if not logprob_fallback:
        # Retry only on repetition (compression ratio > 2.4). When every temperature fails the log-prob
        # test, openai-whisper returns the last, t = 1.0, sample: worse than the greedy text.
        options["logprob_threshold"] = None
    options.update(decode_options)
    with torch.inference_mode():
        result = labeler.model.transcribe(np.ascontiguousarray(audio, dtype=np.float32), **options)
    return str(result.get("text", "")).strip()


def label_clip(labeler: Labeler, audio: np.ndarray, whisper_lang: str, beam_size: int, seed: int,
               logprob_fallback: bool = True, **decode_options: Any) -> tuple[str, str]:
    """(transcription, English translation) of one clip. For English with an English-only model the
    translation is the transcription (such a model has no translate task; English to English is identity)."""
    text = transcribe(labeler, audio, whisper_lang, "transcribe", beam_size, seed, logprob_fallback, **decode_options)
    if not labeler.multilingual:
        return text, text
    return text, transcribe(labeler, audio, whisper_lang, "translate", beam_size, seed + 1, logprob_fallback,
                            **decode_options)


__all__ = ["Labeler", "load_labeler", "check_language", "label_clip", "transcribe", "clip_seed", "TEMPERATURES"]
