"""Clips through a backend: features once per batch of clips, the encoder per clip, every task a clip has, one record
per (clip, task). The fp32 and compiled transcription stages run it, each with its own backend."""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm import tqdm

from whisper_npu.core.languages import TRANSCRIBE
from whisper_npu.decoding.greedy import DecodeConfig, batched, greedy_decode, greedy_decode_batch

if TYPE_CHECKING:
    from whisper_npu.audio.clips import Clip
    from whisper_npu.decoding.protocol import Backend


def run_backend(system: str, backend: Backend, clips: Sequence[Clip], feats: Sequence[np.ndarray],
                cfg: DecodeConfig, to_text: Callable[[list[int]], str]) -> list[dict[str, Any]]:
    """Decode a batch of clips (``feats[i]`` the features of ``clips[i]``) with every task each has; one record
    per (clip, task).

    The encoder runs per clip. A decoder that batches (:func:`whisper_npu.decoding.greedy.batched`: the torch
    reference) decodes every (clip, task) of the batch at once, the others one at a time (ONNX, NPU: batch 1).
    ``seconds`` is the clip's encoder time for the transcribe task (the encoder output is reused for translate)
    plus the item's decode time; in a batch, the batch's decode time shared equally by its items.
    """
    items, encode_seconds = [], []
    for clip, f in zip(clips, feats):
        start = time.perf_counter()
        states = backend.encoder(f)
        encode_seconds.append(time.perf_counter() - start)
        items += [(clip, states, task, cfg.prompt(clip.whisper_lang, task)) for task in clip.tasks()]
    if batched(backend.decoder) and len(items) > 1:
        start = time.perf_counter()
        results = greedy_decode_batch(backend.decoder, np.concatenate([it[1] for it in items]),
                                      [it[3] for it in items], cfg)
        decode_seconds = [(time.perf_counter() - start) / len(items)] * len(items)
    else:
        results, decode_seconds = [], []
        for _, states, _, prompt in items:
            start = time.perf_counter()
            results.append(greedy_decode(backend.decoder, states, prompt, cfg))
            decode_seconds.append(time.perf_counter() - start)
    encode = {c.id: s for c, s in zip(clips, encode_seconds)}
    return [{"id": clip.id, "lang": clip.lang, "task": task, "system": system, "tokens": tokens,
             "text": to_text(tokens), "stop": stop,
             "seconds": dec + (encode[clip.id] if task == TRANSCRIBE else 0.0)}
            for (clip, _, task, _), (tokens, stop), dec in zip(items, results, decode_seconds)]


def run_clips(system: str, backend: Backend, clips: Sequence[Clip], features: Callable[[Clip], np.ndarray],
              cfg: DecodeConfig, to_text: Callable[[list[int]], str], batch_size: int) -> list[dict[str, Any]]:
    """``backend`` on every clip, ``batch_size`` clips at a time: one batch's features are in memory at once, so
    memory stays flat in the number of clips."""
    records: list[dict[str, Any]] = []
    with tqdm(total=len(clips), desc=f"decode {system}", unit="clip") as bar:
        for first in range(0, len(clips), batch_size):
            chunk = clips[first:first + batch_size]
            records += run_backend(system, backend, chunk, [features(c) for c in chunk], cfg, to_text)
            bar.update(len(chunk))
    return records
