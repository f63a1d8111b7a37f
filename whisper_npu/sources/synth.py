"""Source ``synth``: the parallel corpus ``data/corpus.jsonl`` (24 everyday sentences in the tutorial's 17
languages) spoken by espeak-ng with a seeded voice variant, rate and pitch per clip (offline).

cmn_hans_cn is spoken from its pinyin line with the ``cmn-latn-pinyin`` voice and ja_jp from its kana line
(espeak-ng reads Han characters badly); the reference text stays in Han/kanji.
"""
from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
from importlib import resources
from typing import TYPE_CHECKING

from whisper_npu.core import languages as langs
from whisper_npu.core.errors import StageError
from whisper_npu.core.seeds import lang_rng
from whisper_npu.sources.base import Selection, SourceClip, pools

if TYPE_CHECKING:
    from whisper_npu.params.audio import AudioParams

CORPUS = "corpus.jsonl"


@functools.lru_cache(maxsize=1)
def load_corpus() -> dict[str, list[dict]]:
    """The parallel corpus: language -> rows sorted by sentence number."""
    text = resources.files("whisper_npu.sources").joinpath("data", CORPUS).read_text(encoding="utf-8")
    by_lang: dict[str, list[dict]] = {}
    for line in text.splitlines():
        if line.strip():
            row = json.loads(line)
            by_lang.setdefault(row["lang"], []).append(row)
    for rows in by_lang.values():
        rows.sort(key=lambda r: r["sentence"])
    return by_lang


# espeak-ng 1.51 draws the breath noise of voices with a `breath` line (the f2 variant, among the ones used here) from
# the process-wide, never-seeded glibc rand(). Its output setup builds a libpcaudio device even with --stdout, and
# libpcaudio probes PulseAudio: with no $XDG_RUNTIME_DIR and no ~/.config/pulse/<machine-id>-runtime link, libpulse
# makes /tmp/pulse-XXXXXXXXXXXX with 12 rand() calls per name tried (one more try for each such folder an earlier run
# left), which shifts the noise: a machine's first clip depended on $HOME, $TMPDIR and the machine's history. Naming
# an unusable server keeps libpulse from looking up a runtime folder at all (no rand(), nothing written to $HOME);
# the bytes are those of a machine where that folder already existed, where libpulse calls no rand() either.
ESPEAK_ENV = {"PULSE_SERVER": "unix:/dev/null"}


def espeak(text: str, voice: str, rate: int, pitch: int) -> bytes:
    """Speak ``text`` with espeak-ng and return its WAV bytes (22.05 kHz mono)."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise StageError("espeak-ng: not installed; install it (`sudo apt-get install espeak-ng`, or `make setup`)")
    # The text is the one argument after "--", so it cannot be taken for an option. Not --stdin: espeak-ng
    # 1.51 as released drops the last byte of stdin input (fixed in Debian's 1.51+dfsg-10+deb12u2, not in
    # every build), which cuts a final multi-byte character ("。") into invalid UTF-8 that the reader then
    # completes from whatever memory follows the text: the clip would depend on the build and on memory.
    proc = subprocess.run([exe, "-v", voice, "-s", str(rate), "-p", str(pitch), "--stdout", "--", text],
                          stdin=subprocess.DEVNULL, capture_output=True, check=False,
                          env={**os.environ, **ESPEAK_ENV})
    if proc.returncode != 0 or len(proc.stdout) <= 44:
        err = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        raise StageError(f"espeak-ng -v {voice}: failed (exit {proc.returncode}): {err[0] if err else 'no audio'}")
    return proc.stdout


def _clip(lang: str, row: dict, english: dict[int, str], params: AudioParams, seed: int) -> SourceClip:
    """One corpus sentence as a clip. Its generator is keyed by language and sentence only, so the clip sounds
    the same whatever else is selected, in whichever role, however many calibration clips there are."""
    s = params.synth
    rng = lang_rng(seed, lang, f"synth-{row['sentence']}")
    variant = s.variants[int(rng.integers(len(s.variants)))]
    rate = int(rng.integers(s.rate[0], s.rate[1] + 1))
    pitch = int(rng.integers(s.pitch[0], s.pitch[1] + 1))
    voice = langs.get(lang).espeak_voice + (f"+{variant}" if variant else "")
    spoken = row.get("speech", row["text"])
    return SourceClip(
        ref=f"synth:{lang}:{row['sentence']}",
        data=functools.partial(espeak, spoken, voice, rate, pitch),
        text=row["text"],
        text_en=english.get(row["sentence"]),
        source={"kind": "synth", "sentence": row["sentence"], "voice": voice, "rate": rate, "pitch": pitch,
                **({"spoken_text": spoken} if spoken != row["text"] else {})},
    )


def clips(lang: str, params: AudioParams, seed: int) -> Selection:
    """``audio.eval_clips`` + ``audio.calibration_clips`` corpus sentences spoken by espeak-ng, with seeded voice
    variety; the pools are :func:`whisper_npu.sources.base.pools` over the sentences in corpus order."""
    language = langs.get(lang)
    corpus = load_corpus()
    if lang not in corpus or not language.espeak_voice:
        have = ", ".join(sorted(corpus))
        raise StageError(f"languages: {lang!r} has no synthetic speech "
                         f"(no corpus text in whisper_npu/sources/data/{CORPUS}); "
                         f"with audio.source = synth use one of: {have}")
    rows = corpus[lang]
    english = {r["sentence"]: r["text"] for r in corpus.get("en_us", [])}
    refs = [f"synth:{lang}:{r['sentence']}" for r in rows]
    cal, ev = pools(refs, params.calibration_clips, params.eval_clips, params.selection, seed, lang,
                    f"the synth corpus ({CORPUS})")
    return Selection([_clip(lang, rows[i], english, params, seed) for i in cal],
                     [_clip(lang, rows[i], english, params, seed) for i in ev])
