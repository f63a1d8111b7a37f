"""SmoothQuant-style activation smoothing for Whisper, folded into the weights before ONNX export.

Per LayerNorm -> Linear(s) pair, with per-channel activation maxima ``a_j`` from calibration inputs and
weight maxima ``w_j`` over the linears' input column j (Xiao et al., SmoothQuant, 2023)::

    s_j = a_j ** alpha / w_j ** (1 - alpha)
    LayerNorm.weight_j, LayerNorm.bias_j /= s_j        Linear.weight[:, j] *= s_j

The float function is unchanged (exactly, up to rounding); activations lose their outlier channels, so
a per-tensor activation scale wastes fewer int8 levels. ORT's own SmoothQuant option needs Intel Neural
Compressor, which is not a dependency here; doing it in torch keeps it exact and dependency-free.
"""
from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

import numpy as np


def _pairs(module: Any) -> list[tuple[Any, list[Any]]]:
    """(LayerNorm, [Linear fed by it]) for every layer of an NPU-layout encoder or decoder module."""
    pairs = []
    if hasattr(module, "encoder"):
        for layer in module.encoder.layers:
            a = layer.self_attn
            pairs.append((layer.self_attn_layer_norm, [a.q_proj, a.k_proj, a.v_proj]))
            pairs.append((layer.final_layer_norm, [layer.fc1]))
    else:
        for layer in module.decoder.layers:
            a = layer.self_attn
            pairs.append((layer.self_attn_layer_norm, [a.q_proj, a.k_proj, a.v_proj]))
            # cross-attention: only the query reads the layer norm's output (keys/values read encoder states)
            pairs.append((layer.encoder_attn_layer_norm, [layer.encoder_attn.q_proj]))
            pairs.append((layer.final_layer_norm, [layer.fc1]))
    return pairs


def smooth(module: Any, samples: Iterable[tuple[np.ndarray, ...]], alpha: float) -> tuple[Any, dict]:
    """A smoothed deep copy of an NPU-layout module (the input is left untouched) and a summary."""
    import torch

    smoothed = copy.deepcopy(module).eval()
    pairs = _pairs(smoothed)
    amax: dict[int, torch.Tensor] = {}

    def hook(idx: int):
        def fn(_m, _inp, out):
            m = out.detach().abs().reshape(-1, out.shape[-1]).amax(dim=0)
            amax[idx] = torch.maximum(amax[idx], m) if idx in amax else m
        return fn

    handles = [ln.register_forward_hook(hook(i)) for i, (ln, _) in enumerate(pairs)]
    n = 0
    try:
        with torch.inference_mode():
            for arrays in samples:
                smoothed(*(torch.from_numpy(np.ascontiguousarray(a)) for a in arrays))
                n += 1
    finally:
        for h in handles:
            h.remove()
    if n == 0:
        raise ValueError("smoothing needs at least one calibration sample")
    ratios = []
    with torch.no_grad():
        for i, (ln, linears) in enumerate(pairs):
            w = torch.stack([lin.weight.abs().amax(dim=0) for lin in linears]).amax(dim=0)
            s = (amax[i].clamp(min=1e-5) ** alpha / w.clamp(min=1e-5) ** (1 - alpha)).clamp(min=1e-5)
            ln.weight.div_(s)
            ln.bias.div_(s)
            for lin in linears:
                lin.weight.mul_(s)
            ratios.append(float(amax[i].max() / amax[i].median().clamp(min=1e-12)))
    return smoothed, {"alpha": alpha, "pairs": len(pairs), "samples": n,
                      "max_outlier_ratio_before": round(max(ratios), 3)}
