"""`whisper-npu transcribe`: long-form decoding with timestamps, the output formats, bad inputs, the `.mxq` path
against the runtime STAND-IN (tests/standin_qbruntime, not the real runtime), and (slow) real English through
whisper-base in fp32 and as the pipeline's ONNX Runtime INT8 models."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import ROOT, VENV_BIN

from whisper_npu.decoding import longform
from whisper_npu.decoding.greedy import DecodeConfig

SPEECH = Path(__file__).parent / "fixtures" / "speech" / "en_us"
STANDIN_RT = Path(__file__).parent / "standin_qbruntime"

# A made-up vocabulary laid out like Whisper's: text, EOT, SOT, languages, tasks, notimestamps, then timestamps.
EOT, SOT, EN, DE, TRANSLATE, TRANSCRIBE, NO_TS = 200, 201, 202, 203, 204, 205, 206
TS = NO_TS + 1
V = TS + 1501                    # 1501 timestamps: 0.00 to 30.00 s


def cfg(**kw) -> DecodeConfig:
    base = dict(sot=SOT, eot=EOT, no_timestamps=NO_TS, lang_to_id={"en": EN, "de": DE},
                task_to_id={"transcribe": TRANSCRIBE, "translate": TRANSLATE}, vocab_size=V,
                max_target_positions=448, max_new_tokens=224, suppress_timestamps=False, repeat_times=0)
    return DecodeConfig(**{**base, **kw}).with_masks()


class Scripted:
    """A decoder session that prefers ``script[i]`` at step i (every other logit lower)."""

    def __init__(self, script: list[int], language: int = EN):
        self.script, self.language, self.i = script, language, 0

    def reset(self, states) -> None:
        self.i = 0

    def step(self, tokens):
        logits = np.zeros(V, np.float32)
        if list(tokens) == [SOT]:
            logits[self.language] = 10
            return logits
        logits[self.script[min(self.i, len(self.script) - 1)]] = 10
        self.i += 1
        return logits


def test_timestamp_rules_follow_openai_whisper():
    c = cfg()
    row = np.zeros(V, np.float32)
    first = longform._timestamp_mask(row, [], c)
    assert np.isneginf(first[:TS]).all() and np.isfinite(first[TS:TS + 51]).all() and np.isneginf(first[TS + 51:]).all()
    likes_eot = row.copy()
    likes_eot[EOT] = 10.0
    after_open = longform._timestamp_mask(likes_eot, [TS + 3, 10, TS + 20], c)   # an open pair: close it or end
    assert np.isneginf(after_open[:EOT]).all() and np.isfinite(after_open[EOT])
    assert np.isneginf(after_open[TS:TS + 20]).all() and np.isfinite(after_open[TS + 20])
    after_pair = longform._timestamp_mask(row, [TS + 3, 10, TS + 20, TS + 20], c)   # a closed pair: text next
    assert np.isneginf(after_pair[TS:]).all() and np.isfinite(after_pair[10])
    forced = row.copy()
    forced[TS:] = 5.0                     # timestamps together likelier than any text token
    assert np.isneginf(longform._timestamp_mask(forced, [TS, 10], c)[:TS]).all()


def test_segments_and_seek_like_transcribe():
    segs, advance = longform._segments([TS, 10, 11, TS + 50, TS + 50, 12, TS + 150, TS + 150, 13, TS + 400], TS, 30.0)
    assert [(s.start, s.end, s.tokens) for s in segs] == [(30.0, 31.0, [10, 11]), (31.0, 33.0, [12]),
                                                          (33.0, 38.0, [13])]
    assert advance is None                                   # single timestamp ending: the whole window
    segs, advance = longform._segments([TS, 10, TS + 100, TS + 100, 11], TS, 0.0)   # unfinished last segment
    assert [(s.start, s.end) for s in segs] == [(0.0, 2.0)] and advance == pytest.approx(2.0)


def test_long_audio_is_transcribed_window_after_window():
    """90 s of audio: three windows, each with text, segment times increasing and covering the audio."""
    script = [TS, 10, 11, TS + 500, TS + 500, 12, TS + 1000, EOT]   # 0-10 s, 10-20 s, then nothing said
    backend = type("B", (), {"encoder": staticmethod(lambda f: np.zeros((1, 1500, 4), np.float32)),
                             "decoder": Scripted(script)})()
    audio = np.zeros(90 * 16000, np.float32)
    result = longform.transcribe(backend, audio, lambda chunk: chunk, cfg(), lambda t: " ".join(map(str, t)))
    assert result.language == "en" and result.stops == ["eot", "eot", "eot"]
    starts = [s.start for s in result.segments]
    assert starts == sorted(starts) and len(result.segments) == 6
    assert {int(s.start // 30) for s in result.segments} == {0, 1, 2}          # text in every window
    assert result.segments[-1].end <= 90.0 and result.segments[-1].start >= 60.0
    assert result.text.startswith("10 11 12")


# ---------------------------------------------------------------------------------------------- the command

def cli(*args: str, env: dict | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    full = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}", **(env or {})}
    return subprocess.run([sys.executable, "-m", "whisper_npu", "transcribe", *args], cwd=cwd, env=full,
                          capture_output=True, text=True, timeout=900)


def mxq_compiled(tmp_path: Path, tiny_model_dir: Path) -> Path:
    """compiled/{encoder,decoder} as the qbcompiler STAND-IN leaves them (the stand-in .mxq is JSON)."""
    from test_mxq_runtime import _compiled

    _compiled(tmp_path, tiny_model_dir, ("single", "single"))
    return tmp_path / "compiled"


def bad_inputs(folder: Path) -> dict[str, str]:
    """name -> the reason the one-line error must give."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "junk.wav").write_bytes(b"RIFF0000WAVEjunk")
    (folder / "empty.wav").write_bytes(b"")
    (folder / "notes.txt").write_text("not audio at all\n")
    sf.write(folder / "silent.flac", np.zeros(16000, np.float32), 16000)
    return {"missing.wav": "no such file", "junk.wav": "unreadable", "empty.wav": "zero-length",
            "notes.txt": "unreadable", "silent.flac": "silent"}


def test_fp32_tiny_model_bad_inputs_and_json(tmp_path, tiny_model_dir):
    """Every bad file gets one line naming it, the good ones are still done (stereo 44.1 kHz flac included); nothing
    good at all is a non-zero exit."""
    reasons = bad_inputs(tmp_path / "in")
    y, sr = sf.read(SPEECH / "tt-weasels.wav", dtype="float32")
    stereo = tmp_path / "in" / "stereo.flac"
    import librosa
    sf.write(stereo, np.stack([librosa.resample(y, orig_sr=sr, target_sr=44100)] * 2, axis=1), 44100)
    files = [str(tmp_path / "in" / n) for n in reasons] + [str(SPEECH / "tt-weasels.wav"), str(stereo)]
    out = tmp_path / "out"
    tiny = ["--system", "fp32", "--model", str(tiny_model_dir), "--max-new-tokens", "12"]
    proc = cli(*files, *tiny, "--language", "en_us", "--output-format", "json", "--output-dir", str(out))
    assert proc.returncode == 0, proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == len(reasons) and "Traceback" not in proc.stderr, proc.stderr
    for name, reason in reasons.items():
        assert any(name in e and reason in e for e in errors), (name, errors)
    assert proc.stderr.count("real-time factor") == 2
    data = json.loads((out / "tt-weasels.json").read_text())
    assert data["language"] == "en" and data["system"] == "fp32" and data["rtf"] > 0 and data["duration"] == 2.951
    assert all(0 <= s["start"] <= s["end"] <= data["duration"] for s in data["segments"])
    assert (out / "stereo.json").is_file()
    proc = cli(*[str(tmp_path / "in" / n) for n in reasons], *tiny)
    assert proc.returncode == 1 and "none of the 5 files could be transcribed" in proc.stderr


def test_output_formats():
    from whisper_npu.cli import render

    result = {"text": "Hello there. Bye.", "segments": [{"start": 0.0, "end": 1.5, "text": "Hello there."},
                                                      {"start": 61.25, "end": 3725.5, "text": "Bye."}]}
    assert render(result, "txt") == "Hello there. Bye.\n"
    assert json.loads(render(result, "json")) == result
    assert render(result, "srt") == ("1\n00:00:00,000 --> 00:00:01,500\nHello there.\n\n"
                                     "2\n00:01:01,250 --> 01:02:05,500\nBye.\n")
    assert render(result, "vtt") == ("WEBVTT\n\n00:00:00.000 --> 00:00:01.500\nHello there.\n\n"
                                     "00:01:01.250 --> 01:02:05.500\nBye.\n")


@pytest.mark.slow
def test_mxq_files_through_the_runtime(tmp_path, tiny_model_dir):
    """The compiled `.mxq` files run through Mobilint's runtime: with the STAND-IN's "NPU" the text equals the fp32
    reference's (the stand-in computes fp32 inside); without an NPU it is one line and a non-zero exit, never a
    fall-back to another system."""
    compiled = mxq_compiled(tmp_path, tiny_model_dir)
    clip = str(SPEECH / "conf-onlyperson.wav")
    env = {"PYTHONPATH": f"{STANDIN_RT}{os.pathsep}{ROOT}", "STANDIN_QBRUNTIME_REFERENCE": str(tiny_model_dir)}
    common = ["--model", str(tiny_model_dir), "--compiled", str(compiled), "--language", "en", "--max-new-tokens", "8"]
    on_npu = cli(clip, *common, "--output-format", "json", env={**env, "STANDIN_QBRUNTIME_NPU": "1"})
    assert on_npu.returncode == 0, on_npu.stderr
    assert json.loads(on_npu.stdout)["backend"] == "mxq"
    fp32 = cli(clip, *common, "--system", "fp32", "--output-format", "json")
    assert json.loads(on_npu.stdout)["text"] == json.loads(fp32.stdout)["text"]
    no_npu = cli(clip, *common, env=env)
    assert no_npu.returncode == 2 and no_npu.stdout == ""
    errors = [ln for ln in no_npu.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "NPU" in errors[0] and "Traceback" not in no_npu.stderr, no_npu.stderr


def test_missing_compiled_model_is_one_line(tmp_path, tiny_model_dir):
    proc = cli(str(SPEECH / "tt-weasels.wav"), "--model", str(tiny_model_dir), "--compiled", str(tmp_path / "none"))
    assert proc.returncode == 2 and "no compiled encoder here" in proc.stderr and "Traceback" not in proc.stderr


# ---------------------------------------------------------------------------------------------- real speech

@pytest.mark.slow
def test_real_english_fp32_onnxruntime_compare_and_long_audio(real_english_run, tmp_path):
    """whisper-base on a short real clip gives the words, fp32 and the pipeline's INT8 ONNX Runtime model alike;
    `--compare` prints both, their differences and the WER; 80 s of real speech (the two clips joined) gives text
    in every 30 s window and segment times that increase and cover the audio."""
    model, compiled = real_english_run / "models" / "reference", real_english_run / "compiled"
    clip = str(SPEECH / "tt-weasels.wav")
    proc = cli(clip, "--compare", "--model", str(model), "--compiled", str(compiled))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("fp32     (torch, RTF ") and lines[1].startswith("compiled (onnxruntime-dynamic, RTF ")
    for line in lines[:2]:   # each system's text
        words = line.split(": ", 1)[1].lower()
        assert "weasels" in words and "phone system" in words, proc.stdout
    assert re.search(r"WER of compiled against fp32: \d\.\d{3}", proc.stdout)
    parts = []
    for name in ("conf-onlyperson", "tt-weasels"):
        y, sr = sf.read(SPEECH / f"{name}.wav", dtype="float32")
        parts += [y, np.zeros(sr, np.float32)]
    long = tmp_path / "long.wav"
    sf.write(long, np.concatenate(parts * 10), 8000)           # 10 x (3.2 + 1 + 3.0 + 1) s = 82 s
    for system in ("fp32", "compiled"):
        proc = cli(str(long), "--system", system, "--model", str(model), "--compiled", str(compiled),
                   "--language", "en", "--output-format", "json")
        assert proc.returncode == 0, proc.stderr
        segs = json.loads(proc.stdout)["segments"]
        assert [s["start"] for s in segs] == sorted(s["start"] for s in segs), segs
        assert all(s["start"] < s["end"] for s in segs), segs
        assert {int(s["start"] // 30) for s in segs} == {0, 1, 2}, segs        # text in every window
        assert segs[-1]["end"] > 70, segs
        assert json.loads(proc.stdout)["text"].lower().count("weasels") >= 8
