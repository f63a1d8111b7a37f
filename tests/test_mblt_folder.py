"""Mobilint's model folder (stages/mobilint_model.py) against Mobilint's REAL loader, transformers-mblt 0.6.1.

transformers-mblt needs transformers < 5.18 and this environment pins 5.24, so it is not installed: its
pure-Python wheels (transformers-mblt 0.6.1, mblt-npu-python 0.1.0) are read from a download
(``make setup`` puts them in .venv/mblt-wheels; or set MBLT_WHEELS to a folder holding them) and
imported from the .whl files. Its config and model classes, and its registration with transformers' Auto classes,
work with transformers 5.24. Only the NPU part is replaced (named below): ``MobilintNPUBackend.create``/``launch``
open the device. Placement comes from params ``npu`` (defaults: Mobilint's newest prepare_model.py)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import ROOT, params_with

from stages import mobilint_model
from whisper_npu import specs
from whisper_npu.runtimes.mobilint import folder as mblt_folder


def _wheels() -> list[Path]:
    folder = Path(os.environ.get("MBLT_WHEELS") or ROOT / ".venv" / "mblt-wheels")
    found = [next(iter(sorted(folder.glob(f"{n}-*.whl"))), None) for n in ("transformers_mblt-0.6.1",
                                                                            "mblt_npu_python-0.1.0")]
    return [w for w in found if w is not None]


def _compiled(tmp_path: Path, tiny_model_dir: Path, backend: str = "qbcompiler",
              schemes=("all", "all"), target="aries-rb") -> tuple[Path, Path]:
    from whisper_npu.model.store import load_hf

    dirs = []
    for component, scheme in zip(("encoder", "decoder"), schemes):
        d = tmp_path / "compiled" / component
        d.mkdir(parents=True)
        name = f"whisper-tiny-random_{component}.mxq"
        (d / name).write_text(json.dumps({"standin": "qbcompiler", "component": component}))
        calls = {"inference_scheme": scheme, "target_device": target}
        (d / "provenance.json").write_text(json.dumps({"backend": backend, "artifacts": {"model": name},
                                                       "resolved": {"calls": {"mxq_compile": calls}}}))
        dirs.append(d)
    tokens, positions = specs.embedding_tables(load_hf(tiny_model_dir)[0])
    np.save(dirs[1] / "embed_tokens.npy", tokens)
    np.save(dirs[1] / "embed_positions.npy", positions)
    return dirs[0], dirs[1]


TUTORIAL_012 = {"encoder": {"core_mode": "global4", "cores": [[1, 0], [1, 1], [1, 2], [1, 3]]},
                "decoder": {"core_mode": "single", "cores": [[0, 3]]}}


def _run(tmp_path: Path, tiny_model_dir: Path, enc: Path, dec: Path, npu: dict | None = None) -> Path:
    """The stage, with params.yaml's npu section (Mobilint's newest placement) changed by ``npu``."""
    out = tmp_path / "compiled" / "mobilint-whisper"
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(params_with({"npu": npu or {}})))
    mobilint_model.main(["--params", str(params), "--model", str(tiny_model_dir), "--encoder", str(enc),
                         "--decoder", str(dec), "--out", str(out)])
    return out


def test_folder_layout(tmp_path, tiny_model_dir):
    from safetensors.numpy import load_file

    enc, dec = _compiled(tmp_path, tiny_model_dir, schemes=("global4", "single"))
    out = _run(tmp_path, tiny_model_dir, enc, dec, TUTORIAL_012)
    config = json.loads((out / "config.json").read_text())
    ref = json.loads((tiny_model_dir / "hf" / "config.json").read_text())
    assert config["model_type"] == "mobilint-whisper"
    assert config["architectures"] == ["MobilintWhisperForConditionalGeneration"]
    assert {k: config[k] for k in ("d_model", "vocab_size", "max_target_positions")} == \
        {k: ref[k] for k in ("d_model", "vocab_size", "max_target_positions")}
    assert (config["encoder_core_mode"], config["encoder_target_clusters"]) == ("global4", [1])
    assert (config["decoder_core_mode"], config["decoder_target_cores"]) == ("single", ["0:3"])
    assert config["auto_map"] == {c: f"proxy_whisper.{n}" for c, n in (
        ("AutoConfig", "MobilintWhisperConfig"), ("AutoModel", "MobilintWhisperForConditionalGeneration"),
        ("AutoModelForSpeechSeq2Seq", "MobilintWhisperForConditionalGeneration"),
        ("AutoFeatureExtractor", "MobilintWhisperFeatureExtractor"))}
    assert (out / "proxy_whisper.py").is_file()
    for c in ("encoder", "decoder"):
        assert (out / config[f"{c}_mxq_path"]).read_bytes() == (tmp_path / "compiled" / c /
                                                                 config[f"{c}_mxq_path"]).read_bytes()
    tables = load_file(str(out / "model.safetensors"))
    assert set(tables) == set(mblt_folder.EMBEDDINGS)
    np.testing.assert_array_equal(tables["model.decoder.embed_tokens.weight"], np.load(dec / "embed_tokens.npy"))
    for name in ("tokenizer.json", "preprocessor_config.json", "generation_config.json"):
        assert (out / name).read_bytes() == (tiny_model_dir / "hf" / name).read_bytes()
    assert str(tmp_path) not in (out / "config.json").read_text(), "file names only, resolved by the loader"


def test_onnxruntime_build_writes_only_a_note(tmp_path, tiny_model_dir):
    enc, dec = _compiled(tmp_path, tiny_model_dir, backend="onnxruntime")
    out = _run(tmp_path, tiny_model_dir, enc, dec)
    assert [p.name for p in out.iterdir()] == ["NOT_BUILT.txt"]


@pytest.fixture
def transformers_mblt(monkeypatch):
    wheels = _wheels()
    if len(wheels) != 2:
        pytest.skip("transformers-mblt 0.6.1 / mblt-npu-python 0.1.0 wheels not downloaded (make setup, or "
                    "pip download --no-deps transformers-mblt==0.6.1 mblt-npu-python==0.1.0 -d DIR; MBLT_WHEELS=DIR)")
    for w in wheels:
        monkeypatch.syspath_prepend(str(w))
    yield
    for name in [m for m in sys.modules if m.split(".")[0] in ("transformers_mblt", "mblt_npu")]:
        del sys.modules[name]


def test_placement_the_mxq_cannot_take_is_refused_naming_the_key(tmp_path, tiny_model_dir):
    from whisper_npu.core.errors import StageError

    enc, dec = _compiled(tmp_path, tiny_model_dir, schemes=("global4", "single"))
    with pytest.raises(StageError, match=r"compiled/encoder: npu.encoder.core_mode = single: an MXQ compiled with "
                                         r"inference scheme 'global4' runs in global4"):
        _run(tmp_path, tiny_model_dir, enc, dec)
    assert not (tmp_path / "compiled" / "mobilint-whisper").exists()


@pytest.mark.parametrize("schemes,target,npu,expect", [
    # Mobilint's newest folder (prepare_model.py f3f9d540): ARIES encoder 0:0, decoder 1:0
    (("all", "all"), "aries-rb", None, {"encoder_core_mode": "single", "encoder_target_cores": ["0:0:0"],
                                        "decoder_core_mode": "single", "decoder_target_cores": ["0:1:0"]}),
    (("global4", "single"), "aries-rb", TUTORIAL_012, {"encoder_core_mode": "global4",
                                                        "encoder_target_clusters": ["0:1"],
                                                        "decoder_target_cores": ["0:0:3"]}),
    (("single", "single"), "regulus-rb", None, {"encoder_target_device": "regulus-rb",
                                                   "decoder_target_cores": ["0:0:0"]}),
])
def test_real_transformers_mblt_reads_the_folder(transformers_mblt, tmp_path, tiny_model_dir, schemes, target, npu,
                                                 expect):
    """Mobilint's own config class parses config.json, and its model class finds both .mxq files inside
    the folder and loads model.safetensors with no missing or unexpected weights."""
    from mblt_npu import npu_backend
    from transformers_mblt.models.whisper.configuration_whisper import MobilintWhisperConfig
    from transformers_mblt.models.whisper.modeling_whisper import MobilintWhisperForConditionalGeneration

    enc, dec = _compiled(tmp_path, tiny_model_dir, schemes=schemes, target=target)
    out = _run(tmp_path, tiny_model_dir, enc, dec, npu)
    config = MobilintWhisperConfig.from_pretrained(str(out))
    assert config.model_type == "mobilint-whisper"
    assert (config.encoder_mxq_path, config.decoder_mxq_path) == ("whisper-tiny-random_encoder.mxq",
                                                                  "whisper-tiny-random_decoder.mxq")
    assert {k: getattr(config, k) for k in expect} == expect
    # NPU replaced: create() would open the device (qbruntime.Accelerator); record the paths it resolves
    resolved = []
    monkey = pytest.MonkeyPatch()
    monkey.setattr(npu_backend.MobilintNPUBackend, "create",
                   lambda self: resolved.append(self.check_model_path(self.mxq_path)))
    monkey.setattr(npu_backend.MobilintNPUBackend, "launch", lambda self: None)
    try:
        model, info = MobilintWhisperForConditionalGeneration.from_pretrained(str(out), output_loading_info=True)
    finally:
        monkey.undo()
    assert [Path(p).resolve() for p in resolved] == [(out / config.encoder_mxq_path).resolve(),
                                                     (out / config.decoder_mxq_path).resolve()]
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    np.testing.assert_array_equal(model.model.decoder.embed_tokens.weight.detach().numpy(),
                                  np.load(dec / "embed_tokens.npy"))


AUTO_CLASSES = """
import json, sys
sys.path[:0] = sys.argv[2:]
import transformers_mblt
from mblt_npu import npu_backend
from transformers import AutoConfig, AutoModelForSpeechSeq2Seq
npu_backend.MobilintNPUBackend.create = lambda self: None   # NPU replaced: create/launch open the device
npu_backend.MobilintNPUBackend.launch = lambda self: None
out, got = sys.argv[1], {}
try:
    AutoConfig.from_pretrained(out)
except ValueError as e:
    got["untrusted"] = "trust_remote_code" in str(e)
got["config"] = type(AutoConfig.from_pretrained(out, trust_remote_code=True)).__name__
got["model"] = type(AutoModelForSpeechSeq2Seq.from_pretrained(out, trust_remote_code=True)).__name__
transformers_mblt.register()
got["registered"] = type(AutoModelForSpeechSeq2Seq.from_pretrained(out)).__name__
print("RESULT", json.dumps(got))
"""


def test_auto_classes_load_the_folder(transformers_mblt, tmp_path, tiny_model_dir):
    """config.json's auto_map and proxy_whisper.py, through transformers' Auto classes and transformers-mblt 0.6.1's
    real classes, in a fresh interpreter (nothing registered yet): after `import transformers_mblt` the folder
    loads with trust_remote_code=True (its proxy imports transformers-mblt), after `transformers_mblt.register()`
    without it; with neither, transformers asks for trust_remote_code."""
    enc, dec = _compiled(tmp_path, tiny_model_dir)
    out = _run(tmp_path, tiny_model_dir, enc, dec)
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "hf-modules"), "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, "-c", AUTO_CLASSES, str(out), *map(str, _wheels())], env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.split("RESULT ", 1)[1])
    assert got == {"untrusted": True, "config": "MobilintWhisperConfig",
                   "model": "MobilintWhisperForConditionalGeneration",
                   "registered": "MobilintWhisperForConditionalGeneration"}
