"""Audio of any length through a backend, window after window, with segment timestamps: what openai-whisper's
``transcribe()`` does, greedily, on the decode protocol (so the NPU and ONNX Runtime models run it too).

Each window is Whisper's 30 s input (the encoder is compiled for it). The decoder gets ``[SOT, <|lang|>, <|task|>]``
(no ``<|notimestamps|>``) and emits timestamp tokens under openai-whisper's rules (``ApplyTimestampRules``: they
come in pairs except before EOT, never decrease, the first token is a timestamp of at most 1 s, and a timestamp is
forced when all timestamps together are likelier than any text token). Consecutive timestamp pairs close segments.
The next window starts at the last complete timestamp (or after the whole window when the output ends with a single
timestamp, i.e. nothing was said after it), as ``transcribe()`` seeks. Unlike ``transcribe()`` the previous window's
text is not fed as a prompt (``condition_on_previous_text=False``) and there is no temperature fallback: one greedy
pass per window, with the repetition guard of the greedy loop. The language is given or detected once, from the
first window, as Whisper does (the most likely language token after SOT).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from whisper_npu.decoding.greedy import DecodeConfig, DecodeError, repeated_tail

SAMPLE_RATE = 16000
WINDOW_SECONDS = 30.0
TIME_PRECISION = 0.02            # seconds per timestamp step: 2 mel frames of 10 ms (openai-whisper)
MAX_INITIAL_TIMESTAMP_INDEX = 50  # the first timestamp is at most 1.0 s (openai-whisper's default)
WINDOW_TOKENS = 224              # openai-whisper's sample_len: n_text_ctx // 2


@dataclass
class Segment:
    start: float
    end: float
    tokens: list[int]
    text: str = ""


@dataclass
class Transcript:
    language: str
    segments: list[Segment] = field(default_factory=list)
    stops: list[str] = field(default_factory=list)   # per window: eot, repetition, max_new_tokens, ...

    @property
    def text(self) -> str:
        return " ".join(s.text for s in self.segments if s.text).strip()


def detect_language(session: Any, states: np.ndarray, cfg: DecodeConfig) -> str:
    """The most likely language (Whisper code) after ``[SOT]`` on these encoder states."""
    session.reset(states)
    logits = np.asarray(session.step([cfg.sot]), dtype=np.float32).reshape(-1)
    langs = sorted(cfg.lang_to_id.items(), key=lambda kv: kv[1])
    ids = np.array([i for _, i in langs])
    return langs[int(np.argmax(logits[ids]))][0]


def _timestamp_mask(logits: np.ndarray, generated: Sequence[int], cfg: DecodeConfig) -> np.ndarray:
    """openai-whisper's ApplyTimestampRules on one row of logits (a copy with -inf where not allowed)."""
    ts = cfg.no_timestamps + 1                       # timestamp_begin
    out = logits.copy()
    out[cfg.no_timestamps] = -np.inf
    last_ts = len(generated) >= 1 and generated[-1] >= ts
    penultimate_ts = len(generated) < 2 or generated[-2] >= ts
    if last_ts:
        if penultimate_ts:
            out[ts:] = -np.inf                       # a pair is closed: text next
        else:
            out[:cfg.eot] = -np.inf                  # an open pair: its closing timestamp (or EOT) next
    stamps = [t for t in generated if t >= ts]
    if stamps:
        floor = stamps[-1] if last_ts and not penultimate_ts else stamps[-1] + 1
        out[ts:floor] = -np.inf                      # never decreasing, segments of nonzero length
    if not generated:
        out[:ts] = -np.inf                           # start with a timestamp
        out[ts + MAX_INITIAL_TIMESTAMP_INDEX + 1:] = -np.inf
    finite = out[np.isfinite(out)]
    if finite.size:
        shifted = out - finite.max()
        logprobs = shifted - np.log(np.exp(shifted[np.isfinite(shifted)]).sum())
        ts_logprob = np.logaddexp.reduce(logprobs[ts:]) if np.isfinite(logprobs[ts:]).any() else -np.inf
        if ts_logprob > logprobs[:ts].max():
            out[:ts] = -np.inf
    return out


def decode_window(session: Any, states: np.ndarray, prompt: Sequence[int], cfg: DecodeConfig,
                  max_tokens: int = WINDOW_TOKENS) -> tuple[list[int], str]:
    """Greedy decoding of one window with timestamp tokens: (generated ids without EOT, stop reason)."""
    session.reset(states)
    logits = session.step(list(prompt))
    out: list[int] = []
    while True:
        row = np.asarray(logits, dtype=np.float32).reshape(-1)
        if row.shape[0] < cfg.vocab_size:
            raise DecodeError(f"decoder returned {row.shape[0]} logits, expected {cfg.vocab_size}")
        row = row[:cfg.vocab_size]
        row = np.where(cfg._begin_mask if not out else cfg._mask, -np.inf, row)
        token = int(np.argmax(_timestamp_mask(row, out, cfg)))
        if token == cfg.eot:
            return out, "eot"
        out.append(token)
        n = repeated_tail(out, cfg.repeat_max_ngram, cfg.repeat_times)
        if n:
            del out[len(out) - n * (cfg.repeat_times - 1):]
            return out, "repetition"
        if len(out) >= max_tokens:
            return out, "max_new_tokens"
        if len(prompt) + len(out) >= cfg.max_target_positions:
            return out, "max_positions"
        logits = session.step([token])


def _segments(tokens: list[int], ts: int, offset: float) -> tuple[list[Segment], float | None]:
    """Segments closed by consecutive timestamp pairs, and the seconds to advance (None: the whole window)."""
    is_ts = [t >= ts for t in tokens]
    single_ending = is_ts[-2:] == [False, True]
    cuts = [i + 1 for i in range(len(tokens) - 1) if is_ts[i] and is_ts[i + 1]]
    segments: list[Segment] = []
    if cuts:
        if single_ending:
            cuts.append(len(tokens))
        last = 0
        for cut in cuts:
            piece = tokens[last:cut]
            segments.append(Segment(offset + (piece[0] - ts) * TIME_PRECISION,
                                    offset + (piece[-1] - ts) * TIME_PRECISION, [t for t in piece if t < ts]))
            last = cut
        return segments, None if single_ending else (tokens[last - 1] - ts) * TIME_PRECISION
    stamps = [t for t in tokens if t >= ts]
    end = (stamps[-1] - ts) * TIME_PRECISION if stamps and stamps[-1] != ts else None
    text = [t for t in tokens if t < ts]
    if text:
        segments.append(Segment(offset, offset + (end if end is not None else WINDOW_SECONDS), text))
    return segments, None


def transcribe(backend: Any, audio: np.ndarray, features: Callable[[np.ndarray], np.ndarray], cfg: DecodeConfig,
               to_text: Callable[[list[int]], str], task: str = "transcribe", language: str | None = None,
               progress: Callable[[float], None] | None = None, max_tokens: int = WINDOW_TOKENS) -> Transcript:
    """16 kHz mono ``audio`` of any length through ``backend`` (encoder + decoder session), window by window.
    ``cfg`` must not suppress timestamps; ``progress`` is called with the seconds done after each window."""
    if cfg.suppress_timestamps:
        raise DecodeError("long-form transcription needs timestamp tokens: build the DecodeConfig with "
                          "suppress_timestamps=False")
    ts = cfg.no_timestamps + 1
    window = int(WINDOW_SECONDS * SAMPLE_RATE)
    seek, total = 0, len(audio)
    result: Transcript | None = None
    while seek < total:
        chunk = audio[seek:seek + window]
        states = backend.encoder(features(chunk))
        if result is None:
            result = Transcript(language or detect_language(backend.decoder, states, cfg))
        prompt = cfg.prompt(result.language, task)[:-1]     # [SOT, lang, task]: timestamps on
        tokens, stop = decode_window(backend.decoder, states, prompt, cfg, max_tokens)
        result.stops.append(stop)
        offset = seek / SAMPLE_RATE
        segments, advance = _segments(tokens, ts, offset)
        chunk_end = offset + len(chunk) / SAMPLE_RATE   # a last window shorter than 30 s: no time past the audio
        for s in segments:
            s.start = min(s.start, chunk_end)
            s.end = max(s.start, min(s.end, chunk_end))
            s.text = to_text(s.tokens)
        result.segments += [s for s in segments if s.text]
        step = window if advance is None or advance <= 0 else int(round(advance * SAMPLE_RATE))
        seek += min(step, window)
        if progress is not None:
            progress(min(seek, total) / SAMPLE_RATE)
    return result if result is not None else Transcript(language or "")
