"""Reproducible on any machine (docs/guarantees.md): the log-mel features have the same bytes whatever kernels the CPU
libraries pick, and espeak-ng's speech does not depend on the machine's history (a fresh HOME)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import ROOT

SPEECH = Path(__file__).parent / "fixtures" / "speech" / "en_us"
NPY_DISPATCH = "X86_V3 X86_V4 AVX512_ICL AVX512_SPR"   # numpy 2.x's x86 dispatch targets above its X86_V2 baseline
# kernel switches this machine can exercise (each read when its library loads: one subprocess per setting)
KERNELS = {
    "default": {},
    "MKL_CBWR=COMPATIBLE": {"MKL_CBWR": "COMPATIBLE"},
    "MKL_ENABLE_INSTRUCTIONS=AVX2": {"MKL_ENABLE_INSTRUCTIONS": "AVX2"},
    "ATEN_CPU_CAPABILITY=default": {"ATEN_CPU_CAPABILITY": "default"},
    "NPY_DISABLE_CPU_FEATURES": {"NPY_DISABLE_CPU_FEATURES": NPY_DISPATCH},
    "OPENBLAS_CORETYPE=Prescott": {"OPENBLAS_CORETYPE": "Prescott"},
    "libm without FMA/AVX2": {"GLIBC_TUNABLES": "glibc.cpu.hwcaps=-FMA,-AVX2"},
    "one thread": {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
}
FEATURES = """
import hashlib, sys, numpy as np
from transformers import WhisperFeatureExtractor
from whisper_npu.audio.features import npu_features
fe = WhisperFeatureExtractor(feature_size=80)
clips = np.load(sys.argv[1])
print(hashlib.sha256(b"".join(npu_features(fe, clips[k]).tobytes() for k in sorted(clips.files))).hexdigest())
"""


def clips() -> dict[str, np.ndarray]:
    import librosa

    out = {}
    for f in sorted(SPEECH.glob("*.wav")):
        y, sr = sf.read(f, dtype="float32")
        out[f.stem] = librosa.resample(y, orig_sr=sr, target_sr=16000).astype(np.float32)
    rng = np.random.default_rng(0)
    t = np.arange(35 * 16000) / 16000          # longer than the window: truncated
    out["chirp_35s"] = (0.3 * np.sin(2 * np.pi * (120 * t + 30 * t * t)) + 0.01 * rng.standard_normal(t.size)
                        ).astype(np.float32)
    out["silence"] = np.zeros(16000, np.float32)
    return out


def test_features_match_the_feature_extractor():
    from transformers import WhisperFeatureExtractor

    from whisper_npu.audio.features import npu_features

    fe = WhisperFeatureExtractor(feature_size=80)
    for name, y in clips().items():
        ours = npu_features(fe, y)
        theirs = fe(y, sampling_rate=16000, return_tensors="np").input_features.transpose(0, 2, 1)
        assert ours.shape == (1, 3000, 80) and ours.dtype == np.float32 and ours.flags.c_contiguous
        assert float(np.abs(ours - theirs).max()) < 1e-4, name


@pytest.mark.slow
def test_features_have_the_same_bytes_under_every_kernel_setting(tmp_path):
    """MKL (FFT, SGEMM), ATen, numpy's dispatch (AVX-512 down to the baseline), OpenBLAS, glibc's libm variant and
    the thread count are switched one at a time in subprocesses: the features' bytes never change."""
    np.savez(tmp_path / "clips.npz", **clips())
    base = {k: v for k, v in os.environ.items() if not any(k.startswith(p) for p in ("MKL_", "ATEN_", "NPY_",
                                                                                      "OPENBLAS_", "GLIBC_"))}
    hashes = {}
    for name, env in KERNELS.items():
        proc = subprocess.run([sys.executable, "-c", FEATURES, str(tmp_path / "clips.npz")], cwd=ROOT,
                              env={**base, **env, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                              timeout=600)
        assert proc.returncode == 0, proc.stderr
        hashes[name] = proc.stdout.strip()
    assert len(set(hashes.values())) == 1, hashes


SYNTH = """
import hashlib, json, sys
from whisper_npu.params.audio import AudioParams
from whisper_npu.sources import loader
params = AudioParams.model_validate(json.loads(sys.argv[1]))
clip = loader.get_clips(sys.argv[2], params, 7).calibration[0]   # the process's first espeak-ng call is this clip's
print(json.dumps([clip.source["voice"]] + [hashlib.sha256(clip.data()).hexdigest() for _ in range(2)]))
"""


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["", "m3", "f2", "f4"])
def test_synthetic_speech_is_the_same_in_a_fresh_home(tmp_path, variant):
    """espeak-ng's first call in a fresh HOME (no ~/.config/pulse, an empty TMPDIR) gave other bytes for voices with
    breath noise (the f2 variant): libpulse spent the process's unseeded rand() on a runtime folder name. Now the
    first call of a process in a fresh HOME gives the bytes of the second, for every variant the source uses."""
    from conftest import section

    audio = section("audio", source="synth", calibration_clips=1, eval_clips=0,
                    synth={"variants": [variant]}).model_dump()
    for lang in ("ja_jp", "ar_eg"):
        home, tmp = tmp_path / f"{lang}-home", tmp_path / f"{lang}-tmp"
        home.mkdir()
        tmp.mkdir()
        env = {**{k: v for k, v in os.environ.items() if k not in ("XDG_RUNTIME_DIR", "PULSE_SERVER")},
               "HOME": str(home), "TMPDIR": str(tmp), "PYTHONPATH": str(ROOT)}
        proc = subprocess.run([sys.executable, "-c", SYNTH, json.dumps(audio), lang], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr
        voice, first, second = json.loads(proc.stdout)
        assert voice.endswith(f"+{variant}" if variant else voice.split("+")[0])
        assert first == second, f"{voice}: the first espeak-ng call in a fresh HOME differs from the second"


# kernel switches that stand for another x86-64 CPU (AVX2 only, or older), each in its own process
OTHER_CPUS = {
    "this CPU": {},
    "AVX2 CPU": {"MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"},
    "SSE4.2 CPU": {"MKL_ENABLE_INSTRUCTIONS": "SSE4_2", "ONEDNN_MAX_CPU_ISA": "SSE41",
                   "ATEN_CPU_CAPABILITY": "default"},
}


@pytest.mark.slow
def test_decoder_set_has_the_same_bytes_on_another_cpu(tmp_path, tiny_model_dir):
    """The decoder calibration set (float encoder states and embeddings of generated text, from torch) pins torch's
    CPU kernels (whisper_npu/device.py), so the stage gives the same bytes with the kernels of another CPU. Without
    the pin the AVX2 setting gave other bytes (measured when the pin was written)."""
    from test_calibration import make_audio, write_params

    from whisper_npu.core.files import sha256_tree

    make_audio(tmp_path / "audio", labels=tmp_path / "labels")
    params = write_params(tmp_path / "params.yaml", text_source="generated")
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MKL_", "ATEN_", "ONEDNN_"))}
    trees = {}
    for name, env in OTHER_CPUS.items():
        out = tmp_path / name.replace(" ", "-")
        proc = subprocess.run([sys.executable, "-m", "stages.calibrate_decoder", "--params", str(params), "--audio",
                               str(tmp_path / "audio"), "--text", str(tmp_path / "decoder_text.jsonl"), "--model",
                               str(tiny_model_dir), "--out", str(out), "--metrics", str(tmp_path / f"{out.name}.json")],
                              cwd=ROOT, env={**base, **env, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                              timeout=900)
        assert proc.returncode == 0, proc.stderr
        trees[name] = sha256_tree(out)
    assert len(set(trees.values())) == 1, trees
