"""One greedy decode loop for every backend (whisper_npu/runtime.py protocol).

The loop reproduces Hugging Face ``generate`` in its greedy, no-fallback, no-timestamps form:

* prompt ``[SOT, <|lang|>, <|task|>, <|notimestamps|>]``, ids taken from the model's generation config;
* ``suppress_tokens`` masked at every step, ``begin_suppress_tokens`` at the first generated position;
* optionally every timestamp token masked as well (``suppress_timestamps``; HF leaves them unmasked when
  timestamps are off, so a random model can emit them; a trained one practically never does after
  ``<|notimestamps|>``);
* stop at EOT, after ``max_new_tokens`` tokens, or when the sequence fills the decoder's
  ``max_target_positions`` (the positional table has no row beyond it, on the NPU as in torch).

On top of that, a **repetition guard** (HF greedy has none): Whisper without temperature fallback can loop
("bien bien bien ...", docs/offline-data.md). After each token, if the generated tail is
one n-gram (``1 <= n <= repeat_max_ngram``) repeated ``repeat_times`` times in a row, decoding stops and the
``repeat_times - 1`` extra copies are dropped, so a loop costs one copy's worth of insertions instead of a
run to ``max_new_tokens``. ``repeat_times = 0`` turns the guard off (exact HF behaviour).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from whisper_npu.decoding.protocol import BatchDecoderSession, DecoderSession

STOP_REASONS = ("eot", "max_new_tokens", "max_positions", "repetition")


class DecodeError(ValueError):
    """The model's generation config lacks what the loop needs, or a backend broke the protocol."""


def _get(obj: Any, key: str, default: Any = None) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(key, default)
    return getattr(obj, key, default)


@dataclass(frozen=True)
class DecodeConfig:
    """Token ids and limits for greedy decoding; build it with :meth:`from_model`."""
    sot: int
    eot: int
    no_timestamps: int
    lang_to_id: Mapping[str, int]          # Whisper code ("en") -> token id
    task_to_id: Mapping[str, int]          # "transcribe" / "translate" -> token id
    vocab_size: int
    max_target_positions: int
    max_new_tokens: int
    suppress_tokens: tuple[int, ...] = ()
    begin_suppress_tokens: tuple[int, ...] = ()
    suppress_timestamps: bool = True
    repeat_max_ngram: int = 8
    repeat_times: int = 4
    _mask: np.ndarray | None = field(default=None, repr=False, compare=False)
    _begin_mask: np.ndarray | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_model(cls, generation_config: Any, model_config: Any, *, max_new_tokens: int,
                   suppress_timestamps: bool = True, repeat_max_ngram: int = 8,
                   repeat_times: int = 4) -> "DecodeConfig":
        """Derive every id from the HF generation config (``lang_to_id`` keys are ``<|xx|>``) and the
        vocabulary size and position limit from the model config."""
        missing = [k for k in ("decoder_start_token_id", "eos_token_id", "no_timestamps_token_id",
                               "lang_to_id", "task_to_id") if _get(generation_config, k) is None]
        if missing:
            raise DecodeError(f"generation_config.json: missing {', '.join(missing)}; a multilingual Whisper "
                              "generation config is needed (rerun the model stage)")
        eos = _get(generation_config, "eos_token_id")
        eot = int(eos[0] if isinstance(eos, (list, tuple)) else eos)
        langs = {str(k).strip("<|>"): int(v) for k, v in dict(_get(generation_config, "lang_to_id")).items()}
        cfg = cls(
            sot=int(_get(generation_config, "decoder_start_token_id")),
            eot=eot,
            no_timestamps=int(_get(generation_config, "no_timestamps_token_id")),
            lang_to_id=langs,
            task_to_id={str(k): int(v) for k, v in dict(_get(generation_config, "task_to_id")).items()},
            vocab_size=int(_get(model_config, "vocab_size")),
            max_target_positions=int(_get(model_config, "max_target_positions")),
            max_new_tokens=int(max_new_tokens),
            suppress_tokens=tuple(int(t) for t in (_get(generation_config, "suppress_tokens") or ())),
            begin_suppress_tokens=tuple(int(t) for t in (_get(generation_config, "begin_suppress_tokens") or ())),
            suppress_timestamps=suppress_timestamps,
            repeat_max_ngram=repeat_max_ngram,
            repeat_times=repeat_times,
        )
        return cfg.with_masks()

    @classmethod
    def from_params(cls, generation_config: Any, model_config: Any, p: Any) -> "DecodeConfig":
        """:meth:`from_model` with the limits of params ``transcribe`` (``max_new_tokens``, ``suppress_timestamps``,
        ``repeat_max_ngram``, ``repeat_times``)."""
        return cls.from_model(generation_config, model_config, max_new_tokens=p.max_new_tokens,
                              suppress_timestamps=p.suppress_timestamps, repeat_max_ngram=p.repeat_max_ngram,
                              repeat_times=p.repeat_times)

    def with_masks(self) -> "DecodeConfig":
        """Precompute the boolean suppression masks (``True`` = masked to -inf)."""
        mask = np.zeros(self.vocab_size, dtype=bool)
        mask[[t for t in self.suppress_tokens if t < self.vocab_size]] = True
        if self.suppress_timestamps:
            # Timestamp tokens follow <|notimestamps|> to the end of the vocabulary (HF
            # WhisperTimeStampLogitsProcessor: timestamp_begin = no_timestamps_token_id + 1).
            mask[self.no_timestamps + 1:] = True
        begin = mask.copy()
        begin[[t for t in self.begin_suppress_tokens if t < self.vocab_size]] = True
        object.__setattr__(self, "_mask", mask)
        object.__setattr__(self, "_begin_mask", begin)
        return self

    def prompt(self, language: str, task: str) -> list[int]:
        """``[SOT, <|language|>, <|task|>, <|notimestamps|>]`` for a Whisper language code."""
        if language not in self.lang_to_id:
            raise DecodeError(f"language {language!r}: not in the model's lang_to_id "
                              f"(an English-only model cannot transcribe it)")
        if task not in self.task_to_id:
            raise DecodeError(f"task {task!r}: must be one of {', '.join(sorted(self.task_to_id))}")
        return [self.sot, self.lang_to_id[language], self.task_to_id[task], self.no_timestamps]


def repeated_tail(tokens: Sequence[int], max_ngram: int, times: int) -> int:
    """Length ``n`` of the shortest n-gram that ends ``tokens`` ``times`` times in a row, else 0."""
    if times < 2:
        return 0
    for n in range(1, max_ngram + 1):
        span = n * times
        if span > len(tokens):
            break
        tail = list(tokens[-span:])
        if tail == tail[-n:] * times:
            return n
    return 0


def _advance(logits: np.ndarray, out: list[int], prompt_len: int, cfg: DecodeConfig) -> str | None:
    """One greedy step of one sequence: pick the next token from ``logits``, append it to ``out`` (EOT is
    not appended) and return the stop reason, or None to go on. Batch 1 and batched decoding share it."""
    logits = np.asarray(logits, dtype=np.float32).reshape(-1)
    if logits.shape[0] < cfg.vocab_size:
        raise DecodeError(f"decoder returned {logits.shape[0]} logits, expected {cfg.vocab_size}")
    # Some exporters pad the vocabulary; ids beyond the tokenizer are never valid.
    logits = logits[:cfg.vocab_size]
    mask = cfg._begin_mask if not out else cfg._mask
    token = int(np.argmax(np.where(mask, -np.inf, logits)))
    if token == cfg.eot:
        return "eot"
    out.append(token)
    n = repeated_tail(out, cfg.repeat_max_ngram, cfg.repeat_times)
    if n:
        del out[len(out) - n * (cfg.repeat_times - 1):]
        return "repetition"
    if len(out) >= cfg.max_new_tokens:
        return "max_new_tokens"
    if prompt_len + len(out) >= cfg.max_target_positions:
        return "max_positions"
    return None


def greedy_decode(session: DecoderSession, encoder_states: np.ndarray, prompt: Sequence[int],
                  cfg: DecodeConfig) -> tuple[list[int], str]:
    """Greedy decoding on one clip: the prompt in one step, then one token per step.

    Returns the generated ids (no prompt, no EOT) and the stop reason.
    """
    if cfg._mask is None:
        cfg = cfg.with_masks()
    session.reset(encoder_states)
    logits = session.step(list(prompt))
    out: list[int] = []
    while True:
        stop = _advance(logits, out, len(prompt), cfg)
        if stop:
            return out, stop
        logits = session.step([out[-1]])


def greedy_decode_batch(session: BatchDecoderSession, encoder_states: np.ndarray,
                        prompts: Sequence[Sequence[int]], cfg: DecodeConfig) -> list[tuple[list[int], str]]:
    """:func:`greedy_decode` on ``B`` sequences at once: row ``i`` of ``[B, 1500, d]`` encoder states with
    ``prompts[i]`` (all of one length: every row is then at the same position at every step, so no padding
    and no attention mask). A finished row leaves the batch (``session.select``). Same per-row tokens and stop
    reasons as batch 1 wherever the backend's batched logits equal its batch-1 logits (tests/test_batched_decode.py
    checks it on real English speech with whisper-base)."""
    if len({len(p) for p in prompts}) > 1:
        raise DecodeError("greedy_decode_batch: prompts of different lengths; decode them in separate batches")
    if len(prompts) != len(encoder_states):
        raise DecodeError(f"greedy_decode_batch: {len(prompts)} prompts for {len(encoder_states)} encoder states")
    if cfg._mask is None:
        cfg = cfg.with_masks()
    outs: list[list[int]] = [[] for _ in prompts]
    stops: list[str] = [""] * len(prompts)
    if not prompts:
        return []
    session.reset_batch(encoder_states)
    logits = session.step_batch([list(p) for p in prompts])
    active = list(range(len(prompts)))          # batch row -> sequence index
    while True:
        keep = []
        for row, i in enumerate(active):
            stop = _advance(logits[row], outs[i], len(prompts[i]), cfg)
            if stop:
                stops[i] = stop
            else:
                keep.append(row)
        if not keep:
            return list(zip(outs, stops))
        if len(keep) < len(active):
            session.select(keep)
            active = [active[r] for r in keep]
        logits = session.step_batch([[outs[i][-1]] for i in active])


def batched(session: Any) -> bool:
    """Whether a decoder session can decode several sequences at once (:class:`BatchDecoderSession`)."""
    return all(callable(getattr(session, m, None)) for m in ("reset_batch", "step_batch", "select"))


def tokenizer_text(tokenizer: Any) -> Callable[[list[int]], str]:
    """A tokens -> text function from a HF Whisper tokenizer (special tokens dropped, stripped)."""
    def to_text(tokens: list[int]) -> str:
        return tokenizer.decode(tokens, skip_special_tokens=True).strip()
    return to_text
