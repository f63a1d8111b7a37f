"""INT8 quantization of the exported ONNX models with ONNX Runtime: dynamic and calibrated static.

Why it is more than a call to quantize_static: naive static INT8 of the whole encoder breaks it (BENCHMARKS.md,
"Compiled models", measures static minmax even with fc2 in float), and ORT's calibrator keeps every intermediate
output of every sample, gigabytes for a few whisper-small clips.

What this module does about it:

* memory: the static calibrator sees at most ``calibration_samples`` samples and gets them ONE AT A
  TIME (``CalibStridedMinMax = 1`` makes quantize_static call ``collect_data`` per sample; MinMax merges
  ranges and the histogram collectors of percentile/entropy merge histograms across calls), so peak memory
  is one sample's intermediates, whatever the set size;
* accuracy: ``keep_float`` groups name sensitive nodes kept in float (activation x activation attention
  MatMuls, the convolutions, the LM head, fc2), on top of exact ``nodes_to_exclude`` names; percentile /
  entropy calibration; per-channel weights; optional SmoothQuant-style smoothing (see smoothing.py).

What the variants do on whisper-base is measured by ``python -m bench.compiled_models`` (BENCHMARKS.md,
"Compiled models"): keeping fc2 (after GELU, the input int8 handles worst) in float is the single most
useful option, so the default is dynamic with ``keep_float: [fc2]``.
"""
from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

# Symbolic groups of nodes that may be kept in float (compile.onnxruntime.keep_float).
KEEP_FLOAT_GROUPS = ("attention_matmuls", "first_conv", "convs", "lm_head", "fc2")


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


def keep_float_nodes(model_path: str | Path, groups: Sequence[str]) -> list[str]:
    """Names of the nodes in ``groups`` (see KEEP_FLOAT_GROUPS) in the ONNX graph at ``model_path``."""
    import onnx

    unknown = sorted(set(groups) - set(KEEP_FLOAT_GROUPS))
    if unknown:
        raise ValueError(f"unknown keep_float group {unknown[0]!r}; allowed: {', '.join(KEEP_FLOAT_GROUPS)}")
    graph = onnx.load(str(model_path), load_external_data=False).graph
    inits = {i.name for i in graph.initializer}
    # Constants produced by nodes (e.g. a transposed weight) count as weights too.
    consts = inits | {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    outputs = {o.name for o in graph.output}
    names: list[str] = []
    convs = [n for n in graph.node if n.op_type == "Conv"]
    for n in graph.node:
        if n.op_type == "MatMul":
            if "attention_matmuls" in groups and not any(i in consts for i in n.input):
                names.append(n.name)
            elif "lm_head" in groups and any(o in outputs for o in n.output):
                names.append(n.name)
            elif "fc2" in groups and "/fc2/" in n.name:
                names.append(n.name)
    if "convs" in groups:
        names += [n.name for n in convs]
    elif "first_conv" in groups and convs:
        names.append(convs[0].name)
    return sorted(set(names))


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


def quantize(fp32_path: str | Path, out_path: str | Path, *, mode: str, per_channel: bool, op_types: Sequence[str],
             nodes_to_exclude: Sequence[str] = (), keep_float: Sequence[str] = (),
             calibrate_method: str = "minmax", percentile: float = 99.999,
             reader: ListReader | None = None) -> dict:
    """Quantize ``fp32_path`` to ``out_path``; returns what was done (for provenance).

    ``mode``: ``dynamic`` (int8 weights, activation scales at run time, no calibration data) or
    ``static`` (QDQ, activations uint8 with ranges from ``reader``, weights int8).
    """
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static

    fp32_path, out_path = Path(fp32_path), Path(out_path)
    with tempfile.TemporaryDirectory(prefix="whisper-npu-quant-") as tmp:
        pre = preprocess(fp32_path, Path(tmp) / "pre.onnx")
        excluded = sorted(set(nodes_to_exclude) | set(keep_float_nodes(pre, keep_float)))
        done = {"mode": mode, "per_channel": per_channel, "op_types": list(op_types),
                "nodes_kept_float": len(excluded)}
        if mode == "dynamic":
            quantize_dynamic(str(pre), str(out_path), op_types_to_quantize=list(op_types), per_channel=per_channel,
                             weight_type=QuantType.QInt8, nodes_to_exclude=excluded)
        elif mode == "static":
            if reader is None or len(reader) == 0:
                raise ValueError("static quantization needs calibration samples")
            extra = {"CalibStridedMinMax": 1}   # one sample per collect_data call: bounded memory
            if calibrate_method == "percentile":
                extra["CalibPercentile"] = percentile
            reader.rewind()
            quantize_static(str(pre), str(out_path), reader, quant_format=QuantFormat.QDQ,
                            op_types_to_quantize=list(op_types), per_channel=per_channel,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=_calibrate_method(calibrate_method), nodes_to_exclude=excluded,
                            extra_options=extra)
            done.update(calibrate_method=calibrate_method, calibration_samples=len(reader))
            if calibrate_method == "percentile":
                done["percentile"] = percentile
        else:
            raise ValueError(f"unknown quantization mode {mode!r}")
    if not out_path.is_file() or out_path.stat().st_size == 0:
        raise RuntimeError(f"{out_path}: the quantizer wrote nothing")
    log.info("quantized %s (%s): %.1f MB", out_path.name, mode, out_path.stat().st_size / 1e6)
    return done
