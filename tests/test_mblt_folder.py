"""Mobilint's model folder (stages/mobilint_model.py) against Mobilint's REAL loader, transformers-mblt 0.6.1.

transformers-mblt needs transformers < 5.18 and this environment pins 5.24, so it is not installed: its
pure-Python wheels (transformers-mblt 0.6.1, mblt-npu-python 0.1.0) are read from a download
(``make setup`` puts them in .venv/mblt-wheels; or set MBLT_WHEELS to a folder holding them) and
imported from the .whl files. Its config and model classes import fine with transformers 5.24.
Only the NPU part is replaced (named below): ``MobilintNPUBackend.create``/``launch`` open the device."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT

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


def _run(tmp_path: Path, tiny_model_dir: Path, enc: Path, dec: Path) -> Path:
    out = tmp_path / "compiled" / "mobilint-whisper"
    mobilint_model.main(["--model", str(tiny_model_dir), "--encoder", str(enc), "--decoder", str(dec),
                         "--out", str(out)])
    return out


def test_folder_layout(tmp_path, tiny_model_dir):
    from safetensors.numpy import load_file

    enc, dec = _compiled(tmp_path, tiny_model_dir, schemes=("global4", "single"))
    out = _run(tmp_path, tiny_model_dir, enc, dec)
    config = json.loads((out / "config.json").read_text())
    ref = json.loads((tiny_model_dir / "hf" / "config.json").read_text())
    assert config["model_type"] == "mobilint-whisper"
    assert config["architectures"] == ["MobilintWhisperForConditionalGeneration"]
    assert {k: config[k] for k in ("d_model", "vocab_size", "max_target_positions")} == \
        {k: ref[k] for k in ("d_model", "vocab_size", "max_target_positions")}
    assert (config["encoder_core_mode"], config["encoder_target_clusters"]) == ("global4", [1])
    assert (config["decoder_core_mode"], config["decoder_target_cores"]) == ("single", ["0:3"])
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


@pytest.mark.parametrize("schemes,target,expect", [
    (("all", "all"), "aries-rb", {"encoder_core_mode": "single", "encoder_target_cores": ["0:0:0"],
                                  "decoder_core_mode": "single", "decoder_target_cores": ["0:0:3"]}),
    (("global4", "single"), "aries-rb", {"encoder_core_mode": "global4", "decoder_target_cores": ["0:0:3"]}),
    (("single", "single"), "regulus-rb", {"encoder_target_device": "regulus-rb", "decoder_target_cores": ["0:0:0"]}),
])
def test_real_transformers_mblt_reads_the_folder(transformers_mblt, tmp_path, tiny_model_dir, schemes, target,
                                                 expect):
    """Mobilint's own config class parses config.json, and its model class finds both .mxq files inside
    the folder and loads model.safetensors with no missing or unexpected weights."""
    from mblt_npu import npu_backend
    from transformers_mblt.models.whisper.configuration_whisper import (
        MobilintWhisperConfig,
    )
    from transformers_mblt.models.whisper.modeling_whisper import (
        MobilintWhisperForConditionalGeneration,
    )

    enc, dec = _compiled(tmp_path, tiny_model_dir, schemes=schemes, target=target)
    out = _run(tmp_path, tiny_model_dir, enc, dec)
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
