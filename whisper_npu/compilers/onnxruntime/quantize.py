"""INT8 quantization of the exported ONNX models with ONNX Runtime: dynamic, and NPU-like static.

* ``dynamic``: int8 weights per channel, activation scales computed at run time (DynamicQuantizeLinear);
  never reads the calibration sets.
* ``static``: QDQ, weights int8 per channel, activations int8 (or uint8) with static per-tensor scales
  calibrated from the calibration sets; nothing is quantized at run time. What keeps it accurate:
  SmoothQuant-style smoothing before export (smoothing.py), minmax / percentile / entropy ranges, and
  ``high_precision``: named node groups whose activations are 16-bit (weights still int8), as Mobilint's
  mixed precision does (its vision-transformer preset: 16-bit activations for "output and ffn").
  ``keep_float`` leaves nodes in float instead (counted in provenance as ``linear_layers_float``).

Why 16-bit for ``fc2`` and the attention matmuls, INPUTS AND OUTPUTS: ORT's QDQ quantizer quantizes a
MatMul's output as well (before the bias Add and the residual). fc2 in layer 3 of whisper-base's encoder
writes values up to ~460 into the residual stream next to values ~1: one int8 per-tensor scale for that
output wipes out the small ones. The attention logits
(QK^T output) and probabilities (AV input) need the finer grid too.

``proxy`` / ``groups`` (proxy.py, groups.py): Q/DQ also on residual Adds, LayerNorm and Softmax, and per-group
bits and range method; sensitivity.py ranks the groups by what 8 bits cost them.

What the variants do on whisper-base, with WER on real speech, is measured by ``python -m bench.static_int8``
(docs/onnxruntime-int8.md, BENCHMARKS.md).

Memory: the static calibrator gets the samples ONE AT A TIME (``CalibStridedMinMax = 1`` makes
quantize_static call ``collect_data`` per sample; MinMax merges ranges and the histogram collectors of
percentile/entropy merge histograms across calls), so peak memory is one sample's intermediates, whatever
the set size (ORT otherwise holds every intermediate of every sample: gigabytes for a few whisper-small clips,
docs/onnxruntime-int8.md).
"""
from __future__ import annotations

import contextlib
import fnmatch
import logging
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from whisper_npu.compilers.onnxruntime import proxy as proxy_mod

log = logging.getLogger(__name__)

# Symbolic groups of nodes (compile.onnxruntime.keep_float / high_precision). An entry starting with "/" is
# an fnmatch pattern over ONNX node names instead, e.g. "/encoder/layers.5/fc2/*" (names as the exporter
# writes them: /encoder/layers.N/fc1/MatMul, /decoder/layers.N/encoder_attn/k_proj/MatMul, ...).
NODE_GROUPS = ("attention_matmuls", "first_conv", "convs", "lm_head", "fc2", "fc1", "out_proj")
LINEAR_OPS = ("MatMul", "Gemm", "Conv")


class ListReader:
    """CalibrationDataReader over a list of samples loaded lazily, with the ``__len__``/``set_range``
    that quantize_static's strided calibration needs."""

    def __init__(self, names: Sequence[str], load: Callable[[int], tuple[np.ndarray, ...]], n: int):
        self.names, self.load, self.n = list(names), load, n
        self.start, self.end, self.pos = 0, n, 0

    def __len__(self) -> int:
        return self.n

    def set_range(self, start_index: int, end_index: int) -> None:
        self.start, self.end, self.pos = start_index, min(end_index, self.n), start_index

    def get_next(self) -> dict | None:
        if self.pos >= self.end:
            return None
        arrays = self.load(self.pos)
        self.pos += 1
        return dict(zip(self.names, arrays))

    def rewind(self) -> None:
        self.set_range(0, self.n)


def _consts(graph) -> set[str]:
    """Initializers and Constant-node outputs (e.g. a transposed weight): what counts as a weight."""
    return {i.name for i in graph.initializer} | {o for n in graph.node if n.op_type == "Constant" for o in n.output}


def check_groups(entries: Sequence[str], key: str = "keep_float") -> None:
    unknown = sorted(e for e in set(entries) - set(NODE_GROUPS) if not e.startswith("/"))
    if unknown:
        raise ValueError(f"unknown {key} group {unknown[0]!r}; allowed: {', '.join(NODE_GROUPS)}, "
                         "or a node-name pattern starting with '/'")


def keep_float_nodes(model_path: str | Path, groups: Sequence[str]) -> list[str]:
    """Names of the nodes in ``groups`` (NODE_GROUPS, or "/..." node-name patterns) in the ONNX graph
    at ``model_path``."""
    check_groups(groups)
    graph = _load_graph(model_path)
    consts = _consts(graph)
    outputs = {o.name for o in graph.output}
    names: list[str] = []
    convs = [n for n in graph.node if n.op_type == "Conv"]
    patterns = [g for g in groups if g.startswith("/")]
    for n in graph.node:
        if any(fnmatch.fnmatchcase(n.name, pat) for pat in patterns):
            names.append(n.name)
        if n.op_type == "MatMul":
            if "attention_matmuls" in groups and not any(i in consts for i in n.input):
                names.append(n.name)
            elif "lm_head" in groups and any(o in outputs for o in n.output):
                names.append(n.name)
            elif any(g in groups and f"/{g}/" in n.name for g in ("fc1", "fc2", "out_proj")):
                names.append(n.name)
    if "convs" in groups:
        names += [n.name for n in convs]
    elif "first_conv" in groups and convs:
        names.append(convs[0].name)
    return sorted(set(names))


def linear_layers(model_path: str | Path) -> list[str]:
    """Names of the linear layers (MatMul / Gemm / Conv with a weight input) of the graph at ``model_path``."""
    graph = _load_graph(model_path)
    consts = _consts(graph)
    return sorted(n.name for n in graph.node if n.op_type in LINEAR_OPS and any(i in consts for i in n.input))


def activation_tensors(model_path: str | Path, nodes: Sequence[str]) -> list[str]:
    """The non-weight inputs and the outputs of ``nodes`` (what a 16-bit activation override applies to:
    ORT's QDQ quantizer quantizes a MatMul's output too, before the bias Add and the residual)."""
    graph = _load_graph(model_path)
    consts, wanted = _consts(graph), set(nodes)
    return sorted({t for n in graph.node if n.name in wanted for t in (*n.input, *n.output) if t and t not in consts})


def _calibrate_method(name: str):
    from onnxruntime.quantization import CalibrationMethod
    return {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
            "entropy": CalibrationMethod.Entropy}[name]


def preprocess(fp32_path: Path, out_path: Path) -> Path:
    """ORT's pre-processing (symbolic shape inference) before quantization, WITHOUT its graph optimization:
    that fuses MatMul+Add into Gemm (with Reshapes), so ``op_types: [MatMul]`` would silently skip most
    linear layers, and renames the nodes ``keep_float`` and ``nodes_to_exclude`` refer to."""
    from onnxruntime.quantization.shape_inference import quant_pre_process
    quant_pre_process(str(fp32_path), str(out_path), skip_optimization=True)
    return out_path


def channel_params(w: np.ndarray, axis: int, qtype: int, symmetric: bool, reduce_range: bool):
    """ORT's ``quant_utils.quantize_data`` for every channel along ``axis`` at once (int8/uint8, no range
    overrides): the same float32/float64 steps elementwise, so the same bytes. Returns (zero points, scales,
    quantized channels), each indexed by channel."""
    from onnxruntime.quantization.quant_utils import get_qmin_qmax_for_qType

    qmin, qmax = get_qmin_qmax_for_qType(qtype, reduce_range, symmetric=symmetric)
    lo, hi = get_qmin_qmax_for_qType(qtype)
    x = np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)
    rmin, rmax = np.minimum(x.min(axis=1), w.dtype.type(0)), np.maximum(x.max(axis=1), w.dtype.type(0))
    if symmetric:
        rmax = np.maximum(np.abs(rmin), np.abs(rmax))
        rmin = -rmax
    scale64 = (rmax.astype(np.float64) - rmin.astype(np.float64)) / (np.float64(qmax) - np.float64(qmin))
    degenerate = scale64 < np.finfo(w.dtype).tiny           # ORT: scale 1, zero point 0
    with np.errstate(divide="ignore", invalid="ignore"):
        zp = (np.full(len(x), np.round((qmin + qmax) / np.float64(2.0))) if symmetric
              else np.round(qmin - rmin / scale64))
    scale = np.where(degenerate, 1.0, scale64).astype(w.dtype)
    zp = np.where(degenerate, 0, zp).astype(qmin.dtype)
    q = np.clip((x.astype(np.float32) / scale[:, None]).round() + zp[:, None], lo, hi).astype(qmin.dtype)
    return zp, scale, q


@contextlib.contextmanager
def per_channel_weights_at_once():
    """ONNX Runtime's dynamic quantizer computes per-channel weight scales in a Python loop, one
    ``quantize_data`` call per output channel: Whisper's lm_head alone has 51,865 (the vocabulary). Within this
    block, each weight's channels are computed at once by ``channel_params`` and handed to that loop in its
    order; a call this does not cover (range overrides, other types, data that is not the next channel) goes
    to ORT's own function. Same bytes out (tests/test_static_int8.py, test_per_channel_weights_at_once_*);
    whisper-base's decoder quantizes in 0.42x the time (``python -m bench.weight_quantization``)."""
    from onnx import TensorProto, numpy_helper
    from onnxruntime.quantization import base_quantizer

    original_impl, original_quantize_data = (base_quantizer.BaseQuantizer.quantize_weight_per_channel_impl,
                                             base_quantizer.quantize_data)

    def impl(self, weight_name, weight_qType, channel_axis, *args, **kwargs):
        init = next((t for t in self.model.initializer() if t.name == weight_name), None)
        weights = numpy_helper.to_array(init) if init is not None and init.data_type == TensorProto.FLOAT else None
        rows = (np.ascontiguousarray(np.moveaxis(weights, channel_axis, 0).reshape(weights.shape[channel_axis], -1))
                if weights is not None else np.empty((0, 0), np.float32))
        cache: dict = {}
        position = iter(range(len(rows)))

        def quantize_data(data, qType, symmetric, reduce_range=False, min_real_range=None, rmin_override=None,
                          rmax_override=None):
            i = next(position, None)
            plain = (min_real_range is None and rmin_override is None and rmax_override is None
                     and qType in (TensorProto.INT8, TensorProto.UINT8))
            if i is not None and plain and rows[i].tobytes() == np.asarray(data, np.float32).tobytes():
                key = (qType, bool(symmetric), bool(reduce_range))
                if key not in cache:
                    cache[key] = channel_params(weights, channel_axis % weights.ndim, qType, symmetric, reduce_range)
                zp, scale, q = cache[key]
                return np.array(zp[i]), np.array(scale[i]), q[i].copy()
            return original_quantize_data(data, qType, symmetric, reduce_range, min_real_range, rmin_override,
                                          rmax_override)

        base_quantizer.quantize_data = quantize_data
        try:
            return original_impl(self, weight_name, weight_qType, channel_axis, *args, **kwargs)
        finally:
            base_quantizer.quantize_data = original_quantize_data

    base_quantizer.BaseQuantizer.quantize_weight_per_channel_impl = impl
    try:
        yield
    finally:
        base_quantizer.BaseQuantizer.quantize_weight_per_channel_impl = original_impl


def quantize(fp32_path: str | Path, out_path: str | Path, *, mode: str, per_channel: bool, op_types: Sequence[str],
             nodes_to_exclude: Sequence[str] = (), keep_float: Sequence[str] = (),
             calibrate_method: str = "minmax", percentile: float = 99.999, activation_type: str = "int8",
             high_precision: Sequence[str] = (), reader: ListReader | None = None, proxy: str = "matmul",
             groups: dict | None = None) -> dict:
    """Quantize ``fp32_path`` to ``out_path``; returns what was done (for provenance).

    ``mode``: ``dynamic`` (int8 weights, activation scales at run time, no calibration data) or
    ``static`` (QDQ: weights int8, activations ``activation_type`` with static per-tensor ranges from
    ``reader``; the inputs of the ``high_precision`` nodes get 16-bit activations, weights staying int8).
    ``proxy`` (``matmul``: MatMul/Conv as ever; ``npu``: also residual Adds, LayerNorm, Softmax) and ``groups``
    (group -> {bits, method}) go through proxy.py; the defaults take the unchanged path below.
    """
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static

    fp32_path, out_path = Path(fp32_path), Path(out_path)
    check_groups(high_precision, "high_precision")
    with tempfile.TemporaryDirectory(prefix="whisper-npu-quant-") as tmp:
        pre = preprocess(fp32_path, Path(tmp) / "pre.onnx")
        excluded = sorted(set(nodes_to_exclude) | set(keep_float_nodes(pre, keep_float)))
        linear = linear_layers(pre)
        graph_nodes = {n.name: n.op_type for n in _load_graph(pre).node}
        float_linear = [n for n in linear if n in excluded or graph_nodes[n] not in op_types]
        done = {"mode": mode, "per_channel": per_channel, "op_types": list(op_types),
                "nodes_kept_float": len(excluded), "linear_layers": len(linear),
                "linear_layers_float": len(float_linear)}
        if mode == "dynamic":
            with per_channel_weights_at_once():
                quantize_dynamic(str(pre), str(out_path), op_types_to_quantize=list(op_types),
                                 per_channel=per_channel, weight_type=QuantType.QInt8, nodes_to_exclude=excluded)
        elif mode == "static":
            if reader is None or len(reader) == 0:
                raise ValueError("static quantization needs calibration samples")
            act = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}[activation_type]
            act16 = QuantType.QInt16 if activation_type == "int8" else QuantType.QUInt16
            hp_nodes = [n for n in keep_float_nodes(pre, high_precision) if n not in excluded]
            hp_inputs = activation_tensors(pre, hp_nodes)
            if proxy != "matmul" or groups:
                done.update(proxy_mod.quantize(
                    pre, out_path, reader, proxy=proxy, overrides=groups or {}, op_types=op_types,
                    nodes_to_exclude=excluded, high_precision_tensors=hp_inputs, calibrate_method=calibrate_method,
                    percentile=percentile, per_channel=per_channel, activation_type=activation_type))
                done.update(calibrate_method=calibrate_method, calibration_samples=len(reader),
                            activation_type=activation_type, nodes_16bit_activations=len(hp_nodes))
                if calibrate_method == "percentile":
                    done["percentile"] = percentile
                return _written(out_path, mode, done, float_linear, linear)
            extra: dict = {"CalibStridedMinMax": 1}   # one sample per collect_data call: bounded memory
            if hp_inputs:
                extra["TensorQuantOverrides"] = {t: [{"quant_type": act16}] for t in hp_inputs}
                extra["UseQDQContribOps"] = True   # com.microsoft 16-bit Q/DQ (ORT 1.32 still raises the opset to 21)
            if calibrate_method == "percentile":
                extra["CalibPercentile"] = percentile
            reader.rewind()
            quantize_static(str(pre), str(out_path), reader, quant_format=QuantFormat.QDQ,
                            op_types_to_quantize=list(op_types), per_channel=per_channel,
                            activation_type=act, weight_type=QuantType.QInt8,
                            calibrate_method=_calibrate_method(calibrate_method), nodes_to_exclude=excluded,
                            extra_options=extra)
            done.update(calibrate_method=calibrate_method, calibration_samples=len(reader),
                        activation_type=activation_type, nodes_16bit_activations=len(hp_nodes))
            if calibrate_method == "percentile":
                done["percentile"] = percentile
        else:
            raise ValueError(f"unknown quantization mode {mode!r}")
    return _written(out_path, mode, done, float_linear, linear)


def _written(out_path: Path, mode: str, done: dict, float_linear: list, linear: list) -> dict:
    if not out_path.is_file() or out_path.stat().st_size == 0:
        raise RuntimeError(f"{out_path}: the quantizer wrote nothing")
    log.info("quantized %s (%s): %.1f MB, %d of %d linear layers in float", out_path.name, mode,
             out_path.stat().st_size / 1e6, len(float_linear), len(linear))
    return done


def _load_graph(path: str | Path):
    import onnx
    return onnx.load(str(path), load_external_data=False).graph
