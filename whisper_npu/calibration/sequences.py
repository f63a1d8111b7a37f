"""Calibration sets for the encoder and decoder: task mix, decoder token sequences and embeddings, the
tutorial's list files (write, read, validate). Shared by the calibrate_* and compile stages; clips, audio
and features come from whisper_npu/audio.py.

The tutorial's ``calibration/create_calibration.py`` (docs/tutorial.md) writes

* ``encoder/whisper_encoder_cali.txt``: one ``.npy`` path per line, each a ``[1, 3000, 80]`` float32 log-mel
  (the HF features transposed: frames x mel bins), and
* ``decoder/whisper_decoder_calib.json``: ``info`` (input names and shapes), ``calib paths`` as
  ``[decoder_hidden_states.npy, encoder_hidden_states.npy]`` pairs (decoder input first, the runtime's
  input order), ``metadata`` per sample; plus ``whisper_decoder_calib_metadata.json`` (decoded strings).

This module keeps those file names and formats and fixes the tutorial's defects:

1. **Unseeded random, unsorted files.** The 80/20 task draw used an unseeded ``random.random()`` and the
   clips came in ``os.listdir`` order. Here clips are read from each language's manifest, sorted by id, and
   the task mix is a seeded permutation (params ``seed``): same params, byte-identical outputs.
2. **English normalizer on every language.** ``tokenizer.normalize`` (Whisper's EnglishTextNormalizer:
   lower-case, NFKD, combining marks dropped) mangled Korean, Thai, Tamil, Arabic... before re-tokenizing.
   Generated text is now used as the model's own token ids (no decode/normalize/re-tokenize); label and
   reference text is tokenized as written.
3. **Tamil missing** from the tutorial's FLEURS-to-Whisper map, so Tamil clips were silently left out of the
   decoder set. The one language table (whisper_npu/languages.py) covers every language in params.
4. **Absolute paths inside outputs.** Lists hold paths relative to the list file; :func:`read_encoder_list`
   and :func:`read_decoder_json` resolve them, and the compile stage hands the compiler a copy with absolute
   paths in a temporary folder (whisper_npu/backends/calib_sets.py).
5. **Both tasks generated, one thrown away.** The tutorial generated a transcription AND a translation for
   every clip and then kept one. The task is drawn first; only that task is generated.
6. **Encoder run three times per clip** (once for the saved states, once inside each ``generate``). It runs
   once per clip, batched, and its output feeds both the saved states and ``generate(encoder_outputs=...)``.

Also changed, on purpose: the translate share is exact per language (``round(ratio x N)`` clips, half up)
instead of an expected value; empty generations are kept (``[SOT, lang, task, notimestamps, EOT]`` is a real
decoder sequence) instead of skipped, so the counts stay exact; the token sequence is built from explicit
special-token ids, so slow and fast tokenizers give the same ids (setting ``tokenizer.language`` does not
update a fast tokenizer's prefix); sequences longer than the model's positions are truncated (the tutorial's
4096 cap was larger than Whisper's 448 positions).
"""
from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from whisper_npu.core.errors import StageError
from whisper_npu.core.languages import TRANSCRIBE, TRANSLATE
from whisper_npu.core.seeds import task_mix_rng

if TYPE_CHECKING:
    from whisper_npu.audio.clips import Clip

log = logging.getLogger(__name__)

ENCODER_STATES = "encoder_hidden_states.npy"
DECODER_STATES = "decoder_hidden_states.npy"


# ---------------------------------------------------------------------------------------------- task mix

def n_translate(n: int, ratio: float) -> int:
    """Clips of ``n`` that use the translate task: ``ratio * n`` rounded half up (not banker's rounding)."""
    return min(n, int(math.floor(ratio * n + 0.5)))


def percent(fraction: float) -> int:
    """A prefix fraction in whole percent (params check: distinct per list)."""
    return int(round(fraction * 100))


def task_mix(clips: Iterable[Clip], ratio: float, seed: int, fraction: float = 1.0) -> dict[str, str]:
    """Clip id -> task. Per language exactly ``n_translate(N, ratio)`` clips translate, chosen by a seeded
    permutation of the language's clips sorted by id; each audio-prefix ``fraction`` draws on its own.

    English clips are drawn like the others: Whisper's translate task on English audio is valid and yields
    English text (the tutorial did the same), so every language gets the same task prompt mix.
    """
    by_lang: dict[str, list[str]] = {}
    for c in clips:
        by_lang.setdefault(c.lang, []).append(c.id)
    tasks: dict[str, str] = {}
    for lang, ids in sorted(by_lang.items()):
        ids = sorted(ids)
        rng = task_mix_rng(seed, lang, None if fraction == 1.0 else percent(fraction))
        perm = rng.permutation(len(ids))
        chosen = {ids[i] for i in perm[: n_translate(len(ids), ratio)]}
        tasks.update({i: TRANSLATE if i in chosen else TRANSCRIBE for i in ids})
    return tasks


# ---------------------------------------------------------------------------------------------- tokens

@dataclass(frozen=True)
class SpecialTokens:
    sot: int
    eot: int
    notimestamps: int
    transcribe: int
    translate: int

    @classmethod
    def from_tokenizer(cls, tokenizer: Any) -> SpecialTokens:
        return cls(*(token_id(tokenizer, t) for t in ("<|startoftranscript|>", "<|endoftext|>",
                                                       "<|notimestamps|>", "<|transcribe|>", "<|translate|>")))


def token_id(tokenizer: Any, token: str) -> int:
    """Id of a special token; raise StageError when the tokenizer does not know it."""
    i = tokenizer.convert_tokens_to_ids(token)
    if i is None or i == tokenizer.unk_token_id and token != tokenizer.unk_token:
        raise StageError(f"tokenizer: no token {token!r} (a multilingual Whisper tokenizer is needed)")
    return int(i)


def prefix_ids(tokenizer: Any, whisper_lang: str, task: str) -> list[int]:
    """``[SOT, <|lang|>, <|task|>, <|notimestamps|>]``, what the slow tokenizer of the tutorial prepends."""
    sp = SpecialTokens.from_tokenizer(tokenizer)
    return [sp.sot, token_id(tokenizer, f"<|{whisper_lang}|>"), sp.translate if task == TRANSLATE else sp.transcribe,
            sp.notimestamps]


def sequence_from_generated(prefix: Sequence[int], generated: Sequence[int], eot: int,
                            max_len: int, strip_eot: bool = False) -> tuple[list[int], bool]:
    """Full decoder sequence from ``generate`` output: prefix + text ids up to the first EOT + EOT (no final
    EOT with ``strip_eot``, the newest tutorial recipe).

    ``generated`` may or may not start with the prefix (transformers versions differ); padding after EOT is
    dropped. Returns (ids, truncated).
    """
    ids = [int(t) for t in generated]
    if ids[: len(prefix)] == list(prefix):
        ids = ids[len(prefix):]
    if eot in ids:
        ids = ids[: ids.index(eot)]
    return _finish(list(prefix), ids, eot, max_len, strip_eot)


def sequence_from_text(tokenizer: Any, prefix: Sequence[int], text: str, eot: int,
                       max_len: int, strip_eot: bool = False) -> tuple[list[int], bool]:
    """Full decoder sequence for a given text: prefix + tokens of ``" " + text.strip()`` + EOT.

    The leading space is how Whisper's own outputs and openai-whisper's prompts encode text; no text
    normalization is applied (the tutorial's English normalizer is a defect for other languages).
    """
    text = text.strip()
    ids = tokenizer.encode(" " + text, add_special_tokens=False) if text else []
    return _finish(list(prefix), list(ids), eot, max_len, strip_eot)


def _finish(prefix: list[int], text_ids: list[int], eot: int, max_len: int,
            strip_eot: bool = False) -> tuple[list[int], bool]:
    end = [] if strip_eot else [eot]
    room = max_len - len(prefix) - len(end)
    truncated = len(text_ids) > room
    return prefix + text_ids[:room] + end, truncated
