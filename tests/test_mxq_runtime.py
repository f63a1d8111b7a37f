"""The .mxq runner (whisper_npu/runtimes/mobilint/runtime.py) against the REAL Mobilint runtime wheels from PyPI
(``mobilint-qb-runtime`` 1.5.0 -> ``qbruntime``, ``maccel`` 0.30.1; both import without an NPU), and end to
end against the STAND-IN runtime (tests/standin_qbruntime, NOT the real one) whose method set and error class are
the real ``qbruntime``'s; placement from params ``npu`` and ``npu.require_compiled`` through the stage."""
from __future__ import annotations

import inspect
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import params_with
from runtime_surface import surface

from whisper_npu import specs
from whisper_npu.artifacts import CompiledNotRunnable
from whisper_npu.core.errors import StageError
from whisper_npu.npu import Placement
from whisper_npu.params.npu import NpuParams
from whisper_npu.runtimes.mobilint import runtime as mxq_runtime
from whisper_npu.runtimes.mobilint.runtime import compiled_scheme
from whisper_npu.runtimes.registry import load_compiled

STANDIN = Path(__file__).parent / "standin_qbruntime"
qbruntime = pytest.importorskip("qbruntime")
maccel = pytest.importorskip("maccel")


def _bind(fn, *args, **kwargs) -> None:
    """Fail unless ``fn`` accepts these arguments (its real signature)."""
    inspect.signature(fn).bind(*args, **kwargs)


# Every call mxq_runtime makes, as (object path, args, kwargs); "self" is bound for methods.
CALLS = [
    ("Accelerator", (), {"dev_no": 0}),
    ("ModelConfig", (), {}),
    ("Model", ("x.mxq", object()), {}),
    ("Model.launch", (object(), object()), {}),
    ("Model.dispose", (object(),), {}),
    ("Model.infer", (object(), [np.zeros(1)]), {}),
    ("Model.infer", (object(), [np.zeros(1), np.zeros(1)]), {"cache_size": 3}),
    ("Model.get_input_buffer_info", (object(),), {}),
    ("ModelConfig.set_single_core_mode", (object(),), {"core_ids": []}),
    ("ModelConfig.set_multi_core_mode", (object(), []), {}),
    ("ModelConfig.set_global4_core_mode", (object(), []), {}),
    ("ModelConfig.set_global8_core_mode", (object(),), {}),
    ("CoreId", (None, None), {}),
]


def _resolve(rt, path: str):
    obj = rt
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


@pytest.mark.parametrize("rt_name", ["qbruntime", "maccel"])
def test_every_runtime_call_exists_with_a_compatible_signature(rt_name):
    rt = {"qbruntime": qbruntime, "maccel": maccel}[rt_name]
    for path, args, kwargs in CALLS:
        fn = _resolve(rt, path)
        _bind(fn.__init__ if inspect.isclass(fn) else fn, *((object(),) if inspect.isclass(fn) else ()), *args,
              **kwargs)
    for name in ("Cluster0", "Cluster1"):
        assert hasattr(rt.Cluster, name)
    for name in ("Core0", "Core3"):
        assert hasattr(rt.Core, name)
    assert "max_cache_size" in dir(rt.BufferInfo)
    # the trap the runner avoids: qbruntime's first Accelerator parameter is device_name, not dev_no
    assert [p for p in inspect.signature(rt.Accelerator.__init__).parameters][1] == \
        ("device_name" if rt_name == "qbruntime" else "dev_no")


def test_reset_cache_memory_is_gone_from_qbruntime_and_unused():
    assert not hasattr(qbruntime.Model, "reset_cache_memory") and hasattr(maccel.Model, "reset_cache_memory")
    assert "reset_cache_memory()" not in inspect.getsource(mxq_runtime).replace("no ``reset_cache_memory``", "")


def test_standin_surface_is_the_real_qbruntime():
    recorded = json.loads((STANDIN / "surface.json").read_text())
    assert recorded == json.loads(json.dumps(surface(qbruntime))), \
        "the installed qbruntime changed: regenerate tests/standin_qbruntime/surface.json and check the runner"


@pytest.fixture
def standin_rt(monkeypatch):
    """``import qbruntime`` finds the stand-in (its method set checked against the real one)."""
    monkeypatch.syspath_prepend(str(STANDIN))
    real = {k: sys.modules.pop(k) for k in list(sys.modules) if k.split(".")[0] == "qbruntime"}
    import qbruntime as fake
    assert getattr(fake, "STANDIN", False)
    yield fake
    for k in [k for k in sys.modules if k.split(".")[0] == "qbruntime"]:
        del sys.modules[k]
    sys.modules.update(real)


def test_standin_method_set_is_the_real_one(standin_rt):
    for cls in ("Accelerator", "Model", "ModelConfig"):
        real = {n for n in dir(getattr(qbruntime, cls)) if not n.startswith("_")}
        fake = {n for n in dir(getattr(standin_rt, cls)) if not n.startswith("_")}
        assert fake == real, cls
        for name in real:
            fn = getattr(getattr(qbruntime, cls), name)
            if callable(fn) and not inspect.isclass(fn) and not isinstance(
                    inspect.getattr_static(getattr(qbruntime, cls), name), property):
                assert list(inspect.signature(getattr(getattr(standin_rt, cls), name)).parameters)[:1] == ["self"] \
                    or name == "from_cpp"


def npu_params(**components) -> NpuParams:
    """params.yaml's ``npu`` section (Mobilint's newest placement) with components replaced."""
    data = params_with({"npu": {k: v for k, v in components.items()}})["npu"]
    return NpuParams.model_validate(data)


TUTORIAL_012 = {"encoder": {"core_mode": "global4", "cores": [[1, 0], [1, 1], [1, 2], [1, 3]]},
                "decoder": {"core_mode": "single", "cores": [[0, 3]]}}


def _compiled(tmp_path: Path, tiny_model_dir: Path, schemes=("global4", "single"),
              target: str = "aries-rb") -> tuple[Path, Path]:
    """compiled/encoder + compiled/decoder as the stand-in compiler leaves them (stand-in .mxq = JSON)."""
    from whisper_npu.model.store import load_hf

    model, _ = load_hf(tiny_model_dir)
    dirs = []
    for component, scheme in zip(("encoder", "decoder"), schemes):
        d = tmp_path / "compiled" / component
        d.mkdir(parents=True)
        (d / f"m_{component}.mxq").write_text(json.dumps({"standin": "qbcompiler", "component": component,
                                                           "inference_scheme": scheme}))
        calls = {"inference_scheme": scheme, "target_device": target}
        (d / "provenance.json").write_text(json.dumps({
            "backend": "qbcompiler", "resolved": {"calls": {"mxq_compile": calls}}}))
        dirs.append(d)
    tokens, positions = specs.embedding_tables(model)
    np.save(dirs[1] / "embed_tokens.npy", tokens)
    np.save(dirs[1] / "embed_positions.npy", positions)
    return dirs[0], dirs[1]


def test_real_qbruntime_without_npu_is_not_runnable(tmp_path, tiny_model_dir):
    """On this machine the real qbruntime imports but finds no NPU: a clear CompiledNotRunnable."""
    from whisper_npu.model.store import load_hf

    enc, dec = _compiled(tmp_path, tiny_model_dir)
    with pytest.raises(CompiledNotRunnable, match="qbruntime v?1.5.0 is installed but finds no NPU"):
        load_compiled(enc, dec, load_hf(tiny_model_dir)[0].config, npu_params(**TUTORIAL_012))


def test_real_maccel_without_npu_is_not_runnable(monkeypatch, tmp_path, tiny_model_dir):
    from whisper_npu.model.store import load_hf

    monkeypatch.setattr(mxq_runtime, "RUNTIME_MODULES", ("maccel",))
    enc, dec = _compiled(tmp_path, tiny_model_dir)
    with pytest.raises(CompiledNotRunnable, match="maccel v?0.30.1 is installed but cannot open NPU device 0"):
        load_compiled(enc, dec, load_hf(tiny_model_dir)[0].config, npu_params(**TUTORIAL_012))


def test_no_runtime_is_not_runnable(monkeypatch, tmp_path, tiny_model_dir):
    from whisper_npu.model.store import load_hf

    monkeypatch.setattr(mxq_runtime, "RUNTIME_MODULES", ("no_such_runtime_module",))
    enc, dec = _compiled(tmp_path, tiny_model_dir)
    with pytest.raises(CompiledNotRunnable, match="need Mobilint's runtime"):
        load_compiled(enc, dec, load_hf(tiny_model_dir)[0].config, npu_params(**TUTORIAL_012))


def test_scheme_comes_from_the_recorded_calls(tmp_path, tiny_model_dir):
    enc, dec = _compiled(tmp_path, tiny_model_dir, ("all", "all"))
    assert compiled_scheme(enc) == "all"
    prov = json.loads((dec / "provenance.json").read_text())
    prov["resolved"]["calls"]["mxq_compile"] = {}      # 0.11 decoder: no scheme passed -> documented default
    (dec / "provenance.json").write_text(json.dumps(prov))
    assert compiled_scheme(dec) == "single"


PLACEMENTS = [  # compiled schemes, target, npu placement
    (("global4", "single"), "aries-rb", TUTORIAL_012),
    (("all", "all"), "aries-rb", {}),   # Mobilint's newest folder: encoder 0:0, decoder 1:0
    (("global8", "multi"), "aries-rb", {"encoder": {"core_mode": "global8", "cores": [[c, k] for c in (0, 1)
                                                                                    for k in range(4)]},
                                        "decoder": {"core_mode": "multi", "cores": [[0, 0], [0, 1], [0, 2], [0, 3]]}}),
    (("single", "single"), "regulus-rb", {}),   # REGULUS: both on its one core, 0:0
]


@pytest.mark.parametrize("schemes,target,placement", PLACEMENTS)
def test_runner_end_to_end_matches_fp32(standin_rt, monkeypatch, tmp_path, tiny_model_dir, schemes, target,
                                        placement):
    """The runner through the stand-in runtime (fp32 reference inside) decodes exactly as the torch
    reference: embeddings, cache_size bookkeeping, core modes from params npu, output reshape."""
    from whisper_npu.decoding.greedy import DecodeConfig, greedy_decode
    from whisper_npu.runtimes.torch_ref import load_torch_backend

    monkeypatch.setenv("STANDIN_QBRUNTIME_NPU", "1")
    monkeypatch.setenv("STANDIN_QBRUNTIME_REFERENCE", str(tiny_model_dir))
    fp32, processor = load_torch_backend(tiny_model_dir)
    enc, dec = _compiled(tmp_path, tiny_model_dir, schemes, target)
    backend = load_compiled(enc, dec, fp32.model.config, npu_params(**placement))
    assert isinstance(backend, mxq_runtime.MxqBackend)
    want = npu_params(**placement)
    assert backend.device == {"runtime": "qbruntime v1.5.0", "target_device": target,
                              **{c: want.placement(c, target).record() for c in ("encoder", "decoder")}}
    if not placement:   # cores auto
        assert [backend.device[c]["cores"] for c in ("encoder", "decoder")] == \
            ([[[0, 0]], [[1, 0]]] if target == "aries-rb" else [[[0, 0]], [[0, 0]]])
    cfg = DecodeConfig.from_model(fp32.model.generation_config, fp32.model.config, max_new_tokens=6,
                                  suppress_timestamps=True, repeat_max_ngram=8, repeat_times=0)
    rng = np.random.default_rng(0)
    for _ in range(2):   # two clips: the second must start a fresh sequence (cache_size=0)
        feats = rng.standard_normal((1, 3000, 80)).astype(np.float32)
        prompt = cfg.prompt("en", "transcribe")
        ref, _ = greedy_decode(fp32.decoder, fp32.encoder(feats), prompt, cfg)
        got, _ = greedy_decode(backend.decoder, backend.encoder(feats), prompt, cfg)
        assert got == ref and len(ref) > 0
    backend.close()


def test_core_modes_and_cores_from_the_placement(standin_rt):
    """The ModelConfig calls a placement makes: single-core CoreIds (cluster, core), whole clusters otherwise."""
    mc = mxq_runtime.model_config(standin_rt, Placement(0, "single", ((1, 0), (0, 3))))
    assert mc.mode == "single"
    calls = []
    standin_rt.ModelConfig.set_single_core_mode = lambda self, core_ids: calls.append(core_ids) or True
    mxq_runtime.model_config(standin_rt, Placement(0, "single", ((1, 0), (0, 3))))
    assert [(c.cluster, c.core) for c in calls[0]] == [(standin_rt.Cluster.Cluster1, standin_rt.Core.Core0),
                                                       (standin_rt.Cluster.Cluster0, standin_rt.Core.Core3)]
    calls.clear()
    standin_rt.ModelConfig.set_global4_core_mode = lambda self, clusters: calls.append(clusters) or True
    mxq_runtime.model_config(standin_rt, Placement(0, "global4", ((1, 0), (1, 1), (1, 2), (1, 3))))
    assert calls == [[standin_rt.Cluster.Cluster1]]


@pytest.mark.parametrize("schemes,target,placement,message", [
    (("global4", "single"), "aries-rb", {}, (r"compiled/encoder: npu.encoder.core_mode = single: an MXQ compiled "
                                             r"with inference scheme 'global4' runs in global4")),
    (("single", "single"), "regulus-rb", {"decoder": {"cores": [[1, 0]]}},
     r"compiled/decoder: npu.decoder: REGULUS \(regulus-rb\) has one core"),
])
def test_a_placement_the_mxq_cannot_take_is_an_error_naming_the_key(tmp_path, tiny_model_dir, schemes, target,
                                                                    placement, message):
    """Checked against what was compiled (provenance), before the runtime is touched: not a not-run."""
    from whisper_npu.model.store import load_hf

    enc, dec = _compiled(tmp_path, tiny_model_dir, schemes, target)
    with pytest.raises(StageError, match=message) as err:
        load_compiled(enc, dec, load_hf(tiny_model_dir)[0].config, npu_params(**placement))
    assert not isinstance(err.value, CompiledNotRunnable)


def test_a_runtime_with_another_api_is_not_runnable(standin_rt, monkeypatch, tmp_path, tiny_model_dir):
    """An API mismatch (here an Accelerator without the dev_no keyword) is a reason, not a traceback."""
    from whisper_npu.model.store import load_hf

    class OldAccelerator:
        def __init__(self, device_name="auto"):
            pass
    monkeypatch.setenv("STANDIN_QBRUNTIME_NPU", "1")
    monkeypatch.setattr(standin_rt, "Accelerator", OldAccelerator)
    enc, dec = _compiled(tmp_path, tiny_model_dir, ("all", "all"))
    with pytest.raises(CompiledNotRunnable, match=r"its API differs .*TypeError.*dev_no") as err:
        load_compiled(enc, dec, load_hf(tiny_model_dir)[0].config, npu_params())
    assert err.value.device["decoder"] == {"dev_no": 0, "core_mode": "single", "cores": [[1, 0]]}


def test_standin_error_class_is_the_real_one(standin_rt):
    assert [c.__name__ for c in standin_rt.QbRuntimeError.__mro__] == \
        [c.__name__ for c in qbruntime.QbRuntimeError.__mro__]


@pytest.fixture
def compiled_stage(tmp_path, tiny_model_dir):
    """stages.transcribe_compiled on stand-in .mxq files (scheme all), one German evaluation clip."""
    from test_evaluate import write_audio

    from stages import transcribe_compiled

    enc, dec = _compiled(tmp_path, tiny_model_dir, ("all", "all"))
    write_audio(tmp_path / "audio", ["de_de"])

    def run(**npu) -> Path:
        params = tmp_path / "params.yaml"
        params.write_text(yaml.safe_dump(params_with({"languages": ["de_de"], "npu": npu})))
        out = tmp_path / "transcripts"
        transcribe_compiled.main(["--params", str(params), "--model", str(tiny_model_dir), "--encoder", str(enc),
                                  "--decoder", str(dec), "--audio", str(tmp_path / "audio"), "--out", str(out),
                                  "--timing", str(tmp_path / "timing.json")])
        return out
    return run


def test_require_compiled_fails_when_the_npu_cannot_be_opened(standin_rt, monkeypatch, compiled_stage):
    """The device is listed but opening it raises qbruntime's own error (Driver_NotInitialized: driver missing or
    mismatched): by default the run is recorded as not run, with where it was asked to run; with
    npu.require_compiled the stage fails with the reason."""
    monkeypatch.setenv("STANDIN_QBRUNTIME_NPU", "unopenable")
    run = json.loads((compiled_stage() / "run.json").read_text())
    assert run["compiled_run"]["status"] == "not_run"
    assert "cannot open NPU device 0: Driver_NotInitialized occurred." in run["compiled_run"]["reason"]
    assert run["device"] == {"runtime": "qbruntime v1.5.0", "target_device": "aries-rb",
                             "encoder": {"dev_no": 0, "core_mode": "single", "cores": [[0, 0]]},
                             "decoder": {"dev_no": 0, "core_mode": "single", "cores": [[1, 0]]}}
    with pytest.raises(StageError, match=r"npu.require_compiled = true and the compiled model cannot run here: .*"
                                         r"cannot open NPU device 0: Driver_NotInitialized occurred\.") as err:
        compiled_stage(require_compiled=True)
    assert not isinstance(err.value, CompiledNotRunnable)


def test_require_compiled_fails_without_the_npu_device_asked_for(standin_rt, monkeypatch, compiled_stage):
    monkeypatch.setenv("STANDIN_QBRUNTIME_NPU", "1")   # device 0 only
    with pytest.raises(StageError, match=r"finds no NPU device 1 \(available: \[0\]\)"):
        compiled_stage(require_compiled=True, decoder={"dev_no": 1})


def test_standin_refuses_a_core_mode_the_mxq_lacks(standin_rt, monkeypatch, tmp_path, tiny_model_dir):
    """The stand-in refuses a core mode the MXQ lacks, as the runtime does (placements() checks it first)."""
    from whisper_npu.model.store import load_hf

    monkeypatch.setenv("STANDIN_QBRUNTIME_NPU", "1")
    monkeypatch.setenv("STANDIN_QBRUNTIME_REFERENCE", str(tiny_model_dir))
    enc, dec = _compiled(tmp_path, tiny_model_dir, ("global8", "single"))
    where = Placement(0, "global4", ((1, 0), (1, 1), (1, 2), (1, 3))), Placement(0, "single", ((0, 3),))
    with pytest.raises(standin_rt.QbRuntimeError, match="cannot run in core mode 'global4'"):
        mxq_runtime.load_mxq_backend(enc, dec, load_hf(tiny_model_dir)[0].config, *where)


def test_decoder_refuses_more_tokens_than_the_npu_cache(standin_rt, monkeypatch, tmp_path, tiny_model_dir):
    """The cache capacity comes from the runtime's get_input_buffer_info()[0].max_cache_size."""
    from whisper_npu.model.store import load_hf

    monkeypatch.setenv("STANDIN_QBRUNTIME_NPU", "1")
    monkeypatch.setenv("STANDIN_QBRUNTIME_REFERENCE", str(tiny_model_dir))
    monkeypatch.setattr(standin_rt.Model, "get_input_buffer_info", lambda self: [standin_rt.BufferInfo(5)])
    enc, dec = _compiled(tmp_path, tiny_model_dir)
    backend = mxq_runtime.load_mxq_backend(enc, dec, load_hf(tiny_model_dir)[0].config,
                                           Placement(0, "global4", ((1, 0), (1, 1), (1, 2), (1, 3))),
                                           Placement(0, "single", ((0, 3),)))
    session = backend.decoder
    assert session.max_cache == 5
    session.reset(np.zeros((1, 1500, session.embed_tokens.shape[1]), np.float32))
    session.step([1, 2, 3, 4])
    with pytest.raises(RuntimeError, match=r"6 tokens exceed the cache \(5\)"):
        session.step([5, 6])
