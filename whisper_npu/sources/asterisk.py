"""Source ``asterisk``: recorded speech from Debian's Asterisk prompt packages (offline, through apt).

Each language is two packages of one pinned version (:data:`PROMPT_SETS`): ``asterisk-core-sounds-<l>-wav``
(8 kHz mono 16-bit WAV prompts, one speaker) and ``asterisk-core-sounds-<l>`` (the transcript list).

* **Fetch**: the ``.deb`` files are kept in ``audio.asterisk.cache``; a missing one is fetched with
  ``apt-get download NAME=VERSION`` (no install, no root needed, current apt lists needed: ``make setup``
  runs ``apt-get update``). Every file is checked against its pinned sha256 before use: a missing package
  or a different file is a :class:`StageError` naming it. Unpacked with ``dpkg-deb -x`` into a temporary
  folder, so nothing of the machine's own files is read.
* **Transcripts**: ``usr/share/doc/<pkg>/core-sounds-<l>.txt.gz``, lines ``name: text``; a line starting with
  ``;`` is a comment (a ``;`` inside a text is text); ``name`` is the WAV's path below the voice folder without
  ``.wav`` (``digits/1``); a UTF-8 byte-order mark (Italian) is dropped; the last line of a repeated name wins
  (Spanish lists ``digits/0`` twice).
* **Candidates**: every WAV with a non-empty transcript, between ``audio.asterisk.min_seconds`` and 30 s (a
  longer prompt would be split and lose its text). Every other WAV is recorded in ``skipped.jsonl`` with the
  reason (no transcript line, empty transcript, empty or unreadable audio such as Russian ``is.wav``, too
  short, too long, silent like the ``silence/<n>`` prompts). The candidates (sorted by name) are one pool
  for both roles: :func:`whisper_npu.sources.base.pools` (``first``: calibration = the first N, evaluation =
  the last N; ``seeded``: evaluation = the first N of a seeded hash order, calibration = the next N).
* Resampling 8 kHz -> 16 kHz is :func:`whisper_npu.audio.prepare`'s, as for every source.
* Licenses (from each package's ``copyright`` file) go into every manifest row.
"""
from __future__ import annotations

import gzip
import logging
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import soundfile as sf

from whisper_npu.audio import prepare as A
from whisper_npu.core.errors import StageError
from whisper_npu.core.files import sha256_file
from whisper_npu.sources.base import Selection, SourceClip, pools

if TYPE_CHECKING:
    from whisper_npu.params.audio import AudioParams

log = logging.getLogger(__name__)

VERSION = "1.6.1-1"
# Debian releases whose apt offers exactly these files (checked by downloading them and comparing sha256).
CHECKED_RELEASES = ("Debian 12 (bookworm)",)
SOUNDS = Path("usr/share/asterisk/sounds")


@dataclass(frozen=True)
class Deb:
    """One pinned Debian package file."""
    name: str
    version: str
    sha256: str

    @property
    def filename(self) -> str:
        return f"{self.name}_{self.version}_all.deb"

    @property
    def spec(self) -> str:
        return f"{self.name}={self.version}"


@dataclass(frozen=True)
class PromptSet:
    """One language's prompt packages and what is known about them."""
    suffix: str             # package suffix: asterisk-core-sounds-<suffix>
    voice: str              # folder below usr/share/asterisk/sounds/
    speaker: str
    license: str
    copyright: str
    wav_sha256: str
    text_sha256: str
    diacritics: bool = True  # False: the transcripts carry no accents, so scoring compares without them

    @property
    def wav(self) -> Deb:
        return Deb(f"asterisk-core-sounds-{self.suffix}-wav", VERSION, self.wav_sha256)

    @property
    def text(self) -> Deb:
        return Deb(f"asterisk-core-sounds-{self.suffix}", VERSION, self.text_sha256)

    @property
    def transcript_path(self) -> Path:
        return Path("usr/share/doc") / self.text.name / f"core-sounds-{self.suffix}.txt.gz"


# Licenses and holders from the packages' debian/copyright (Files: * / fr-* / it-* / ru-*).
PROMPT_SETS: dict[str, PromptSet] = {
    "en_us": PromptSet("en", "en_US_f_Allison", "Allison Smith (US English)", "CC-BY-SA-3.0",
                       "2003-2010 Allison Smith",
                       "2be3ea287d83299d143815fa804f11179a75b7affd4a758b98b55f5afc18a35d",
                       "973e797d28e37fa6ca3c0a9d6fa717e77cf1268ae916bf09fd3503113cdffa50"),
    # Spanish transcripts are written without accents ("Opcion invalida", "numero").
    "es_419": PromptSet("es", "es_MX_f_Allison", "Allison Smith (Mexican Spanish)", "CC-BY-SA-3.0",
                        "2003-2010 Allison Smith",
                        "9283a09a6d56fccdcc2bcfe86c48f0f844289cfbd46a3184d8785a6f7f569903",
                        "9afdab7f559f036649fb406e625899306ca1004df8ebe39c30bfbd5912d66f74", diacritics=False),
    "fr_fr": PromptSet("fr", "fr_CA_f_June", "June Wallack (Canadian French)", "CC-BY-SA-3.0",
                       "2006-2008 June Wallack",
                       "8d4e1bc32ed5ba7fbda40841ca1825ed20cc6232724a473c90f8bb0e53e6073e",
                       "04c82c78c570c43a7136cbc5e2488d0c470b775468dff9fbce4a131b18cf1056"),
    "it_it": PromptSet("it", "it_IT_m_Carlo", "Carlo Flora (Italian)", "CC-BY-3.0",
                       "2012 Carlo Flora",
                       "5a26638089e134b8ac39363fe249c5c93c50cd8bfdc9b2499ae61ec4a35e2fcb",
                       "3884d9457e12f21caa018c18f0d587df5d53ebea14b673d8453a134c5941ab3b"),
    "ru_ru": PromptSet("ru", "ru_RU_f_IvrvoiceRU", "Maxim Topal, ivrvoice.ru (Russian)", "CC-BY-3.0",
                       "2010 Maxim",
                       "ccbfaebfa450b7a9ddf644ae0f3d1e9017d5df7c0aebe816e946345589d38201",
                       "28a61616bb0cd3345a7ea532dec4df9f071e5d0fa9f8c1a563ea9669002f39ab"),
}


def prompt_set(lang: str) -> PromptSet:
    if lang not in PROMPT_SETS:
        raise StageError(f"audio.per_language.{lang}.source = asterisk: Debian has no Asterisk prompt set for "
                         f"{lang}; asterisk has {', '.join(sorted(PROMPT_SETS))}")
    return PROMPT_SETS[lang]


# ---------------------------------------------------------------------------------------------- fetching

def _apt_download(deb: Deb, cache: Path) -> None:
    """``apt-get download NAME=VERSION`` into a temporary folder in ``cache``, then move the file in."""
    exe = shutil.which("apt-get")
    if exe is None:
        raise StageError(f"{deb.spec}: not in {cache} and apt-get is not available to download it; put "
                         f"{deb.filename} (sha256 {deb.sha256}) into {cache}")
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache, prefix=".download-") as tmp:
        proc = subprocess.run([exe, "download", "-q", deb.spec], cwd=tmp, capture_output=True, text=True, check=False)
        got = Path(tmp) / deb.filename
        if proc.returncode != 0 or not got.is_file():
            err = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.startswith("E:")]
            raise StageError(f"{deb.spec}: apt-get download failed ({err[0] if err else f'exit {proc.returncode}'}); "
                             f"run `apt-get update` (make setup does) on a Debian release that has it "
                             f"({', '.join(CHECKED_RELEASES)} was checked), or put {deb.filename} into {cache}")
        os.replace(got, cache / deb.filename)


def fetch(deb: Deb, cache: Path) -> Path:
    """The pinned ``.deb`` in ``cache`` (downloaded when missing), after its sha256 is checked."""
    path = cache / deb.filename
    if not path.is_file():
        log.info("downloading %s into %s", deb.spec, cache)
        _apt_download(deb, cache)
    digest = sha256_file(path)
    if digest != deb.sha256:
        raise StageError(f"{path}: sha256 {digest} does not match the pinned {deb.sha256} for {deb.spec} "
                         "(whisper_npu/sources/asterisk.py); delete the file to download it again")
    return path


def unpack(debs: list[Path], dest: Path) -> None:
    """``dpkg-deb -x`` each package into ``dest`` (no install)."""
    exe = shutil.which("dpkg-deb")
    if exe is None:
        raise StageError("dpkg-deb: not installed (Debian's dpkg package); it unpacks the Asterisk prompts")
    for deb in debs:
        proc = subprocess.run([exe, "-x", str(deb), str(dest)], capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            err = proc.stderr.strip().splitlines()
            raise StageError(f"{deb}: dpkg-deb -x failed: {err[-1] if err else f'exit {proc.returncode}'}")


# ---------------------------------------------------------------------------------------------- parsing

def parse_transcripts(text: str) -> dict[str, str]:
    """``name: text`` lines -> {name: text}; ``;`` comment lines and blank lines ignored, a BOM dropped,
    the last of repeated names kept; an empty text is kept as "" (recorded as skipped later)."""
    out: dict[str, str] = {}
    for line in text.lstrip("\ufeff").splitlines():
        s = line.strip()
        if not s or s.startswith(";") or ":" not in s:
            continue
        name, _, value = s.partition(":")
        out[name.strip()] = " ".join(value.split())
    return out


@dataclass(frozen=True)
class Candidate:
    name: str        # digits/1 (path below the voice folder, without .wav)
    path: Path
    text: str
    duration: float


def candidates(voice_dir: Path, transcripts: dict[str, str], min_seconds: float,
               ref: str) -> tuple[list[Candidate], list[dict]]:
    """Usable prompts sorted by name, and one skipped row (reason) for every other WAV file."""
    keep, skipped = [], []
    wavs = sorted(p.relative_to(voice_dir).with_suffix("").as_posix() for p in voice_dir.rglob("*.wav"))
    for name in wavs:
        path = voice_dir / f"{name}.wav"
        reason = None
        text = transcripts.get(name)
        try:
            info = sf.info(str(path))
            duration = info.frames / info.samplerate
        except (sf.LibsndfileError, RuntimeError, OSError) as e:
            duration, reason = 0.0, f"unreadable: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
        if reason is None and info.frames == 0:
            reason = "empty: no samples"
        elif reason is None and text is None:
            reason = "no transcript line"
        elif reason is None and not text:
            reason = "empty transcript"
        elif reason is None and duration < min_seconds:
            reason = f"short: {duration:.2f} s < audio.asterisk.min_seconds = {min_seconds:g} s"
        elif reason is None and duration > A.MAX_SECONDS:
            reason = f"long: {duration:.2f} s > {A.MAX_SECONDS:g} s (split pieces would lose the transcript)"
        if reason is None:  # the silence/<n> prompts are "n seconds of silence": no speech to score
            try:
                A.check_silence(sf.read(str(path), dtype="float32")[0])
            except A.BadAudio as e:
                reason = str(e)
        if reason:
            skipped.append({"source_ref": f"{ref}/{name}", "reason": f"not used: {reason}"})
        else:
            keep.append(Candidate(name, path, text, round(duration, 3)))
    return keep, skipped


def clips_from(lang: str, ps: PromptSet, root: Path, params: AudioParams, seed: int) -> Selection:
    """Select the clips of one unpacked prompt set (``root`` holds usr/...)."""
    transcript = root / ps.transcript_path
    if not transcript.is_file():
        raise StageError(f"{ps.text.filename}: has no {ps.transcript_path}")
    voice_dir = root / SOUNDS / ps.voice
    if not voice_dir.is_dir():
        raise StageError(f"{ps.wav.filename}: has no {SOUNDS / ps.voice}")
    texts = parse_transcripts(gzip.decompress(transcript.read_bytes()).decode("utf-8"))
    ref = f"asterisk:{lang}"
    cands, skipped = candidates(voice_dir, texts, params.asterisk.min_seconds, ref)
    refs = [f"{ref}/{c.name}" for c in cands]
    cal, ev = pools(refs, params.calibration_clips, params.eval_clips, params.selection, seed, lang,
                    f"{ps.wav.name} ({len(cands)} prompts of {params.asterisk.min_seconds:g}-{A.MAX_SECONDS:g} s "
                    "with a transcript)")

    def clip(i: int) -> SourceClip:
        c = cands[i]
        return SourceClip(
            ref=refs[i], data=c.path.read_bytes(), text=c.text,
            text_en=c.text if lang == "en_us" else None,
            source={"kind": "asterisk", "package": ps.wav.name, "version": ps.wav.version, "prompt": c.name,
                    "speaker": ps.speaker, "license": ps.license, "copyright": ps.copyright,
                    "diacritics": ps.diacritics})

    return Selection([clip(i) for i in cal], [clip(i) for i in ev], skipped)


def clips(lang: str, params: AudioParams, seed: int) -> Selection:
    """``audio.eval_clips`` + ``audio.calibration_clips`` recorded prompts of one language from its pinned
    Debian packages."""
    ps = prompt_set(lang)
    cache = Path(params.asterisk.cache)
    debs = [fetch(ps.wav, cache), fetch(ps.text, cache)]
    with tempfile.TemporaryDirectory(prefix="asterisk-") as tmp:
        unpack(debs, Path(tmp))
        return clips_from(lang, ps, Path(tmp), params, seed)


__all__ = ["VERSION", "CHECKED_RELEASES", "PROMPT_SETS", "Deb", "PromptSet", "fetch", "unpack",
           "parse_transcripts", "candidates", "clips_from", "clips"]
