"""The static INT8 mode of the onnxruntime backend reads the calibration set: two different sets give
different models, the same set gives byte-identical ones; dynamic mode without smoothing ignores the set.
Also the 16-bit activation override, the linear-layer count and node-name patterns. Tiny random Whisper
(real code path, random weights: numbers here say nothing about accuracy)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import default_params

from stages import compile as compile_stage
from whisper_npu.calibration import lists as calibration
from whisper_npu.core.files import sha256_tree
from whisper_npu.params.base import ParamsError
from whisper_npu.params.full import parse_params

STATIC = {"mode": "static", "smooth_quant": True, "calibrate_method": "minmax", "keep_float": ["lm_head"],
          "high_precision": ["fc2"], "calibration_samples": 3}


def write_calib(root: Path, config: dict, seed: int, n: int = 4) -> Path:
    """Tutorial-format encoder list and decoder JSON of ``n`` random samples drawn with ``seed``."""
    rng = np.random.default_rng(seed)
    enc, dec = root / "encoder", root / "decoder"
    enc.mkdir(parents=True)
    names = []
    for i in range(n):
        names.append(f"encoder_calib_{i:04d}.npy")
        np.save(enc / names[-1], (rng.standard_normal((1, 3000, 80)) * (0.5 + seed)).astype(np.float32))
    calibration.write_encoder_list(enc / "whisper_encoder_cali.txt", names)
    pairs = []
    for i in range(n):
        s = dec / f"sample_{i:04d}"
        s.mkdir(parents=True)
        np.save(s / "decoder_hidden_states.npy", (rng.standard_normal((1, 4 + i, config["d_model"])) * (1 + seed))
                .astype(np.float32))
        np.save(s / "encoder_hidden_states.npy", rng.standard_normal((1, 1500, config["d_model"])).astype(np.float32))
        pairs.append((f"sample_{i:04d}/decoder_hidden_states.npy", f"sample_{i:04d}/encoder_hidden_states.npy"))
    (dec / "whisper_decoder_calib.json").write_text(json.dumps(calibration.decoder_json(config, pairs, [])))
    return root


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_model_dir):
    from stages.toolchain import onnxruntime_record

    root = tmp_path_factory.mktemp("static_int8")
    config = json.loads((tiny_model_dir / "hf" / "config.json").read_text())
    toolchain = root / "toolchain.json"
    toolchain.write_text(json.dumps(onnxruntime_record()))
    sets = {"a": write_calib(root / "calib_a", config, 0), "b": write_calib(root / "calib_b", config, 1)}
    return root, toolchain, sets


def compile_both(setup, tiny_model_dir, calib: str, ort: dict, name: str) -> dict[str, Path]:
    root, toolchain, sets = setup
    params = default_params()
    params["compile"]["backend"] = "onnxruntime"
    params["compile"]["numerics_samples"] = 1
    params["compile"]["onnxruntime"].update(ort)
    parse_params(params)
    work = root / name
    work.mkdir()
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    out = {}
    for comp, file in (("encoder", "encoder/whisper_encoder_cali.txt"),
                       ("decoder", "decoder/whisper_decoder_calib.json")):
        compile_stage.run(comp, work / "params.yaml", toolchain, tiny_model_dir, sets[calib] / file,
                          work / comp, work / f"metrics_{comp}.json")
        out[comp] = work / comp / f"whisper-tiny-random_{comp}.onnx"
    return out


def activation_scales(path: Path) -> dict[str, np.ndarray]:
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    return {i.name: numpy_helper.to_array(i) for i in graph.initializer
            if i.name.endswith("_scale") and numpy_helper.to_array(i).size == 1}


def test_static_model_depends_on_the_calibration_set(setup, tiny_model_dir):
    a1 = compile_both(setup, tiny_model_dir, "a", STATIC, "static_a1")
    a2 = compile_both(setup, tiny_model_dir, "a", STATIC, "static_a2")
    b = compile_both(setup, tiny_model_dir, "b", STATIC, "static_b")
    for comp in ("encoder", "decoder"):
        assert a1[comp].read_bytes() == a2[comp].read_bytes(), f"{comp}: same set, different bytes"
        assert a1[comp].read_bytes() != b[comp].read_bytes(), f"{comp}: different sets, same model"
        sa, sb = activation_scales(a1[comp]), activation_scales(b[comp])
        assert sa.keys() == sb.keys() and sa
        assert any(not np.array_equal(sa[k], sb[k]) for k in sa), f"{comp}: no activation scale changed"
        prov = json.loads((a1[comp].parent / "provenance.json").read_text())["quantization"]
        assert prov["nodes_16bit_activations"] > 0 and prov["activation_type"] == "int8"
        # lm_head only (decoder): one of the linear layers is in float, none in the encoder
        assert prov["linear_layers_float"] == (1 if comp == "decoder" else 0) and prov["linear_layers"] > 10


def test_dynamic_model_ignores_the_calibration_set(setup, tiny_model_dir):
    # (with smooth_quant the smoothing scales would come from the set, in dynamic mode too)
    dynamic = {"mode": "dynamic", "smooth_quant": False, "keep_float": ["fc2"]}
    a = compile_both(setup, tiny_model_dir, "a", dynamic, "dynamic_a")
    b = compile_both(setup, tiny_model_dir, "b", dynamic, "dynamic_b")
    for comp in ("encoder", "decoder"):
        assert a[comp].read_bytes() == b[comp].read_bytes()
        # the whole output folder (provenance.json included): a calibration change reruns no compiled transcription
        assert sha256_tree(a[comp].parent) == sha256_tree(b[comp].parent)


def test_static_graph_is_int8_with_16bit_where_asked(setup, tiny_model_dir):
    import onnx
    from onnx import TensorProto

    paths = compile_both(setup, tiny_model_dir, "a", STATIC, "static_types")
    graph = onnx.load(str(paths["encoder"])).graph
    ops = {n.op_type for n in graph.node}
    assert "DynamicQuantizeLinear" not in ops and "QuantizeLinear" in ops   # no run-time activation scales
    zero_points = {i.name: i.data_type for i in graph.initializer if i.name.endswith("_zero_point")}
    q_inputs = {n.input[0]: zero_points.get(n.input[2]) for n in graph.node if n.op_type == "QuantizeLinear"}
    fc2_in = {t for n in graph.node if "/fc2/" in n.name and n.op_type == "MatMul" for t in n.input}
    assert set(q_inputs.values()) <= {TensorProto.INT8, TensorProto.INT16}
    assert TensorProto.INT16 in q_inputs.values() and TensorProto.INT8 in q_inputs.values()
    # the 16-bit tensors are exactly fc2's activation input (through its DequantizeLinear) and its output
    dq = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    q_out = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "QuantizeLinear"}
    fc2_out = {t for n in graph.node if "/fc2/" in n.name and n.op_type == "MatMul" for t in n.output}
    sixteen = {t for t, dt in q_inputs.items() if dt == TensorProto.INT16}
    fed = {q_out[dq[t]] for t in fc2_in if t in dq and dq[t] in q_out}
    assert len(fed) == 2 and fc2_out <= set(q_inputs)   # two encoder layers; ORT quantizes MatMul outputs
    assert sixteen == fed | fc2_out


def test_node_patterns(tmp_path, tiny_model_dir):
    from whisper_npu.compilers.onnxruntime import export as onnx_export
    from whisper_npu.compilers.onnxruntime import quantize as ort_int8
    from whisper_npu.model import store as model_store
    from whisper_npu.specs import component_spec

    model, _ = model_store.load_hf(tiny_model_dir)
    path = onnx_export.export_onnx(onnx_export.npu_module(model, "encoder"),
                                   component_spec("encoder", model.config), tmp_path / "e.onnx", 17)
    assert ort_int8.keep_float_nodes(path, ["/encoder/layers.1/fc2/*"]) == ["/encoder/layers.1/fc2/Add",
                                                                          "/encoder/layers.1/fc2/MatMul"]
    assert len(ort_int8.keep_float_nodes(path, ["fc1", "out_proj"])) == 4
    assert len(ort_int8.linear_layers(path)) == 2 * 6 + 2     # q k v out fc1 fc2 per layer + 2 convs
    data = default_params()
    data["compile"]["onnxruntime"]["high_precision"] = ["ffn"]
    with pytest.raises(ParamsError, match=r"compile.onnxruntime.high_precision\[0\] = 'ffn'"):
        parse_params(data)


def test_per_channel_weights_at_once_are_orts_bytes(tmp_path, monkeypatch):
    """quantize.py's per_channel_weights_at_once: ONNX Runtime's own per-channel loop replaced by one vectorized
    computation. Against ORT's ``quantize_data`` channel by channel (int8/uint8, symmetric or not, reduced range
    or not, an all-zero and an all-positive channel), and through ``quantize_dynamic`` on a graph of MatMuls:
    the same bytes, and ORT's per-channel function is no longer called for plain weights."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from onnxruntime.quantization import QuantType, base_quantizer, quantize_dynamic
    from onnxruntime.quantization.quant_utils import quantize_data

    from whisper_npu.compilers.onnxruntime.quantize import channel_params, per_channel_weights_at_once

    rng = np.random.default_rng(0)
    for shape, axis in (((24, 40), 1), ((40, 24), 0), ((6, 8, 3), 0)):
        w = (rng.standard_normal(shape) * 0.05).astype(np.float32)
        np.moveaxis(w, axis, 0)[2] = 0
        np.moveaxis(w, axis, 0)[3] = np.abs(np.moveaxis(w, axis, 0)[3])
        for qtype in (TensorProto.INT8, TensorProto.UINT8):
            for symmetric in (True, False):
                for reduce_range in (False, True):
                    zp, scale, q = channel_params(w, axis, qtype, symmetric, reduce_range)
                    for i in range(w.shape[axis]):
                        want = quantize_data(w.take(i, axis).flatten(), qtype, symmetric, reduce_range=reduce_range)
                        got = (np.array(zp[i]), np.array(scale[i]), q[i])
                        for a, b in zip(want, got):
                            assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), (shape, qtype, symmetric, i)

    w0 = (rng.standard_normal((32, 500)) * 0.1).astype(np.float32)
    w1 = (rng.standard_normal((500, 32)) * 0.1).astype(np.float32)
    w1[:, 7] = 0   # an all-zero output channel
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w0"], ["h"], name="mm0"),
         helper.make_node("MatMul", ["h", "w1"], ["y"], name="mm1")],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32])],
        [numpy_helper.from_array(w0, "w0"), numpy_helper.from_array(w1, "w1")])
    fp32 = tmp_path / "fp32.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(fp32))
    outs = {}
    for fast in (False, True):
        outs[fast] = tmp_path / f"int8_{fast}.onnx"
        calls = []
        original = base_quantizer.quantize_data
        monkeypatch.setattr(base_quantizer, "quantize_data", lambda *a, **k: calls.append(1) or original(*a, **k))
        if fast:
            with per_channel_weights_at_once():
                quantize_dynamic(str(fp32), str(outs[fast]), per_channel=True, weight_type=QuantType.QInt8)
        else:
            quantize_dynamic(str(fp32), str(outs[fast]), per_channel=True, weight_type=QuantType.QInt8)
        monkeypatch.setattr(base_quantizer, "quantize_data", original)
        assert len(calls) == (0 if fast else 500 + 32), len(calls)   # one call per output channel
    assert outs[True].read_bytes() == outs[False].read_bytes()
    assert base_quantizer.BaseQuantizer.quantize_weight_per_channel_impl.__name__ == "quantize_weight_per_channel_impl"
