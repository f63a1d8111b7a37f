"""The per-group proxy (groups.py, proxy.py) and the sensitivity study (sensitivity.py) on the tiny random Whisper:
group names, Q/DQ placement per proxy and per group bit width, the per-group range method reaching the model, the
default path untouched, and a layer made sensitive on purpose ranking first. Random weights: the numbers say
nothing about Whisper's accuracy."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import default_params

from whisper_npu.compilers.onnxruntime import export, groups, proxy, quantize, sensitivity
from whisper_npu.params.base import ParamsError
from whisper_npu.params.full import parse_params

NAMES = {"encoder": ["input_features"], "decoder": ["decoder_hidden_states", "encoder_hidden_states"]}


def reader(component: str, n: int, seed: int, d: int = 64) -> quantize.ListReader:
    """Random inputs in the NPU layout (encoder [1, 3000, 80]; decoder [1, L, d] + [1, 1500, d])."""
    def load(i: int):
        rng = np.random.default_rng(seed * 1000 + i)
        if component == "encoder":
            return ((rng.standard_normal((1, 3000, 80)) * 0.5).astype(np.float32),)
        return (rng.standard_normal((1, 4 + i, d)).astype(np.float32),
                rng.standard_normal((1, 1500, d)).astype(np.float32))
    return quantize.ListReader(NAMES[component], load, n)


def exported(tiny_model_dir: Path, dest: Path, component: str, plant: bool = False) -> Path:
    """The component's float ONNX export; ``plant``: encoder layer 1's fc2 gets one output channel 300x larger,
    so one int8 scale for fc2's output wipes out the other channels (a destructive 8-bit tensor on purpose)."""
    import torch

    from whisper_npu.model import store
    from whisper_npu.specs import component_spec

    model, _ = store.load_hf(tiny_model_dir)
    if plant:
        with torch.no_grad():
            fc2 = model.model.encoder.layers[1].fc2
            fc2.weight[7] *= 300.0
            fc2.bias[7] = 300.0
    return export.export_onnx(export.npu_module(model, component), component_spec(component, model.config),
                              dest / f"{component}{'_planted' if plant else ''}.onnx", 17)


@pytest.fixture(scope="module")
def models(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("sensitivity")
    out = {c: exported(tiny_model_dir, root, c) for c in ("encoder", "decoder")}
    out["planted"] = exported(tiny_model_dir, root, "encoder", plant=True)
    for key in list(out):
        out[f"{key}_pre"] = quantize.preprocess(out[key], root / f"{key}.pre.onnx")
    return out


def qdq(path: Path) -> dict[str, int]:
    """float tensor -> zero-point data type (3 int8, 5 int16) of its activation QuantizeLinear."""
    import onnx

    graph = onnx.load(str(path)).graph
    types = {i.name: i.data_type for i in graph.initializer}
    inits = set(types)
    return {n.input[0].removesuffix("_QuantizeLinear_Input"): types[n.input[2]] for n in graph.node
            if n.op_type == "QuantizeLinear" and n.input[0] not in inits}


def static(fp32: Path, out: Path, component: str, **kw) -> dict:
    return quantize.quantize(fp32, out, mode="static", per_channel=True, op_types=["MatMul", "Conv"],
                             reader=reader(component, 3, 0), **kw)


def test_group_names(models):
    enc = groups.find(models["encoder_pre"], "encoder", "npu")
    dec = groups.find(models["decoder_pre"], "decoder", "npu")
    per_block = ["self_attn_layer_norm", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.qk",
                 "self_attn.softmax", "self_attn.av", "self_attn.out_proj", "residual.self_attn", "final_layer_norm",
                 "fc1", "fc2", "residual.ffn"]
    assert list(enc) == ["encoder.conv1", "encoder.conv2", "encoder.embed_positions",
                         *[f"encoder.{i}.{r}" for i in (0, 1) for r in per_block], "encoder.layer_norm"]
    assert "decoder.1.encoder_attn.softmax" in dec and "decoder.0.residual.encoder_attn" in dec
    assert "decoder.0.self_attn.softmax" not in dec   # softmax over masked (-inf) scores stays float
    assert list(dec)[-1] == "decoder.lm_head" and dec["decoder.lm_head"].output == "logits"
    assert enc["encoder.1.fc2"].quantized == ["/encoder/layers.1/fc2/MatMul"]
    assert enc["encoder.1.self_attn.qk"].quantized == ["/encoder/layers.1/self_attn/MatMul"]
    # the matmul proxy (today's static mode) knows only the linear layers and attention matmuls
    mm = groups.find(models["encoder_pre"], "encoder", "matmul")
    assert set(mm) == {n for n in enc if not any(k in n for k in ("norm", "residual", "softmax", "embed_pos"))}


def test_npu_proxy_places_qdq_per_group(models, tmp_path):
    import onnx

    done = static(models["encoder"], tmp_path / "npu.onnx", "encoder", proxy="npu",
                  groups={"encoder.1.fc2": {"bits": 16}})
    assert done["proxy"] == "npu" and done["groups_overridden"] == ["encoder.1.fc2"]
    types = qdq(tmp_path / "npu.onnx")
    graph = onnx.load(str(tmp_path / "npu.onnx")).graph
    dq_in = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    for name, op in (("/encoder/layers.0/Add", "residual"), ("/encoder/layers.1/Add_1", "residual"),
                     ("/encoder/layers.0/final_layer_norm/LayerNormalization", "layer norm"),
                     ("/encoder/layers.1/self_attn/Softmax", "softmax")):
        node = next(n for n in graph.node if n.name == name)
        assert all(i in dq_in for i in node.input[:1]), f"{op} {name}: input not from a DequantizeLinear"
        assert node.output[0] in types, f"{op} {name}: output not quantized"
    fc2 = groups.find(models["encoder_pre"], "encoder", "npu")["encoder.1.fc2"]
    sixteen = {t for t, dt in types.items() if dt == 5}
    assert sixteen == set(fc2.tensors) and len(sixteen) == 3   # fc2's input, MatMul output, bias-Add output
    assert all(dt == 3 for t, dt in types.items() if t not in sixteen)
    # the matmul proxy leaves the residual stream (Adds, LayerNorm inputs) without Q/DQ (a softmax output is
    # quantized there only as the AV MatMul's input)
    static(models["encoder"], tmp_path / "mm.onnx", "encoder", groups={"encoder.1.fc2": {"bits": 16}})
    mm = qdq(tmp_path / "mm.onnx")
    assert not {"/encoder/layers.0/Add_output_0", "/encoder/layers.1/Add_1_output_0", "encoder_hidden_states"} & set(mm)
    assert {t for t, dt in mm.items() if dt == 5} == set(fc2.tensors) - {"/encoder/layers.1/fc2/Add_output_0"}


def test_decoder_npu_proxy_runs(models, tmp_path):
    import onnxruntime as ort

    static(models["decoder"], tmp_path / "d.onnx", "decoder", proxy="npu",
           groups={"decoder.*.encoder_attn.softmax": {"bits": 16}})
    types = qdq(tmp_path / "d.onnx")
    assert types["/decoder/layers.1/encoder_attn/Softmax_output_0"] == 5
    assert types["/decoder/layers.1/Add_2_output_0"] == 3
    feed = dict(zip(NAMES["decoder"], reader("decoder", 1, 9).load(0)))
    out = ort.InferenceSession(str(tmp_path / "d.onnx")).run(None, feed)[0]
    assert np.isfinite(out).all()
    # a quantized graph output: ORT renames its producer's output and the DequantizeLinear keeps the name
    assert "logits" in sensitivity._qparams(tmp_path / "d.onnx") and "logits" in types


def test_default_path_unchanged(models, tmp_path, monkeypatch):
    """proxy matmul + no groups is today's call, byte for byte: the new code is never entered."""
    a = static(models["encoder"], tmp_path / "a.onnx", "encoder", high_precision=["fc2"])
    monkeypatch.setattr(proxy, "quantize", lambda *a, **k: pytest.fail("the default path entered proxy.quantize"))
    b = static(models["encoder"], tmp_path / "b.onnx", "encoder", high_precision=["fc2"], proxy="matmul", groups={})
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()
    assert a == b and "proxy" not in a
    p = default_params()["compile"]["onnxruntime"]
    assert p["proxy"] == "matmul" and p["groups"] == {}


def test_range_method_per_group(models, tmp_path):
    import onnx
    from onnx import numpy_helper

    def scales(path):
        graph = onnx.load(str(path)).graph
        inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
        return {n.input[0]: float(inits[n.input[1]]) for n in graph.node
                if n.op_type == "QuantizeLinear" and n.input[0] not in inits and inits[n.input[1]].size == 1}

    static(models["planted"], tmp_path / "max.onnx", "encoder", proxy="npu")
    static(models["planted"], tmp_path / "pct.onnx", "encoder", proxy="npu",
           groups={"encoder.1.fc2": {"method": "percentile"}}, percentile=95.0)
    a, b = scales(tmp_path / "max.onnx"), scales(tmp_path / "pct.onnx")
    out = "/encoder/layers.1/fc2/Add_output_0"   # what fc2 writes (with the planted outlier channel)
    assert b[out] < 0.5 * a[out]   # the 95th percentile clips the outlier channel (1 of 64 channels)
    changed = {t for t in a if a[t] != b[t]}
    fc2 = groups.find(models["planted_pre"], "encoder", "npu")["encoder.1.fc2"]
    assert out in changed and changed <= set(fc2.tensors)
    # a Softmax output keeps ORT's fixed [0, 1] (scale 1/255) unless its group names a method
    soft = "/encoder/layers.0/self_attn/Softmax_output_0"
    assert a[soft] == pytest.approx(1 / 255)
    static(models["planted"], tmp_path / "soft.onnx", "encoder", proxy="npu",
           groups={"encoder.0.self_attn.softmax": {"method": "minmax"}})
    assert scales(tmp_path / "soft.onnx")[soft] < 0.1 / 255


def test_params_keys():
    data = default_params()
    data["compile"]["onnxruntime"].update(mode="static", proxy="npu",
                                          groups={"encoder.*.fc2": {"bits": 16},
                                                  "decoder.lm_head": {"method": "entropy"}})
    parse_params(data)
    data["compile"]["onnxruntime"]["groups"] = {"fc2": {"bits": 16}}
    with pytest.raises(ParamsError, match=r"compile.onnxruntime.groups.fc2: a group name starts with encoder"):
        parse_params(data)
    data["compile"]["onnxruntime"]["groups"] = {"encoder.1.fc2": {"bits": 4}}
    with pytest.raises(ParamsError, match=r"compile.onnxruntime.groups.encoder.1.fc2.bits = 4"):
        parse_params(data)
    data["compile"]["onnxruntime"].update(mode="dynamic", groups={})
    with pytest.raises(ParamsError, match=r"compile.onnxruntime.proxy = 'npu': only for mode = static"):
        parse_params(data)


def test_unknown_group_names_the_key(models, tmp_path):
    with pytest.raises(ValueError, match=r"compile.onnxruntime.groups.encoder.9.fc2: matches no encoder group"):
        static(models["encoder"], tmp_path / "x.onnx", "encoder", proxy="npu", groups={"encoder.9.fc2": {"bits": 16}})


def test_planted_layer_ranks_first(models):
    report = sensitivity.study(models["planted"], reader("encoder", 3, 0), reader("encoder", 2, 1), proxy="matmul",
                               top_k=4)
    assert report["ranking"][0] == "encoder.1.fc2", json.dumps(report["ranking"])
    rows = {r["group"]: r for r in report["groups"]}
    fc2 = rows["encoder.1.fc2"]
    assert fc2["local_sqnr_db"] == min(r["local_sqnr_db"] for r in rows.values())
    assert fc2["isolation_gain"] > 3.0 and fc2["alone_16bit"]["sqnr_db"] > report["all_8bit"]["sqnr_db"]
    assert fc2["range"]["max"] > 10 * rows["encoder.0.fc2"]["range"]["max"]   # the outlier shows in the statistics
    assert all("alone_16bit" not in r for n, r in rows.items() if n not in report["ranking"])
    assert len(report["ranking"]) == 4
    text = sensitivity.table(report)
    assert text.splitlines()[4].startswith("| encoder.1.fc2 | 8 |") and text.count("\n| encoder.") == len(rows)


def test_range_method_chosen_per_group_where_it_beats_the_default(models):
    """(d): each method's ranges applied alone to the held-out values. A Softmax output's default is ORT's fixed [0, 1]
    grid, which zeroes the tiny model's near-uniform attention weights: a measured range wins there, by far. The
    planted fc2 output keeps the default: its outlier channel carries most of the energy, so no clipping range helps
    its mean-square error. Every choice beats the all-8-bit SQNR by the margin; no other method would have."""
    report = sensitivity.study(models["planted"], reader("encoder", 3, 0), reader("encoder", 2, 1), proxy="npu",
                               top_k=0, range_methods=["minmax", "percentile", "entropy"])
    assert report["range_methods"] == ["minmax", "percentile", "entropy"]
    rows = {r["group"]: r for r in report["groups"]}
    softmax = rows["encoder.1.self_attn.softmax"]
    assert (softmax["method_sqnr_db"]["all_8bit"] < 5.0
            and softmax["range_method"] in ("minmax", "percentile", "entropy"))
    assert softmax["method_sqnr_db"][softmax["range_method"]] > 30.0
    assert rows["encoder.1.fc2"]["range_method"] is None
    margin = sensitivity.METHOD_MARGIN_DB
    for r in rows.values():
        scores = r["method_sqnr_db"]
        best = max(v for k, v in scores.items() if k != "all_8bit")
        if r["range_method"] == "minmax":   # the default's ranges, unless another method is better by the margin
            assert scores["minmax"] >= best - margin and scores["minmax"] >= scores["all_8bit"] + margin, r
        elif r["range_method"]:
            assert scores[r["range_method"]] == best >= max(scores["all_8bit"], scores["minmax"]) + margin, r
        else:
            assert best < scores["all_8bit"] + margin, r
    assert softmax["range_method"] == "minmax"   # the measured range: as good as any, and no histograms needed
    assert "| encoder.1.self_attn.softmax | 8 |" in sensitivity.table(report)
    # no choice asked for: no column, no choice
    plain = sensitivity.study(models["encoder"], reader("encoder", 2, 0), reader("encoder", 1, 1), proxy="npu", top_k=0,
                              range_methods=["minmax"])
    assert plain["range_methods"] == [] and not any("range_method" in r for r in plain["groups"])
    assert "range method" not in sensitivity.table(plain)


def test_decoder_study(models):
    report = sensitivity.study(models["decoder"], reader("decoder", 2, 0), reader("decoder", 2, 1), proxy="npu",
                               top_k=2)
    assert report["component"] == "decoder" and len(report["ranking"]) == 2
    m = report["all_8bit"]
    assert {"kl", "top1_agreement", "p_eot_first", "p_eot_first_fp32", "cosine", "sqnr_db"} <= set(m)
    assert all(np.isfinite(r["sqnr_db"]) for r in report["groups"])


def test_chain_repairs_what_single_groups_cannot(models):
    """With the npu proxy the planted outlier lives in the residual stream: fc2's output, the residual Add's output
    and the final LayerNorm's output each have their own Q/DQ; fc2 or the residual Add alone at 16 bits leave the
    rest at 8 bits and gain almost nothing, the LayerNorm (which holds the Add's output and the model's output) gains
    much, the three together most."""
    chain = ["encoder.1.fc2", "encoder.1.residual.ffn", "encoder.layer_norm"]
    # top_k 0: no single-group candidates; each link alone as a one-group chain (4 variants instead of 30)
    links = {name: [name] for name in chain}
    report = sensitivity.study(models["planted"], reader("encoder", 3, 0), reader("encoder", 2, 1), proxy="npu",
                               top_k=0,
                               chains={"encoder.1.ffn_out": chain, **{f"{n} alone": m for n, m in links.items()}})
    rows = {r["group"]: r for r in report["groups"]}
    gain = {n: rows[n]["isolation_gain"] for n in report["ranking"]}
    assert report["ranking"][0] == "encoder.1.ffn_out" and rows["encoder.1.ffn_out"]["chain"] == chain
    assert gain["encoder.1.fc2 alone"] < 1.0 and gain["encoder.1.residual.ffn alone"] < 1.0
    assert gain["encoder.1.ffn_out"] > gain["encoder.layer_norm alone"] > 10.0
    assert len(report["ranking"]) == 4
    assert rows["encoder.1.residual.ffn"]["local_channel_sqnr_db"] < 1.0   # the median channel is wiped out
    assert rows["encoder.1.residual.ffn"]["local_sqnr_db"] > 20.0          # though the whole-tensor SQNR looks fine
    assert "| encoder.1.ffn_out (encoder.1.fc2 + " in sensitivity.table(report)


def test_compile_stage_takes_proxy_and_groups(tmp_path, tiny_model_dir):
    """params.yaml's compile.onnxruntime.proxy / groups reach the compiled model through the compile stage."""
    from test_static_int8 import compile_both, write_calib

    from stages.toolchain import onnxruntime_record

    config = json.loads((tiny_model_dir / "hf" / "config.json").read_text())
    toolchain = tmp_path / "toolchain.json"
    toolchain.write_text(json.dumps(onnxruntime_record()))
    setup = (tmp_path, toolchain, {"a": write_calib(tmp_path / "calib", config, 0, n=3)})
    ort = {"mode": "static", "keep_float": [], "high_precision": [], "calibration_samples": 2, "proxy": "npu",
           "groups": {"encoder.*.fc2": {"bits": 16}, "decoder.1.encoder_attn.softmax": {"method": "minmax"}}}
    paths = compile_both(setup, tiny_model_dir, "a", ort, "npu")
    for comp, overridden in (("encoder", ["encoder.0.fc2", "encoder.1.fc2"]),
                             ("decoder", ["decoder.1.encoder_attn.softmax"])):
        prov = json.loads((paths[comp].parent / "provenance.json").read_text())["quantization"]
        assert prov["proxy"] == "npu" and prov["groups_overridden"] == overridden, prov
        types = qdq(paths[comp])
        assert any("/layers.0/Add_output_0" in t for t in types)   # residual Adds quantized
        assert (5 in types.values()) == (comp == "encoder")


def test_range_collection_is_remembered_only_for_the_same_bytes(tmp_path):
    """ranges.collect's memo (the promotion steps recalibrate the same export): the same model and inputs give the
    stored statistics without a pass; another input, or another model file, is a new pass."""
    import onnx
    from onnx import TensorProto, helper

    from whisper_npu.compilers.onnxruntime import quantize, ranges

    def model(path: Path, scale: float) -> Path:
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])
        w = helper.make_tensor("w", TensorProto.FLOAT, [1], [scale])
        graph = helper.make_graph([helper.make_node("Mul", ["x", "w"], ["y"], name="mul")], "g", [x], [y], [w])
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
        return path

    def reader(value: float):
        arrays = [np.full((2, 3), value, np.float32), np.full((2, 3), -value, np.float32)]
        return quantize.ListReader(["x"], lambda i: (arrays[i],), 2)

    a, b = model(tmp_path / "a.onnx", 2.0), model(tmp_path / "b.onnx", 3.0)
    first = ranges.collect(a, reader(1.0), ["y"], ("minmax",))
    assert ranges.collect(a, reader(1.0), ["y"], ("minmax",)) is first
    assert first.ranges("minmax")["y"] == pytest.approx((-2.0, 2.0))
    other_input = ranges.collect(a, reader(5.0), ["y"], ("minmax",))
    assert other_input is not first and other_input.ranges("minmax")["y"] == pytest.approx((-10.0, 10.0))
    assert ranges.collect(b, reader(1.0), ["y"], ("minmax",)).ranges("minmax")["y"] == pytest.approx((-3.0, 3.0))


def test_minmax_ranges_keep_histograms_only_where_read():
    """Minmax alone bins nothing but the ``summarized`` tensors (their range columns); percentile bins every tensor;
    the min/max ranges, and so the calibration cache ORT reads, are the same either way."""
    from whisper_npu.compilers.onnxruntime import ranges

    rng = np.random.default_rng(0)
    samples = [{"a": rng.normal(size=(4, 8)).astype(np.float32), "b": rng.normal(size=(3,)).astype(np.float32) * 5}
               for _ in range(3)]
    lean, full = ranges.Stats(("minmax",), summarized=["b"]), ranges.Stats(("minmax", "percentile"))
    for s in samples:
        lean.add(s)
        full.add(s)
    assert set(lean.absolute.histogram_dict) == {"b"} and set(full.absolute.histogram_dict) == {"a", "b"}
    assert lean.ranges("minmax") == full.ranges("minmax")
    assert lean.summary("b") == full.summary("b")
    with pytest.raises(ValueError, match="no histogram of 'a'"):
        lean.summary("a")
    assert not ranges.Stats(("minmax",)).histogrammed   # the compile stage's case: nothing binned


def test_binned_tensors_alone_keep_histograms_with_the_same_ranges():
    """A recipe's few percentile / entropy groups bin only their tensors, each for its own method (proxy.binning),
    every sample; their ranges are the ones binning every tensor gives."""
    from whisper_npu.compilers.onnxruntime import proxy, ranges

    rng = np.random.default_rng(1)
    samples = [{"a": rng.normal(size=(4, 8)).astype(np.float32), "b": rng.standard_t(2, size=(64,)).astype(np.float32)}
               for _ in range(5)]
    methods = ("minmax", "percentile", "entropy")
    some = ranges.Stats(methods, 99.0, binned={"percentile": ["b"], "entropy": ["a"]})
    every = ranges.Stats(methods, 99.0)
    for s in samples:
        some.add(s)
        every.add(s)
    assert set(some.absolute.histogram_dict) == {"b"} and set(some.real.histogram_dict) == {"a"}
    assert some.ranges("percentile") == {"b": every.ranges("percentile")["b"]}
    assert some.ranges("entropy") == {"a": every.ranges("entropy")["a"]}
    assert some.ranges("minmax") == every.ranges("minmax")
    assert proxy.binning({"x": "percentile", "y": "minmax", "z": "entropy"}, "minmax")["binned"] == \
        {"percentile": ["x"], "entropy": ["z"]}
    # the default method needs every tensor's histograms
    assert proxy.binning({"y": "minmax"}, "percentile")["binned"] is None
    # a group's own method bins the first SUMMARY_SAMPLES samples (min/max: every sample); the default's, all
    assert proxy.binning({"x": "percentile"}, "minmax")["binned_samples"] == ranges.SUMMARY_SAMPLES
    assert proxy.binning({}, "entropy") == {"binned": None, "binned_samples": None}
    early = ranges.Stats(methods, 99.0, binned={"percentile": ["b"], "entropy": ["b"]}, binned_samples=2)
    for value in (1.0, 2.0, 50.0):
        early.add({"b": np.full((4,), value, np.float32)})
    assert early.ranges("minmax")["b"] == (1.0, 50.0)
    assert early.ranges("percentile")["b"][1] < 3.0 and early.ranges("entropy")["b"][1] < 3.0


def test_summary_histograms_stop_after_summary_samples(monkeypatch):
    """The study's range columns bin only the first SUMMARY_SAMPLES samples (min/max still see every sample)."""
    from whisper_npu.compilers.onnxruntime import ranges

    monkeypatch.setattr(ranges, "SUMMARY_SAMPLES", 2)
    stats = ranges.Stats(("minmax",), summarized=["b"])
    for value in (1.0, 2.0, 50.0):
        stats.add({"b": np.full((4,), value, np.float32)})
    assert stats.ranges("minmax")["b"] == (1.0, 50.0)
    assert stats.summary("b")["abs_p99.99"] < 3.0 and stats.summary("b")["max"] == 50.0
