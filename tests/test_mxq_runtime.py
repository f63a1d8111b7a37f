"""The .mxq runner (whisper_npu/backends/mxq_runtime.py) against the REAL Mobilint runtime wheels from PyPI
(``mobilint-qb-runtime`` 1.5.0 -> ``qbruntime``, ``maccel`` 0.30.1; both import without an NPU), and end to
end against the STAND-IN runtime (tests/standin_qbruntime, NOT the real one) whose method set is the real
``qbruntime``'s."""
from __future__ import annotations

import inspect
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from runtime_surface import surface

from whisper_npu import specs
from whisper_npu.artifacts import CompiledNotRunnable
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
        load_compiled(enc, dec, load_hf(tiny_model_dir)[0].config)


def test_real_maccel_without_npu_is_not_runnable(monkeypatch, tmp_path, tiny_model_dir):
    from whisper_npu.model.store import load_hf

    monkeypatch.setattr(mxq_runtime, "RUNTIME_MODULES", ("maccel",))
    enc, dec = _compiled(tmp_path, tiny_model_dir)
    with pytest.raises(CompiledNotRunnable, match="maccel v?0.30.1 is installed but cannot open NPU device 0"):
        load_compiled(enc, dec, load_hf(tiny_model_dir)[0].config)


def test_no_runtime_is_not_runnable(monkeypatch, tmp_path, tiny_model_dir):
    from whisper_npu.model.store import load_hf

    monkeypatch.setattr(mxq_runtime, "RUNTIME_MODULES", ("no_such_runtime_module",))
    enc, dec = _compiled(tmp_path, tiny_model_dir)
    with pytest.raises(CompiledNotRunnable, match="need Mobilint's runtime"):
        load_compiled(enc, dec, load_hf(tiny_model_dir)[0].config)


def test_scheme_comes_from_the_recorded_calls(tmp_path, tiny_model_dir):
    enc, dec = _compiled(tmp_path, tiny_model_dir, ("all", "all"))
    assert compiled_scheme(enc) == "all"
    prov = json.loads((dec / "provenance.json").read_text())
    prov["resolved"]["calls"]["mxq_compile"] = {}      # 0.11 decoder: no scheme passed -> documented default
    (dec / "provenance.json").write_text(json.dumps(prov))
    assert compiled_scheme(dec) == "single"


@pytest.mark.parametrize("schemes,target", [(("global4", "single"), "aries-rb"), (("all", "all"), "aries-rb"),
                                            (("global8", "multi"), "aries-rb"), (("single", "single"), "regulus-rb")])
def test_runner_end_to_end_matches_fp32(standin_rt, monkeypatch, tmp_path, tiny_model_dir, schemes, target):
    """The runner through the stand-in runtime (fp32 reference inside) decodes exactly as the torch
    reference: embeddings, cache_size bookkeeping, core modes from the recorded scheme, output reshape."""
    from whisper_npu.decoding.greedy import DecodeConfig, greedy_decode
    from whisper_npu.runtimes.torch_ref import load_torch_backend

    monkeypatch.setenv("STANDIN_QBRUNTIME_NPU", "1")
    monkeypatch.setenv("STANDIN_QBRUNTIME_REFERENCE", str(tiny_model_dir))
    fp32, processor = load_torch_backend(tiny_model_dir)
    enc, dec = _compiled(tmp_path, tiny_model_dir, schemes, target)
    backend = load_compiled(enc, dec, fp32.model.config)
    assert isinstance(backend, mxq_runtime.MxqBackend)
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


def test_regulus_core_modes(standin_rt):
    """REGULUS has one core: both components on Cluster0/Core0; anything but single is refused."""
    seen = []
    standin_rt.CoreId.__init__ = (lambda orig: lambda self, cl, co: (seen.append(co), orig(self, cl, co))[1])(
        standin_rt.CoreId.__init__)
    for component in ("encoder", "decoder"):
        assert mxq_runtime.model_config(standin_rt, "all", component, "regulus-rb").mode == "single"
    assert seen == [standin_rt.Core.Core0, standin_rt.Core.Core0]
    with pytest.raises(ValueError, match="REGULUS runs only single"):
        mxq_runtime.model_config(standin_rt, "global4", "encoder", "regulus-rb")


def test_standin_refuses_a_core_mode_the_mxq_lacks(standin_rt, monkeypatch, tmp_path, tiny_model_dir):
    """What reading a missing provenance key did: the default (global4) instead of the compiled scheme."""
    from whisper_npu.model.store import load_hf

    monkeypatch.setenv("STANDIN_QBRUNTIME_NPU", "1")
    monkeypatch.setenv("STANDIN_QBRUNTIME_REFERENCE", str(tiny_model_dir))
    enc, dec = _compiled(tmp_path, tiny_model_dir, ("global8", "single"))
    with pytest.raises(standin_rt.QbRuntimeError, match="cannot run in core mode 'global4'"):
        mxq_runtime.load_mxq_backend(enc, dec, load_hf(tiny_model_dir)[0].config, encoder_scheme="global4")


def test_decoder_refuses_more_tokens_than_the_npu_cache(standin_rt, monkeypatch, tmp_path, tiny_model_dir):
    """The cache capacity comes from the runtime's get_input_buffer_info()[0].max_cache_size."""
    from whisper_npu.model.store import load_hf

    monkeypatch.setenv("STANDIN_QBRUNTIME_NPU", "1")
    monkeypatch.setenv("STANDIN_QBRUNTIME_REFERENCE", str(tiny_model_dir))
    monkeypatch.setattr(standin_rt.Model, "get_input_buffer_info", lambda self: [standin_rt.BufferInfo(5)])
    enc, dec = _compiled(tmp_path, tiny_model_dir)
    backend = mxq_runtime.load_mxq_backend(enc, dec, load_hf(tiny_model_dir)[0].config)
    session = backend.decoder
    assert session.max_cache == 5
    session.reset(np.zeros((1, 1500, session.embed_tokens.shape[1]), np.float32))
    session.step([1, 2, 3, 4])
    with pytest.raises(RuntimeError, match=r"6 tokens exceed the cache \(5\)"):
        session.step([5, 6])
