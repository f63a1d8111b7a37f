"""The asterisk source: pinned .deb files, transcripts, candidates and skips, resampling, the stage.

Fast tests build small packages with the real ``dpkg-deb --build`` (the same format as Debian's: a tree
with DEBIAN/control) and pin their sha256 in a PromptSet, so fetching, checking, unpacking and parsing run
for real without the network. Slow tests fetch Debian's own packages with ``apt-get download``.
"""
from __future__ import annotations

import dataclasses
import gzip
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import params_with, section

from stages import audio as audio_stage
from whisper_npu.audio import prepare as A
from whisper_npu.core.errors import StageError
from whisper_npu.core.files import sha256_file, sha256_tree
from whisper_npu.params.audio import AudioParams
from whisper_npu.sources import asterisk as AS

VOICE = "xx_XX_f_Test"

TRANSCRIPT = """\ufeff; Core Asterisk Sounds in Test
; a comment line: ignored

hello: Hello, this is a test prompt.
digits/1: one two three four
semicolon: Press star; then press pound.
empty:
dup: first version
dup: second version
silence/2: two seconds of silence
short: short
long: a very long prompt
   spaced   :   text   with   spaces
"""


def tone(seconds: float, rate: int = 8000, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def build_prompt_debs(dest: Path) -> tuple[Path, Path]:
    """Two real .deb files in the layout of asterisk-core-sounds-xx(-wav)."""
    wav_root = dest / "wav-tree"
    sounds = wav_root / AS.SOUNDS / VOICE
    (sounds / "digits").mkdir(parents=True)
    (sounds / "silence").mkdir()
    for name, y in {"hello": tone(3.0), "digits/1": tone(2.5, freq=300), "semicolon": tone(4.0),
                    "dup": tone(2.2), "notext": tone(3.0), "empty": tone(3.0), "spaced": tone(2.0),
                    "silence/2": np.zeros(16000, np.float32), "short": tone(0.5), "long": tone(31.0)}.items():
        sf.write(sounds / f"{name}.wav", y, 8000, subtype="PCM_16")
    # Russian is.wav: a 44-byte WAV header and no samples
    sf.write(sounds / "is.wav", np.zeros(0, np.float32), 8000, subtype="PCM_16")
    text_root = dest / "text-tree"
    doc = text_root / "usr/share/doc/asterisk-core-sounds-xx"
    doc.mkdir(parents=True)
    # mtime 0: the same bytes every build, so one sha256 can be pinned per test run
    (doc / "core-sounds-xx.txt.gz").write_bytes(gzip.compress(TRANSCRIPT.encode("utf-8"), mtime=0))
    debs = []
    for root, name in ((wav_root, "asterisk-core-sounds-xx-wav"), (text_root, "asterisk-core-sounds-xx")):
        (root / "DEBIAN").mkdir()
        (root / "DEBIAN" / "control").write_text(
            f"Package: {name}\nVersion: {AS.VERSION}\nArchitecture: all\nMaintainer: test <t@example.com>\n"
            "Description: test prompts\n")
        out = dest / f"{name}_{AS.VERSION}_all.deb"
        subprocess.run(["dpkg-deb", "--build", "--root-owner-group", str(root), str(out)], check=True,
                       capture_output=True)
        debs.append(out)
    return debs[0], debs[1]


@pytest.fixture
def test_set(tmp_path, monkeypatch):
    """A PromptSet for xx pinned to freshly built packages in a cache folder, registered as en_us."""
    cache = tmp_path / "cache"
    cache.mkdir()
    wav, text = build_prompt_debs(cache)
    ps = AS.PromptSet("xx", VOICE, "Test Speaker", "CC-BY-SA-3.0", "2026 Test", sha256_file(wav), sha256_file(text),
                      diacritics=False)
    monkeypatch.setitem(AS.PROMPT_SETS, "en_us", ps)
    return ps, cache


def params(cache: Path, **kw) -> AudioParams:
    return section("audio", source="asterisk", asterisk={"cache": str(cache), "min_seconds": 2.0}, **kw)


def test_transcript_parsing():
    t = AS.parse_transcripts(TRANSCRIPT)
    assert t["hello"] == "Hello, this is a test prompt."
    assert t["digits/1"] == "one two three four"                       # sub-folder names kept
    assert t["semicolon"] == "Press star; then press pound."           # ';' inside a text is text
    assert t["empty"] == ""                                            # kept, skipped later
    assert t["dup"] == "second version"                                # the last repeated name wins
    assert t["spaced"] == "text with spaces"
    assert not any(k.startswith(";") or "\ufeff" in k for k in t)      # comments and the BOM dropped
    assert "notext" not in t                                           # a WAV without a line


def test_clips_skips_and_licenses(test_set):
    ps, cache = test_set
    sel = AS.clips("en_us", params(cache, calibration_clips=3, eval_clips=1), seed=0)
    # selection first: calibration = the first candidates by name, evaluation = the last
    assert [c.ref for c in sel.calibration] == ["asterisk:en_us/digits/1", "asterisk:en_us/dup",
                                                "asterisk:en_us/hello"]
    assert [c.ref for c in sel.evaluation] == ["asterisk:en_us/spaced"]
    assert [c.text for c in sel.calibration] == ["one two three four", "second version",
                                                 "Hello, this is a test prompt."]
    assert sel.calibration[0].source == {"kind": "asterisk", "package": "asterisk-core-sounds-xx-wav",
                                         "version": AS.VERSION, "prompt": "digits/1", "speaker": "Test Speaker",
                                         "license": "CC-BY-SA-3.0", "copyright": "2026 Test", "diacritics": False}
    assert sel.calibration[0].text_en == sel.calibration[0].text          # English: its own translation target
    reasons = {r["source_ref"].split("/", 1)[1]: r["reason"] for r in sel.skipped}
    assert reasons == {
        "empty": "not used: empty transcript",
        "is": "not used: empty: no samples",
        "long": "not used: long: 31.00 s > 30 s (split pieces would lose the transcript)",
        "notext": "not used: no transcript line",
        "short": "not used: short: 0.50 s < audio.asterisk.min_seconds = 2 s",
        "silence/2": "not used: silent: clip peak -inf dBFS < -60 dBFS",
    }
    with pytest.raises(StageError, match=r"asterisk-core-sounds-xx-wav \(5 prompts of 2-30 s with a transcript\) "
                                         r"has 5 clips, audio.calibration_clips \+ audio.eval_clips ask for 4 \+ 2"):
        AS.clips("en_us", params(cache, calibration_clips=4, eval_clips=2), seed=0)


def test_pinned_checksum_refusal(test_set):
    ps, cache = test_set
    wrong = dataclasses.replace(ps, wav_sha256="0" * 64)
    with pytest.raises(StageError) as e:
        AS.fetch(wrong.wav, cache)
    msg = str(e.value)
    assert f"{cache / wrong.wav.filename}: sha256 {ps.wav_sha256}" in msg
    assert f"does not match the pinned {'0' * 64} for asterisk-core-sounds-xx-wav={AS.VERSION}" in msg
    # a changed file in the cache is refused the same way
    deb = cache / ps.text.filename
    deb.write_bytes(deb.read_bytes() + b"x")
    with pytest.raises(StageError, match=r"asterisk-core-sounds-xx_1.6.1-1_all.deb: sha256 .* does not match"):
        AS.clips("en_us", params(cache, calibration_clips=1, eval_clips=1), seed=0)


def test_missing_package_names_it(tmp_path):
    """Real apt-get: a version no release carries."""
    deb = AS.Deb("asterisk-core-sounds-en-wav", "0.0-not-a-version", "0" * 64)
    with pytest.raises(StageError, match=r"asterisk-core-sounds-en-wav=0.0-not-a-version: apt-get download "
                                         r"failed \(E: .*\); run `apt-get update`"):
        AS.fetch(deb, tmp_path / "cache")
    assert not list((tmp_path / "cache").iterdir())        # no half-downloaded file left behind


def test_language_without_prompts_is_refused():
    with pytest.raises(StageError, match=r"audio.per_language.de_de.source = asterisk: Debian has no Asterisk "
                                         r"prompt set for de_de; asterisk has en_us, es_419, fr_fr, it_it, ru_ru"):
        AS.clips("de_de", section("audio", source="asterisk"), seed=0)


def test_resampling_8k_to_16k():
    """An 8 kHz telephone prompt becomes 16 kHz with the same length in seconds and the same pitch."""
    import io

    buf = io.BytesIO()
    sf.write(buf, tone(2.0, freq=440.0), 8000, subtype="PCM_16", format="WAV")
    prep = A.prepare(buf.getvalue())
    (piece,) = prep.pieces
    assert prep.info["sample_rate"] == 8000 and len(piece.samples) == 32000 and piece.duration == 2.0
    spectrum = np.abs(np.fft.rfft(piece.samples))
    assert np.argmax(spectrum) * A.SAMPLE_RATE / len(piece.samples) == pytest.approx(440.0, abs=1.0)
    # nothing above the source's Nyquist frequency (4 kHz) is invented
    assert spectrum[int(4100 * len(piece.samples) / A.SAMPLE_RATE):].max() < 1e-3 * spectrum.max()


def test_stage_writes_manifest_with_licenses_and_skips(test_set, tmp_path):
    import yaml

    ps, cache = test_set
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params_with({
        "languages": ["en_us"], "calibration": {"samples_per_language": 1},
        "audio": {"per_language": {"en_us": {"source": "asterisk", "calibration_clips": 2, "eval_clips": 2}},
                  "asterisk": {"cache": str(cache)}}})))
    out = tmp_path / "out"
    audio_stage.main(["--params", str(tmp_path / "params.yaml"), "--lang", "en_us", "--out", str(out)])
    folders = {role: out / role / "en_us" for role in ("calibration", "evaluation")}
    rows = {role: [json.loads(x) for x in (f / "manifest.jsonl").read_text().splitlines()]
            for role, f in folders.items()}
    assert [len(rows["calibration"]), len(rows["evaluation"])] == [2, 2]
    assert {r["split"] for r in rows["evaluation"]} == {"evaluation"}
    assert [r["id"] for r in rows["evaluation"]] == ["en_us_eval_0000", "en_us_eval_0001"]
    assert {r["source"]["license"] for role in rows for r in rows[role]} == {"CC-BY-SA-3.0"}
    first_row = rows["calibration"][0]
    assert first_row["source"]["audio"]["sample_rate"] == 8000
    y, rate = sf.read(folders["calibration"] / first_row["file"])
    assert rate == 16000
    for f in folders.values():   # the files the source did not offer, in each folder's skipped.jsonl
        skipped = [json.loads(x) for x in (f / "skipped.jsonl").read_text().splitlines()]
        assert {"source_ref": "asterisk:en_us/is", "reason": "not used: empty: no samples"} in skipped
    first = sha256_tree(out)
    out2 = tmp_path / "out2"
    audio_stage.main(["--params", str(tmp_path / "params.yaml"), "--lang", "en_us", "--out", str(out2)])
    assert sha256_tree(out2) == first   # byte-identical rerun
    for f in folders.values():
        assert str(tmp_path) not in (f / "manifest.jsonl").read_text() + (f / "skipped.jsonl").read_text()


@pytest.mark.parametrize("selection", ["first", "seeded"])
def test_evaluation_pool_does_not_move_with_the_calibration_count(test_set, tmp_path, selection):
    """Ids and audio bytes of the evaluation folder are the same for 1, 2 and 3 calibration prompts; the two
    pools never share a prompt."""
    ps, cache = test_set
    trees = set()
    for n in (1, 2, 3):
        p = params(cache, calibration_clips=n, eval_clips=2, selection=selection)
        sel = AS.clips("en_us", p, seed=0)
        assert len(sel.calibration) == n and not {c.ref for c in sel.calibration} & {c.ref for c in sel.evaluation}
        audio_stage.make("en_us", p, 0, tmp_path / f"cal{n}")
        trees.add(sha256_tree(tmp_path / f"cal{n}" / "evaluation" / "en_us"))
    assert len(trees) == 1


@pytest.mark.slow
def test_debian_packages_match_the_pins(tmp_path):
    """Debian's own packages, fetched with apt-get download: sha256 as pinned, and enough usable prompts
    for the default profile (6 calibration + 30 evaluation prompts per language); Russian's empty is.wav recorded
    as skipped."""
    for lang, ps in sorted(AS.PROMPT_SETS.items()):
        sel = AS.clips(lang, params(tmp_path / "cache", calibration_clips=6, eval_clips=30, selection="seeded"),
                       seed=0)
        clips = sel.calibration + sel.evaluation
        assert len(clips) == 36 and len({c.ref for c in clips}) == 36 and all(c.text for c in clips), lang
        if lang == "ru_ru":
            assert {"source_ref": "asterisk:ru_ru/is", "reason": "not used: empty: no samples"} in sel.skipped
        for deb in (ps.wav, ps.text):
            assert sha256_file(tmp_path / "cache" / deb.filename) == deb.sha256
