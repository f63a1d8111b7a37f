"""Static QDQ with per-group bit width and range method (``compile.onnxruntime.proxy`` / ``groups``).

Why: a hardware quantizer decides bits and ranges per layer, and quantizes more than MatMul/Conv. This puts
ORT's Q/DQ where the chosen proxy says (groups.py), gives each group's activation tensors 8 or 16 bits and a
range method (minmax, percentile, entropy), all from ONE pass over the calibration samples (ranges.py):

* 16 bits: ``TensorQuantOverrides[t] = [{"quant_type": QInt16}]`` (weights stay int8), with
  ``UseQDQContribOps`` so 16-bit Q/DQ needs no opset 21;
* range method: the min/max ranges go to ORT as its calibration cache (``calibration_cache_path``: no
  calibration run inside ``quantize_static``) and a tensor whose method is not minmax gets that method's
  thresholds (a group's own method: from the first ``ranges.SUMMARY_SAMPLES`` samples, see ``binning``) as
  ``rmin``/``rmax`` overrides (keys ORT's ``TensorQuantOverridesHelper`` accepts for activations;
  ``calc_quant_params`` prefers them to the calibrated range). Softmax outputs keep ORT's fixed [0, 1] unless
  their group names a method: at 8 bits that grid (step 1/255) is coarser than a uniform attention weight over
  Whisper's 1500 encoder frames (1/1500), so near-uniform rows quantize to zero.

A tensor shared by two groups (a LayerNorm output is the next q/k/v projections' input) has one Q/DQ pair:
its bits are the largest any overriding group asks, its method the overriding group that WRITES it if there
is one, else the first overriding reader in graph order. ``groups`` entries win over ``high_precision``.
"""
from __future__ import annotations

import inspect
import tempfile
from dataclasses import dataclass
from pathlib import Path

from whisper_npu.compilers.onnxruntime import groups as groups_mod
from whisper_npu.compilers.onnxruntime import ranges

KEY = "compile.onnxruntime.groups"


@dataclass
class Plan:
    component: str
    groups: dict[str, groups_mod.Group]
    op_types: list[str]          # given to quantize_static
    excluded: list[str]          # nodes_to_exclude (the configured ones + extra-op nodes outside any group)
    calibrate: list[str]         # tensors whose ranges the quantizer may ask for


def plan(pre: Path, proxy: str, op_types, nodes_to_exclude=()) -> Plan:
    """Groups and quantizer arguments for the pre-processed graph ``pre``."""
    import onnx

    component = groups_mod.component_of(pre)
    found = groups_mod.find(pre, component, proxy, op_types)
    ops = groups_mod.quantized_op_types(op_types, proxy)
    graph = onnx.load(str(pre), load_external_data=False).graph
    for name in [n for n, g in found.items() if set(g.quantized) <= set(nodes_to_exclude)]:
        del found[name]   # kept float (keep_float / nodes_to_exclude): nothing to give bits or ranges to
    in_groups = {n for g in found.values() for n in g.quantized}
    extra = [n.name for n in graph.node if n.op_type in ops and n.op_type not in op_types and n.name not in in_groups]
    excluded = sorted(set(nodes_to_exclude) | set(extra))
    # what ORT's calibrator would select (float, not an initializer) for the nodes that are quantized
    inits = {i.name for i in graph.initializer}
    typed = {v.name: v.type.tensor_type.elem_type for v in (*graph.value_info, *graph.input, *graph.output)}
    calibrate = sorted({t for n in graph.node if n.op_type in ops and n.name not in excluded
                        for t in (*n.input, *n.output) if t and t not in inits and typed.get(t) in (1, 10)})
    return Plan(component, found, ops, excluded, calibrate)


def check_overrides(overrides: dict, p: Plan) -> dict[str, dict]:
    """This component's entries of ``overrides`` (group name or fnmatch pattern -> {bits, method}) by group name;
    ValueError naming the key when an entry of this component matches none of its groups."""
    out: dict[str, dict] = {}
    for pattern, setting in overrides.items():
        if not pattern.startswith(("encoder.", "decoder.")):
            raise ValueError(f"{KEY}.{pattern}: a group name starts with encoder. or decoder.")
        if not pattern.startswith(p.component + "."):
            continue
        names = groups_mod.select(p.groups, pattern)
        if not names:
            raise ValueError(f"{KEY}.{pattern}: matches no {p.component} group of this proxy; groups are named like "
                             f"{', '.join(list(p.groups)[:4])}, ...")
        for n in names:
            out[n] = {**out.get(n, {}), **{k: v for k, v in setting.items() if v is not None}}
    return out


def resolve(p: Plan, by_group: dict[str, dict], default_method: str,
            high_precision: list[str] = ()) -> tuple[dict[str, int], dict[str, str]]:
    """Per-tensor bits (only those not 8) and range method (only where a group sets one; see the module
    docstring for shared tensors)."""
    bits = {t: 16 for t in high_precision}
    group_bits: dict[str, int] = {}
    method: dict[str, tuple[int, str]] = {}
    for name, g in p.groups.items():
        s = by_group.get(name, {})
        for t in g.tensors:
            if "bits" in s:
                group_bits[t] = max(group_bits.get(t, 0), s["bits"])
            if "method" in s:
                rank = 0 if t in g.produced else 1
                if t not in method or rank < method[t][0]:
                    method[t] = (rank, s["method"])
    bits.update(group_bits)
    return {t: b for t, b in bits.items() if b != 8}, {t: m for t, (_, m) in method.items()}


def binning(method: dict[str, str], default_method: str) -> dict:
    """``ranges.collect``'s histogram arguments. A default method other than minmax: every tensor's histograms over
    every sample (ORT's calibrator). Minmax: only the tensors of a group's own percentile / entropy method, each for
    that method, over the first ``ranges.SUMMARY_SAMPLES`` samples. Why: ORT's histogram merge bins each sample
    against the grown edge array (numpy's slow path); a whisper-base encoder compile with the study's chosen methods
    had not finished binning 102 samples after 13 minutes, where the study's own 16-sample pass (every tensor, both
    histograms: the samples its choice is made on) took about three."""
    if default_method != "minmax":
        return {"binned": None, "binned_samples": None}
    return {"binned": {m: sorted(t for t, x in method.items() if x == m) for m in ("percentile", "entropy")},
            "binned_samples": ranges.SUMMARY_SAMPLES}


def overrides_for(p: Plan, stats: ranges.Stats, bits: dict[str, int], method: dict[str, str], default_method: str,
                  act16) -> dict[str, list[dict]]:
    """ORT ``TensorQuantOverrides``: quant_type for 16-bit tensors, rmin/rmax where the method is not minmax
    (the min/max ranges are in the calibration cache already)."""
    softmax_out = {t for g in p.groups.values() if g.name.endswith(".softmax") for t in g.produced}
    by_method: dict[str, dict] = {}
    out: dict[str, dict] = {}
    for t in p.calibrate:
        m = method.get(t, default_method)
        # a Softmax output keeps ORT's fixed [0, 1] unless its group names a method (then the measured range)
        if t in stats.lo and (t in method if t in softmax_out else m != "minmax"):
            if m not in by_method:
                by_method[m] = stats.ranges(m)
            lo, hi = by_method[m][t]
            out.setdefault(t, {}).update(rmin=_f32(lo), rmax=_f32(hi))
        if bits.get(t, 8) == 16:
            out.setdefault(t, {})["quant_type"] = act16
    return {t: [o] for t, o in out.items()}


def _f32(x: float):
    import numpy as np
    return np.array(x, dtype=np.float32)


def quantize_planned(pre: Path, out_path: Path, p: Plan, stats: ranges.Stats, cache: Path, *, bits: dict[str, int],
                     method: dict[str, str], default_method: str, per_channel: bool, activation_type: str) -> int:
    """One QDQ model from precomputed ranges (no calibration pass); returns how many tensors are 16-bit."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if "calibration_cache_path" not in inspect.signature(quantize_static).parameters:
        raise RuntimeError("compile.onnxruntime.proxy / groups need onnxruntime's quantize_static("
                           "calibration_cache_path=...) (onnxruntime 1.32 has it); upgrade onnxruntime")
    act = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}[activation_type]
    act16 = QuantType.QInt16 if activation_type == "int8" else QuantType.QUInt16
    tqo = overrides_for(p, stats, bits, method, default_method, act16)
    extra: dict = {"TensorQuantOverrides": tqo} if tqo else {}
    if any(bits.get(t, 8) == 16 for t in p.calibrate):
        extra["UseQDQContribOps"] = True
    quantize_static(str(pre), str(out_path), None, quant_format=QuantFormat.QDQ, op_types_to_quantize=p.op_types,
                    per_channel=per_channel, activation_type=act, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=p.excluded, extra_options=extra,
                    calibration_cache_path=str(cache))
    return sum(1 for t in p.calibrate if bits.get(t, 8) == 16)


def quantize(pre: Path, out_path: Path, reader, *, proxy: str, overrides: dict, op_types, nodes_to_exclude,
             high_precision_tensors, calibrate_method: str, percentile: float, per_channel: bool,
             activation_type: str) -> dict:
    """The static mode with ``proxy`` and per-group ``overrides``; returns what was done (for provenance)."""
    p = plan(pre, proxy, op_types, nodes_to_exclude)
    by_group = check_overrides(overrides, p)
    bits, method = resolve(p, by_group, calibrate_method, [t for t in high_precision_tensors if t in p.calibrate])
    stats = ranges.collect(pre, reader, p.calibrate, {calibrate_method, *method.values()}, percentile,
                           **binning(method, calibrate_method))
    with tempfile.TemporaryDirectory(prefix="whisper-npu-proxy-") as tmp:
        cache = ranges.write_cache(stats, Path(tmp) / "ranges.json")
        n16 = quantize_planned(pre, out_path, p, stats, cache, bits=bits, method=method,
                               default_method=calibrate_method, per_channel=per_channel,
                               activation_type=activation_type)
    return {"proxy": proxy, "groups": len(p.groups), "groups_overridden": sorted(by_group),
            "tensors_16bit_activations": n16,
            "tensors_other_range_method": sum(1 for m in method.values() if m != calibrate_method)}
