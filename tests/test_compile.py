"""Compile stage: the qbcompiler adapter against a STAND-IN compiler (tests/standin_qbcompiler, not the real
one), the ONNX export and INT8 backend on a tiny random Whisper, the ORT runner, provenance and metrics."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import ROOT, default_params, section

from stages import compile as compile_stage
from whisper_npu import specs
from whisper_npu.calibration import lists as calibration
from whisper_npu.calibration import sets as calib_sets
from whisper_npu.compilers.mobilint import build as build_mod
from whisper_npu.compilers.mobilint import plan as qbcompiler
from whisper_npu.compilers.onnxruntime import build as ort
from whisper_npu.core.errors import StageError
from whisper_npu.core.stage import run_stage
from whisper_npu.params.full import parse_params

STANDIN = Path(__file__).parent / "standin_qbcompiler"
N_CALIB = 5


def qb_params(**changes):
    """``compile.qbcompiler`` as params.yaml sets it, with ``changes``."""
    return section("compile", qbcompiler=changes).qbcompiler


# ------------------------------------------------------------------------------------------ fixtures

@pytest.fixture(scope="module")
def calib_root(tmp_path_factory, tiny_model_dir) -> Path:
    """Tutorial-format calibration sets for the tiny model, with RELATIVE paths (as the calibrate stages)."""
    root = tmp_path_factory.mktemp("calibration")
    config = json.loads((tiny_model_dir / "hf" / "config.json").read_text())
    d = config["d_model"]
    rng = np.random.default_rng(0)
    enc = root / "encoder"
    enc.mkdir()
    names = []
    for i in range(N_CALIB):
        name = f"encoder_calib_{i:04d}.npy"
        np.save(enc / name, (rng.standard_normal((1, 3000, 80)) * 0.5).astype(np.float32))
        names.append(name)
    calibration.write_encoder_list(enc / "whisper_encoder_cali.txt", names)
    dec = root / "decoder"
    pairs, meta = [], []
    for i in range(N_CALIB):
        sample = dec / f"sample_{i:04d}"
        sample.mkdir(parents=True)
        np.save(sample / "decoder_hidden_states.npy", rng.standard_normal((1, 5 + i, d)).astype(np.float32))
        np.save(sample / "encoder_hidden_states.npy", rng.standard_normal((1, 1500, d)).astype(np.float32))
        pairs.append((f"sample_{i:04d}/decoder_hidden_states.npy", f"sample_{i:04d}/encoder_hidden_states.npy"))
        meta.append({"decoder_hidden_states": pairs[-1][0], "encoder_hidden_states": pairs[-1][1], "task_type": "x"})
    (dec / "whisper_decoder_calib.json").write_text(json.dumps(calibration.decoder_json(config, pairs, meta)))
    return root


@pytest.fixture(scope="module")
def toolchain(tmp_path_factory) -> Path:
    from stages.toolchain import onnxruntime_record

    path = tmp_path_factory.mktemp("build") / "toolchain.json"
    path.write_text(json.dumps(onnxruntime_record()))
    return path


CALIB_FILE = {"encoder": "encoder/whisper_encoder_cali.txt", "decoder": "decoder/whisper_decoder_calib.json"}


def write_params(dest: Path, **compile_over) -> Path:
    params = default_params()
    params["compile"] = _merge(params["compile"], compile_over)
    path = dest / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    parse_params(params)   # the override itself must be valid
    return path


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(base.get(k, {}), v) if isinstance(v, dict) else v
    return out


def compile_argv(component: str, params: Path, toolchain: Path, model: Path, calib_root: Path, work: Path) -> list:
    return ["--component", component, "--params", str(params), "--toolchain", str(toolchain), "--model", str(model),
            "--calibration", str(calib_root / CALIB_FILE[component]), "--out", str(work / "compiled" / component),
            "--metrics", str(work / "metrics" / f"compile_{component}.json")]


@pytest.fixture
def standin(monkeypatch, tmp_path):
    """Make ``import qbcompiler`` find the stand-in at a given version; returns a reader of its call log."""
    log = tmp_path / "standin_calls.jsonl"

    def setup(version: str, behavior: str = "", path: Path = STANDIN):
        monkeypatch.setenv("STANDIN_QBCOMPILER_VERSION", version)
        monkeypatch.setenv("STANDIN_QBCOMPILER_LOG", str(log))
        monkeypatch.setenv("STANDIN_QBCOMPILER_BEHAVIOR", behavior)
        monkeypatch.syspath_prepend(str(path))


        build_mod._PROBES.clear()
        for name in [m for m in sys.modules if m.split(".")[0] in qbcompiler.MODULE_NAMES]:
            monkeypatch.delitem(sys.modules, name)
        return lambda: [json.loads(x) for x in log.read_text().splitlines()] if log.exists() else []

    yield setup
    for name in [m for m in sys.modules if m.split(".")[0] in qbcompiler.MODULE_NAMES]:
        del sys.modules[name]
    build_mod._PROBES.clear()   # a probe that saw the stand-in must not answer for later tests


def run_main(argv: list) -> int:
    try:
        run_stage(compile_stage.main, argv)
    except SystemExit as e:
        return int(e.code or 0)
    return 0


# ------------------------------------------------------------------------------------------ pure adapter

SHAPE = (1, 80, 3000)


@pytest.mark.parametrize("api,component,expected", [
    ("0.12", "encoder", {"mblt_compile": {"backend": "hf", "target": "encoder", "device": "cpu"},
                         "mxq_compile": {"device": "cuda", "inference_scheme": "global4"}, "llm_config": None}),
    ("0.12", "decoder", {"mblt_compile": {"backend": "hf", "target": "decoder", "device": "cpu"},
                         "mxq_compile": {"device": "cuda", "inference_scheme": "single"},
                         "llm_config": {"factory": "get_llm_config",
                                        "kwargs": {"llm_config_apply": True, "use_full_seq_length": True}}}),
    ("1.0", "encoder", {"mblt_compile": {"backend": "torch", "target": "encoder", "device": "cpu"},
                        "mxq_compile": {"device": "cuda", "inference_scheme": "global4"}, "llm_config": None}),
    ("1.x", "encoder", {"mblt_compile": {"backend": "hf", "target": "encoder", "device": "cpu",
                                         "feed_dict": {"input_features": [1, 80, 3000]}},
                        "mxq_compile": {"device": "gpu", "inference_scheme": "all"}, "llm_config": None}),
    ("1.x", "decoder", {"mblt_compile": {"backend": "hf", "target": "decoder", "device": "cpu"},
                        "mxq_compile": {"device": "gpu", "inference_scheme": "all"},
                        "llm_config": {"factory": "LlmConfig", "use_full_seq_length": True}}),
    ("0.11", "decoder", {"mblt_compile": {"backend": "hf", "target": "decoder", "device": "cpu"},
                         "mxq_compile": {"device": "cuda"},
                         "llm_config": {"factory": "get_llm_config", "kwargs": {"use_full_seq_len_calib": True}}}),
])
def test_plan_matches_tutorial_calls(api, component, expected):
    plan = qbcompiler.plan_calls(api, component, qb_params(), gpu=True, input_features_shape=SHAPE)
    assert {k: plan[k] for k in expected} == expected


def test_plan_devices_and_explicit_schemes():
    qb = qb_params(device="gpu", encoder_scheme="global8")
    assert qbcompiler.plan_calls("0.12", "encoder", qb, gpu=True, input_features_shape=SHAPE)["mxq_compile"] == \
        {"device": "cuda", "inference_scheme": "global8"}          # gpu is called cuda up to 1.0
    assert qbcompiler.plan_calls("1.x", "encoder", qb_params(device="cuda"), gpu=False,
                                 input_features_shape=SHAPE)["mxq_compile"]["device"] == "gpu"
    assert qbcompiler.plan_calls("1.x", "encoder", qb_params(), gpu=False,
                                 input_features_shape=SHAPE)["mxq_compile"]["device"] == "cpu"
    with pytest.raises(StageError, match=r"needs qbcompiler >= 1.0.2"):
        qbcompiler.plan_calls("0.12", "decoder", qb_params(decoder_scheme="all"), gpu=True,
                              input_features_shape=SHAPE)


@pytest.mark.parametrize("version,api", [("0.11.0.1", "0.11"), ("0.12.0.0", "0.12"), ("1.0.0", "1.0"),
                                         ("1.0.1", "1.x"), ("1.1.0", "1.1"), ("1.2.1", "1.2"), ("1.3.2", "1.3"),
                                         ("1.4.0", "1.3")])
def test_api_of_known_versions(version, api):
    assert qbcompiler.api_of(version) == api


@pytest.mark.parametrize("version", ["0.10.0", "2.0.0", "garbage"])
def test_api_of_unknown_versions_fail(version):
    with pytest.raises(StageError, match="unknown API version"):
        qbcompiler.api_of(version)


def test_split_holdout_is_even_and_disjoint():
    calib, held = calib_sets.split_holdout(10, 3)
    assert held == [1, 5, 8] and not set(calib) & set(held) and len(calib) + len(held) == 10
    with pytest.raises(StageError, match="numerics_samples"):
        calib_sets.split_holdout(2, 2)
    assert calib_sets.pick_evenly(list(range(10)), 3) == [1, 5, 8]


# ------------------------------------------------------------------------------------------ stand-in runs

def _expected_entries(calib_root: Path, component: str) -> list[list[str]]:
    """qbcompiler calibrates on EVERY entry (no numerics hold-out: an .mxq cannot be checked here)."""
    cs = calib_sets.read_calib_set(component, calib_root / CALIB_FILE[component])
    return [[str(p) for p in cs.entries[i]] for i in range(len(cs))]


@pytest.mark.parametrize("version", ["0.12.0.0", "1.0.0", "1.0.1", "1.1.0"])
@pytest.mark.parametrize("component", ["encoder", "decoder"])
def test_standin_exact_calls(standin, version, component, tmp_path, toolchain, tiny_model_dir, calib_root):
    calls = standin(version)
    params = write_params(tmp_path, backend="qbcompiler")
    assert run_main(compile_argv(component, params, toolchain, tiny_model_dir, calib_root, tmp_path)) == 0
    out = tmp_path / "compiled" / component
    stem = f"whisper-tiny-random_{component}"
    api = qbcompiler.api_of(version)
    recorded = calls()
    assert [c["fn"] for c in recorded] == ["mblt_compile", "mxq_compile"]
    mblt, mxq = recorded[0]["kwargs"], recorded[1]["kwargs"]
    # mblt_compile: the HF model object, the tutorial's backend/target/device, an absolute save path
    # the 1.0.x tutorial (qbcompiler 1.0.0 and 1.0.1) parsed the encoder with backend="torch"
    expected_mblt = {"model": "WhisperForConditionalGeneration", "target": component, "device": "cpu",
                     "backend": "torch" if (version.startswith("1.0.") and component == "encoder") else "hf",
                     "mblt_save_path": mblt["mblt_save_path"]}
    if api in ("1.x", "1.1") and component == "encoder":
        expected_mblt["feed_dict"] = {"input_features": [1, 80, 3000]}
    if api == "1.1":   # the per-NPU 1.1.x wheels name ARIES aries2
        expected_mblt["target_device"] = "aries2"
    assert mblt == expected_mblt
    assert Path(mblt["mblt_save_path"]).is_absolute() and Path(mblt["mblt_save_path"]).name == f"{stem}.mblt"
    # mxq_compile: the .mblt, absolute calibration file listing exactly the non-held-out entries
    # `all` exists from 1.0.2 (docs CHANGELOG): 1.0.1 keeps the tutorial's global4 / single
    scheme = "all" if version == "1.1.0" else ("global4" if component == "encoder" else "single")
    expected_mxq = {"model": mblt["mblt_save_path"], "calib_data_path": mxq["calib_data_path"],
                    "save_path": mxq["save_path"], "device": "cpu", "inference_scheme": scheme,
                    "calib_entries": _expected_entries(calib_root, component),
                    **({"target_device": "aries2"} if api == "1.1" else {})}
    if component == "decoder":
        expected_mxq["llm_config"] = (
            {"factory": "LlmConfig", "apply": True, "attributes": {"calibration": {"use_full_seq_length": True}}}
            if api in ("1.x", "1.1") else
            {"factory": "get_llm_config", "kwargs": {"llm_config_apply": True, "use_full_seq_length": True}})
    assert mxq == expected_mxq
    assert Path(mxq["calib_data_path"]).is_absolute() and Path(mxq["calib_data_path"]).name == \
        Path(CALIB_FILE[component]).name
    assert not Path(mxq["calib_data_path"]).exists(), "the absolutized copy must be temporary"
    # outputs: artifacts, provenance, metric; the calibration set itself untouched (relative paths)
    assert {p.name for p in out.iterdir()} >= {f"{stem}.mblt", f"{stem}.mxq", "provenance.json"}
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["backend"] == "qbcompiler" and prov["resolved"]["compiler"]["version"] == version
    assert prov["artifacts"]["model"] == f"{stem}.mxq"
    assert str(tmp_path) not in (out / "provenance.json").read_text(), "no absolute paths in outputs"
    metrics = json.loads((tmp_path / "metrics" / f"compile_{component}.json").read_text())
    assert metrics["checked"] is False and metrics["backend"] == "qbcompiler" and metrics["held_out_samples"] == 0
    assert prov["calibration"]["held_out"] == [] and prov["resolved"]["calibrated_on"] == list(range(N_CALIB))
    assert "/" not in (calib_root / "encoder" / "whisper_encoder_cali.txt").read_text().splitlines()[0]


@pytest.mark.parametrize("behavior", ["raise:mxq_compile", "raise:mblt_compile", "nooutput:mxq_compile",
                                      "empty:mxq_compile", "empty:mblt_compile"])
def test_standin_failure_leaves_nothing(standin, behavior, tmp_path, toolchain, tiny_model_dir, calib_root, capsys):
    standin("0.12.0.0", behavior)
    params = write_params(tmp_path, backend="qbcompiler")
    out, metrics = tmp_path / "compiled" / "decoder", tmp_path / "metrics" / "compile_decoder.json"
    out.mkdir(parents=True)
    (out / "stale.mxq").write_text("from an earlier run")
    metrics.parent.mkdir(parents=True)
    metrics.write_text("{}")
    code = run_main(compile_argv("decoder", params, toolchain, tiny_model_dir, calib_root, tmp_path))
    assert code == 1
    err = capsys.readouterr().err
    fn = behavior.split(":")[1]
    assert f"qbcompiler {fn}" in err
    if behavior.startswith("raise"):
        assert "simulated compiler error" in err      # the compiler's own message is shown
    assert not out.exists() and not metrics.exists()
    assert not list((tmp_path / "compiled").glob(".*tmp*"))


def test_standin_unknown_version_fails(standin, tmp_path, toolchain, tiny_model_dir, calib_root, capsys):
    calls = standin("2.0.0")
    params = write_params(tmp_path, backend="qbcompiler")
    assert run_main(compile_argv("encoder", params, toolchain, tiny_model_dir, calib_root, tmp_path)) == 1
    assert "unknown API version" in capsys.readouterr().err and calls() == []


def test_explicit_qbcompiler_not_installed(monkeypatch, tmp_path, toolchain, tiny_model_dir, calib_root, capsys):
    build_mod._PROBES.clear()   # this interpreter has no qbcompiler (the stand-in is not on its path here)
    params = write_params(tmp_path, backend="qbcompiler")
    assert run_main(compile_argv("encoder", params, toolchain, tiny_model_dir, calib_root, tmp_path)) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install qbcompiler-" in err[0] and "mobilint/qbcompiler" in err[0]


def _standin_0_11(tmp_path: Path, patched: bool) -> Path:
    """A copy of the stand-in with a qubee-style model_dict/parser/parser.py (line 538 as in 0.11.0.1)."""
    import shutil

    root = tmp_path / "standin011"
    shutil.copytree(STANDIN, root, ignore=shutil.ignore_patterns("__pycache__"))
    parser = root / "qbcompiler" / "model_dict" / "parser"
    parser.mkdir(parents=True, exist_ok=True)
    line = "if False:" if patched else 'if self.backend == "hf":'
    (parser / "parser.py").write_text("\n" * 537 + f"        {line}\n            pass\n")
    return root


@pytest.mark.parametrize("patched", [False, True])
def test_0_11_parser_patch(standin, patched, tmp_path, toolchain, tiny_model_dir, calib_root, capsys):
    calls = standin("0.11.0.1", path=_standin_0_11(tmp_path, patched))
    params = write_params(tmp_path, backend="qbcompiler")
    code = run_main(compile_argv("decoder", params, toolchain, tiny_model_dir, calib_root, tmp_path))
    if patched:
        assert code == 0
        mxq = calls()[1]["kwargs"]
        assert mxq["llm_config"] == {"factory": "get_llm_config", "kwargs": {"use_full_seq_len_calib": True}}
        assert "inference_scheme" not in mxq
    else:
        assert code == 1 and "line 538" in capsys.readouterr().err
        assert [c["fn"] for c in calls()] == ["mblt_compile"] or calls() == []


@pytest.mark.qbcompiler
def test_real_qbcompiler_encoder(tmp_path, toolchain, tiny_model_dir, calib_root):
    """Runs only where Mobilint's real compiler imports (never on this project's CI machines)."""
    pytest.importorskip("qbcompiler")
    params = write_params(tmp_path, backend="qbcompiler")
    assert run_main(compile_argv("encoder", params, toolchain, tiny_model_dir, calib_root, tmp_path)) == 0
    assert (tmp_path / "compiled" / "encoder" / "whisper-tiny-random_encoder.mxq").stat().st_size > 0


# ------------------------------------------------------------------------------------------ onnxruntime

def test_onnx_export_matches_torch(tmp_path, tiny_model_dir):
    from whisper_npu.artifacts import ort_session as make_session
    from whisper_npu.compilers.onnxruntime import export as onnx_export
    from whisper_npu.model import store as model_store
    from whisper_npu.specs import component_spec

    model, _ = model_store.load_hf(tiny_model_dir)
    rng = np.random.default_rng(1)
    for component in ("encoder", "decoder"):
        spec = component_spec(component, model.config)
        module = onnx_export.npu_module(model, component)
        path = onnx_export.export_onnx(module, spec, tmp_path / f"{component}.onnx", 17)
        # a length different from the export example: the dynamic axis must really be dynamic
        arrays = tuple(rng.standard_normal([11 if s == -1 else s for s in t.shape]).astype(np.float32)
                       for t in spec.inputs)
        got = make_session(path).run(None, {t.name: a for t, a in zip(spec.inputs, arrays)})[0]
        want = onnx_export.run_torch(module, arrays)
        assert got.shape == want.shape
        assert ort.cosine(got, want) > 0.999


def test_decoder_layout_equals_hf_decoding(tiny_model_dir):
    """Embeddings outside + NPU decoder == the HF model's own logits for the same tokens."""
    import torch

    from whisper_npu.compilers.onnxruntime import export as onnx_export
    from whisper_npu.model import store as model_store

    model, _ = model_store.load_hf(tiny_model_dir)
    tokens = [50258, 50259, 50359, 50363, 1000, 2000]
    enc = torch.randn(1, 1500, model.config.d_model, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        want = model(encoder_outputs=(enc,), decoder_input_ids=torch.tensor([tokens])).logits.numpy()
    emb_t, emb_p = specs.embedding_tables(model)
    emb = (emb_t[tokens] + emb_p[: len(tokens)])[None]
    got = onnx_export.run_torch(onnx_export.npu_module(model, "decoder"), (emb, enc.numpy()))
    np.testing.assert_allclose(got, want, atol=1e-4)


@pytest.mark.parametrize("ort_over", [
    {"mode": "dynamic"},
    {"mode": "static", "calibration_samples": 2},
    {"mode": "static", "calibration_samples": 2, "calibrate_method": "percentile", "smooth_quant": True,
     "keep_float": ["attention_matmuls", "first_conv"]},
])
def test_onnxruntime_backend_stage(ort_over, tmp_path, toolchain, tiny_model_dir, calib_root):
    from whisper_npu.artifacts import EMBED_POSITIONS, EMBED_TOKENS, artifact
    from whisper_npu.runtimes.onnxruntime import OrtDecoderSession, load_ort_backend

    params = write_params(tmp_path, backend="onnxruntime", onnxruntime=ort_over)
    for component in ("encoder", "decoder"):
        assert run_main(compile_argv(component, params, toolchain, tiny_model_dir, calib_root, tmp_path)) == 0
        out = tmp_path / "compiled" / component
        prov = json.loads((out / "provenance.json").read_text())
        for key in ("backend", "toolchain", "options", "calibration", "model", "specs", "artifacts", "quantization"):
            assert key in prov, key
        assert prov["quantization"]["mode"] == ort_over["mode"]
        assert prov["options"]["onnxruntime"]["mode"] == ort_over["mode"]
        assert prov["model"]["name"] == "whisper-tiny-random" and prov["specs"]["component"] == component
        if ort_over["mode"] == "static" or ort_over.get("smooth_quant"):
            assert prov["resolved"]["calibrated_on"] and not set(prov["resolved"]["calibrated_on"]) & {1, 3}
            assert len(prov["calibration"]["sha256_tree"]) == 64 and prov["calibration"]["held_out"] == [1, 3]
        else:   # dynamic INT8 reads no calibration entry: nothing of the set in the output folder
            assert prov["resolved"]["calibrated_on"] == [] and prov["calibration"] == {"used": False}
        assert (out / f"whisper-tiny-random_{component}.onnx").stat().st_size > 0
        metrics = json.loads((tmp_path / "metrics" / f"compile_{component}.json").read_text())
        assert metrics["held_out"] == [1, 3]
        output = "encoder_hidden_states" if component == "encoder" else "logits"
        assert metrics["checked"] is True and metrics["export_fp32"][output]["cosine_min"] > 0.999
    backend = load_ort_backend(tmp_path / "compiled" / "encoder", tmp_path / "compiled" / "decoder")
    states = backend.encoder(np.zeros((1, 3000, 80), np.float32))
    assert states.shape == (1, 1500, 64)
    backend.decoder.reset(states)
    logits = backend.decoder.step([50258, 50259, 50359, 50363])
    assert logits.shape == (51865,) and np.isfinite(logits).all()
    assert backend.decoder.step([int(logits.argmax())]).shape == (51865,)
    assert len(backend.decoder.tokens) == 5
    # the clip-constant part run once per clip and the LM head on the last position (the default) == the file's
    # whole graph at every step, up to float rounding (ORT fuses the split graphs' kernels differently: ~1e-7 on
    # these logits); the LM head on the last position alone (dynamic) changes no bit of the row that is read
    assert backend.decoder.boundary, "nothing hoisted out of the compiled decoder"
    dec = tmp_path / "compiled" / "decoder"
    whole = OrtDecoderSession(artifact(dec), dec / EMBED_TOKENS, dec / EMBED_POSITIONS, hoist=False,
                              last_position=False)
    last = OrtDecoderSession(artifact(dec), dec / EMBED_TOKENS, dec / EMBED_POSITIONS, hoist=False)
    assert not whole.boundary and not whole.last_position
    # the LM head is an integer matmul in the dynamic mode only (a float GEMM in static QDQ: left whole)
    assert last.last_position == backend.decoder.last_position == (ort_over["mode"] == "dynamic")
    states = backend.encoder(np.random.default_rng(2).standard_normal((1, 3000, 80)).astype(np.float32))
    for session in (backend.decoder, whole, last):
        session.reset(states)
    tokens = [50258, 50259, 50359, 50363]
    for _ in range(4):
        got, want = backend.decoder.step(tokens), whole.step(tokens)
        np.testing.assert_array_equal(last.step(tokens), want)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        assert got.argmax() == want.argmax()
        tokens = [int(want.argmax())]


def test_ort_decoder_session_matches_full_run(tmp_path, tiny_model_dir):
    """step() with the prompt then one token == one run over the whole sequence (fp32 export)."""
    from whisper_npu.compilers.onnxruntime import export as onnx_export
    from whisper_npu.model import store as model_store
    from whisper_npu.runtimes.onnxruntime import OrtDecoderSession
    from whisper_npu.specs import decoder_spec

    model, _ = model_store.load_hf(tiny_model_dir)
    module = onnx_export.npu_module(model, "decoder")
    path = onnx_export.export_onnx(module, decoder_spec(model.config), tmp_path / "d.onnx", 17)
    emb_t, emb_p = specs.embedding_tables(model)
    session = OrtDecoderSession(path, emb_t, emb_p)
    enc = np.random.default_rng(0).standard_normal((1, 1500, 64)).astype(np.float32)
    session.reset(enc)
    session.step([50258, 50259, 50359])
    last = session.step([50363])
    tokens = [50258, 50259, 50359, 50363]
    want = onnx_export.run_torch(module, ((emb_t[tokens] + emb_p[:4])[None], enc))[0, -1]
    np.testing.assert_allclose(last, want, atol=1e-4)
    with pytest.raises(ValueError, match="positions"):
        session.step([1] * emb_p.shape[0])


def test_keep_float_groups(tmp_path, tiny_model_dir):
    from whisper_npu.compilers.onnxruntime import export as onnx_export
    from whisper_npu.compilers.onnxruntime import quantize as ort_int8
    from whisper_npu.model import store as model_store
    from whisper_npu.specs import component_spec

    model, _ = model_store.load_hf(tiny_model_dir)
    path = onnx_export.export_onnx(onnx_export.npu_module(model, "encoder"),
                                   component_spec("encoder", model.config), tmp_path / "e.onnx", 17)
    attn = ort_int8.keep_float_nodes(path, ["attention_matmuls"])
    assert len(attn) == 2 * model.config.encoder_layers       # QK^T and AV per layer
    assert len(ort_int8.keep_float_nodes(path, ["convs"])) == 2
    assert len(ort_int8.keep_float_nodes(path, ["first_conv"])) == 1
    with pytest.raises(ValueError, match="unknown keep_float group"):
        ort_int8.keep_float_nodes(path, ["nope"])


def test_smoothing_keeps_the_float_function(tiny_model_dir):
    from whisper_npu.compilers.onnxruntime import export as onnx_export
    from whisper_npu.compilers.onnxruntime import smoothing
    from whisper_npu.model import store as model_store

    model, _ = model_store.load_hf(tiny_model_dir)
    rng = np.random.default_rng(2)
    for component, arrays in (
            ("encoder", ((rng.standard_normal((1, 3000, 80)) * 0.5).astype(np.float32),)),
            ("decoder", (rng.standard_normal((1, 7, 64)).astype(np.float32),
                         rng.standard_normal((1, 1500, 64)).astype(np.float32)))):
        module = onnx_export.npu_module(model, component)
        before = onnx_export.run_torch(module, arrays)
        smoothed, info = smoothing.smooth(module, [arrays], alpha=0.5)
        assert info["pairs"] > 0
        np.testing.assert_allclose(onnx_export.run_torch(smoothed, arrays), before, rtol=1e-3, atol=1e-3)
        np.testing.assert_array_equal(onnx_export.run_torch(module, arrays), before)   # input untouched


def test_dvc_yaml_compile_block():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    block = stages["compile"]
    assert set(block["foreach"]) == {"encoder", "decoder"}
    deps = "\n".join(block["do"]["deps"])
    for dep in ("stages/compile.py", "${pkg}/compilers", "build/toolchain.json", "${reference}", "calibration/${key}"):
        assert dep in deps
    assert block["do"]["params"] == ["compile"]


# ------------------------------------------------------------------------------------------ real dvc CLI

@pytest.mark.slow
def test_dvc_compile_option_reruns_only_compile(project, tiny_model_dir, calib_root):
    """Real dvc CLI in a project copy (tiny model, 5-entry calibration sets put in place by hand; the
    compile stages run alone with -s). A compile option reruns both compile stages and nothing upstream;
    a changed calibration set reruns only its own component."""
    import shutil

    from conftest import run

    params = default_params()
    params["compile"]["backend"] = "onnxruntime"
    repo = project(params)
    shutil.copytree(tiny_model_dir, repo / "models" / "reference")
    shutil.copytree(calib_root, repo / "calibration")
    stages = ["compile@encoder", "compile@decoder"]

    def status() -> set[str]:
        return set(json.loads(run(["dvc", "status", "--json", *stages], repo).stdout or "{}"))

    run(["dvc", "repro", "-s", "toolchain", *stages], repo, timeout=900)
    assert status() == set()
    for c in ("encoder", "decoder"):
        assert (repo / "compiled" / c / f"whisper-tiny-random_{c}.onnx").is_file()
        assert json.loads((repo / "metrics" / f"compile_{c}.json").read_text())["checked"] is True
    shown = run(["dvc", "metrics", "show", "--json"], repo).stdout
    assert "compile_encoder.json" in shown and "cosine_min" in shown

    data = yaml.safe_load((repo / "params.yaml").read_text())
    data["compile"]["onnxruntime"]["per_channel"] = False
    (repo / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    assert status() == set(stages)
    upstream = json.loads(run(["dvc", "status", "--json", "model", "calibrate_encoder", "calibrate_decoder"],
                              repo).stdout or "{}")
    assert "compile" not in json.dumps(upstream), upstream       # no upstream stage reads compile params
    data["compile"]["onnxruntime"]["per_channel"] = True
    (repo / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    assert status() == set()

    np.save(repo / "calibration" / "decoder" / "sample_0000" / "decoder_hidden_states.npy",
            np.zeros((1, 5, 64), np.float32))
    assert status() == {"compile@decoder"}
