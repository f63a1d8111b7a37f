"""Audio in: decode, validate and normalise clips to Whisper's input (16 kHz mono, at most 30 s), and write and
read the audio stage's WAVs.

Writing (the audio stage): every clip goes through :func:`prepare`, which either returns the pieces to keep or raises
:class:`BadAudio` with a one-line reason that the audio stage records in ``skipped.jsonl``.

Rules (the numbers are module constants so tests and docs name the same thing):

* **Decoding**: soundfile (libsndfile >= 1.1 decodes wav, flac, ogg/vorbis/opus and mp3; no ffmpeg).
  Anything libsndfile cannot open (truncated header, zero-length file, non-audio bytes) is skipped
  as ``unreadable``.
* **Non-finite samples** (NaN/inf, possible in float WAVs) are skipped: they poison the log-mel.
* **Channels and rate**: averaged to mono, then resampled to 16 kHz with soxr (``soxr_hq`` through
  librosa; deterministic).
* **Empty**: fewer than :data:`MIN_SECONDS` of audio is skipped.
* **Silent**: a clip whose peak is below :data:`SILENCE_PEAK_DBFS` (-60 dBFS, i.e. |x| < 0.001 of
  full scale everywhere) is skipped; speech recordings peak tens of dB above that.
* **Clipped**: kept, with the share of samples at full scale (|x| >= :data:`CLIP_LEVEL`) recorded
  when it is at least :data:`CLIPPED_MIN_FRACTION`.
* **Long** (> 30 s, Whisper's window): ``trim`` keeps the first 30 s; ``split`` cuts consecutive
  30 s pieces and drops a final piece shorter than :data:`MIN_TAIL_SECONDS` (too short to carry a
  word); a piece that is silent on its own is dropped too. Dropped pieces are reported, not counted
  as skipped clips. A trimmed or split clip's reference text no longer matches its audio, so the
  source's text is dropped for it (the labels stage still transcribes it).
* **Output**: 16-bit PCM WAV, samples rounded and clipped to int16 here (not by libsndfile), so a
  rerun writes byte-identical files.

Reading: :func:`read_wav` reads a clip back (whisper_npu/audio/clips.py lists a manifest's clips).
"""
from __future__ import annotations

import io
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from whisper_npu.core.errors import StageError

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000                 # Whisper's input rate (its feature extractor's sampling_rate)
MAX_SECONDS = 30.0                  # Whisper's window
MIN_SECONDS = 0.1                   # shorter clips count as empty
SILENCE_PEAK_DBFS = -60.0           # peak below this: silent
SILENCE_PEAK = 10 ** (SILENCE_PEAK_DBFS / 20)
CLIP_LEVEL = 0.999                  # |x| at or above this counts as a clipped sample
CLIPPED_MIN_FRACTION = 0.001        # record clipping from 0.1 % of samples on
MIN_TAIL_SECONDS = 1.0              # split: a last piece shorter than this is dropped
AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg")


_OPENING = re.compile(r"^Error opening (<[^>]*>|'[^']*'|\S+): ")


class BadAudio(ValueError):
    """A clip that cannot be used; ``str(e)`` is the reason recorded in skipped.jsonl."""


@dataclass
class Piece:
    """One 16 kHz mono float32 piece of a source clip, with where it came from."""
    samples: np.ndarray
    start: float              # seconds into the (resampled) source clip
    end: float

    @property
    def duration(self) -> float:
        return len(self.samples) / SAMPLE_RATE


@dataclass
class Prepared:
    """Result of :func:`prepare`: the pieces to keep, facts about the source, pieces dropped."""
    pieces: list[Piece]
    info: dict                                        # original rate, channels, duration, clipping
    dropped: list[tuple[str, str]] = field(default_factory=list)   # (piece label, reason)
    cut: bool = False                                 # trimmed or split: the source text no longer applies


def decode(data: bytes | str | Path) -> tuple[np.ndarray, int]:
    """Decode an audio file (path or bytes) into float32 ``[frames, channels]`` and its rate."""
    try:
        if isinstance(data, (bytes, bytearray)):
            if not data:
                raise BadAudio("unreadable: zero-length file")
            src: object = io.BytesIO(data)
        else:
            if Path(data).stat().st_size == 0:
                raise BadAudio("unreadable: zero-length file")
            src = str(data)
        samples, rate = sf.read(src, dtype="float32", always_2d=True)
    except BadAudio:
        raise
    except (sf.LibsndfileError, RuntimeError, ValueError, TypeError, OSError, EOFError) as e:
        # libsndfile's message names the problem ("Format not recognised", "Unspecified internal error").
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        # drop "Error opening <object at 0x...>: " / "'<absolute path>': ": outputs stay machine-independent
        msg = _OPENING.sub("", msg)
        raise BadAudio(f"unreadable: {msg}") from None
    return samples, int(rate)


def to_mono_16k(samples: np.ndarray, rate: int) -> np.ndarray:
    """Average channels and resample to 16 kHz (soxr_hq, deterministic); float32 1-D."""
    mono = samples.mean(axis=1, dtype=np.float64) if samples.ndim == 2 else samples.astype(np.float64)
    if rate != SAMPLE_RATE:
        import librosa  # local: importing librosa takes a second; only resampling needs it
        mono = librosa.resample(mono, orig_sr=rate, target_sr=SAMPLE_RATE, res_type="soxr_hq")
    return np.ascontiguousarray(mono, dtype=np.float32)


def clipped_fraction(samples: np.ndarray) -> float:
    """Share of samples at full scale (over all channels)."""
    if samples.size == 0:
        return 0.0
    return float(np.count_nonzero(np.abs(samples) >= CLIP_LEVEL) / samples.size)


def check_silence(y: np.ndarray, what: str = "clip") -> None:
    peak = float(np.max(np.abs(y))) if y.size else 0.0
    if peak < SILENCE_PEAK:
        dbfs = "-inf" if peak == 0 else f"{20 * np.log10(peak):.1f}"
        raise BadAudio(f"silent: {what} peak {dbfs} dBFS < {SILENCE_PEAK_DBFS:g} dBFS")


def prepare(data: bytes | str | Path, long_clips: str = "split") -> Prepared:
    """Decode and validate one clip; return 16 kHz mono pieces of at most 30 s.

    Raises :class:`BadAudio` for unreadable, non-finite, empty or silent clips.
    ``long_clips`` is ``trim`` or ``split`` (see the module docstring).
    """
    if long_clips not in ("trim", "split"):
        raise ValueError(f"long_clips must be trim or split, not {long_clips!r}")
    samples, rate = decode(data)
    if samples.shape[0] == 0:
        raise BadAudio("empty: no samples")
    if not np.isfinite(samples).all():
        bad = int(np.count_nonzero(~np.isfinite(samples)))
        raise BadAudio(f"non-finite samples: {bad} NaN/inf values")
    info: dict = {"sample_rate": rate, "channels": int(samples.shape[1]),
                  "duration": round(samples.shape[0] / rate, 3)}
    clipped = clipped_fraction(samples)
    if clipped >= CLIPPED_MIN_FRACTION:
        info["clipped_fraction"] = round(clipped, 4)
    y = to_mono_16k(samples, rate)
    if len(y) < MIN_SECONDS * SAMPLE_RATE:
        raise BadAudio(f"empty: {len(y) / SAMPLE_RATE:.3f} s < {MIN_SECONDS} s")
    check_silence(y)

    window = int(MAX_SECONDS * SAMPLE_RATE)
    if len(y) <= window:
        return Prepared([Piece(y, 0.0, round(len(y) / SAMPLE_RATE, 3))], info)
    if long_clips == "trim":
        return Prepared([Piece(y[:window], 0.0, MAX_SECONDS)], info, cut=True)
    pieces, dropped = [], []
    for k, start in enumerate(range(0, len(y), window)):
        chunk = y[start:start + window]
        label = f"piece {k} ({start / SAMPLE_RATE:g}-{(start + len(chunk)) / SAMPLE_RATE:g} s)"
        if len(chunk) < MIN_TAIL_SECONDS * SAMPLE_RATE:
            dropped.append((label, f"split: tail {len(chunk) / SAMPLE_RATE:.2f} s < {MIN_TAIL_SECONDS} s dropped"))
            continue
        try:
            check_silence(chunk, "piece")
        except BadAudio as e:
            dropped.append((label, f"split: {e}"))
            continue
        pieces.append(Piece(chunk, round(start / SAMPLE_RATE, 3), round((start + len(chunk)) / SAMPLE_RATE, 3)))
    if not pieces:
        raise BadAudio("silent: every 30 s piece is silent")
    return Prepared(pieces, info, dropped, cut=True)


def to_int16(y: np.ndarray) -> np.ndarray:
    """Float [-1, 1] -> int16, rounded and clipped here so the result never depends on libsndfile."""
    return np.clip(np.rint(np.asarray(y, dtype=np.float64) * 32767.0), -32768, 32767).astype(np.int16)


def write_wav(path: str | Path, y: np.ndarray) -> None:
    """Write 16 kHz mono 16-bit PCM WAV (byte-identical for identical samples)."""
    sf.write(str(path), to_int16(y), SAMPLE_RATE, subtype="PCM_16", format="WAV")


def read_wav(path: str | Path) -> np.ndarray:
    """Read a 16 kHz mono WAV written by :func:`write_wav` as float32 1-D (anything else is a StageError)."""
    y, rate = sf.read(str(path), dtype="float32", always_2d=True)
    if rate != SAMPLE_RATE or y.shape[1] != 1:
        raise StageError(f"{path}: {rate} Hz x {y.shape[1]} channels; expected 16 kHz mono from the audio stage")
    return y[:, 0]
