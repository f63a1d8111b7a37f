"""Every random stream the pipeline draws, derived from params ``seed``: one home, so a new draw picks one of
these instead of inventing its own scheme.

Each stream depends only on the seed and its own key (a language, a clip id), never on what else is in params:
adding or removing a language never changes another language's clips, voices, task mix or intervals. The
three derivations differ because each one's values are pinned by outputs that must stay byte-identical
(audio, labels, calibration sets); a new stream should use :func:`lang_rng`.
"""
from __future__ import annotations

import hashlib
import zlib

import numpy as np


def lang_rng(seed: int, lang: str, purpose: str) -> np.random.Generator:
    """numpy generator for one language and purpose (``synth-<sentence>``, or a task for the evaluate stage's
    bootstrap): ``[seed, crc32(lang), crc32(purpose)]``."""
    return np.random.default_rng([seed, zlib.crc32(lang.encode()), zlib.crc32(purpose.encode())])


def rank_key(seed: int, lang: str, ref: str) -> bytes:
    """A clip's place in a seeded order of its language's candidates: sha256 of (seed, lang, ref). Each key
    depends on its own clip only, so adding, removing or counting other candidates never reorders the rest
    (the audio stage's ``seeded`` evaluation and calibration pools)."""
    return hashlib.sha256(f"{seed}\0{lang}\0{ref}".encode()).digest()


def task_mix_rng(seed: int, lang: str, percent: int | None = None) -> np.random.Generator:
    """numpy generator for one language's calibration task mix; an audio-prefix fraction other than the whole
    clip (``percent`` of it) gets its own stream (the whole clip, None, keeps the seed's)."""
    stream = [seed, int.from_bytes(hashlib.sha256(lang.encode()).digest()[:8], "little")]
    return np.random.default_rng(stream if percent is None else stream + [percent])


def clip_seed(seed: int, clip_id: str) -> int:
    """An int seed for one clip (torch.manual_seed / torch.Generator take an int < 2**31 here)."""
    return (seed * 1_000_003 + zlib.crc32(clip_id.encode())) % (2**31)
