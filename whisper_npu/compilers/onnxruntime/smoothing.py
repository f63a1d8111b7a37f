"""SmoothQuant-style activation smoothing for Whisper, folded into the weights before ONNX export.

Per producer -> Linear(s) pair, with per-channel activation maxima ``a_j`` of the linears' input (from
calibration inputs) and weight maxima ``w_j`` over the linears' input column j (Xiao et al., SmoothQuant,
2023)::

    s_j = a_j ** alpha / w_j ** (1 - alpha)
    producer's output channel j /= s_j        Linear.weight[:, j] *= s_j

Two kinds of producer, both exact equivalent transformations:

* a LayerNorm feeding q/k/v (self-attention), the cross-attention query, or fc1: its weight and bias
  are divided by ``s``;
* the value projection feeding the attention output projection ``out_proj``: attention output channel j
  is a softmax-weighted sum of value channel j, so dividing ``v_proj``'s output row j (weight and bias)
  by ``s_j`` divides ``out_proj``'s input channel j by ``s_j``;
* the MLP's activation (GELU) feeding ``fc2``: GELU does not commute with a scale, so the division is a
  per-channel multiply fused after it (``GELU(x) * (1 / s)``, one elementwise float op, like the layer
  norm's affine; exported as Mul by a constant).

The float function is unchanged (up to rounding); activations lose their outlier channels, so a per-tensor
activation scale wastes fewer int8 levels, and the weights' rows that meet outlier channels are quantized
with their share of the range. ORT's own SmoothQuant option needs Intel Neural Compressor, which is not a
dependency here; doing it in torch keeps it exact and dependency-free.
"""
from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

import numpy as np


def _scaled_activation(act: Any, width: int) -> Any:
    import torch

    class ScaledActivation(torch.nn.Module):
        """``act(x) * inv_scale`` (per channel): the producer of fc2's input after smoothing."""

        def __init__(self):
            super().__init__()
            self.act = act
            self.register_buffer("inv_scale", torch.ones(width))

        def forward(self, x: Any) -> Any:
            return self.act(x) * self.inv_scale

    return ScaledActivation()


def _pairs(module: Any) -> list[tuple[Any, list[Any], Any]]:
    """(producer, [Linear fed by it], module whose INPUT is measured) for every layer of an NPU-layout
    encoder or decoder module. The producer is a LayerNorm or a value projection."""
    pairs = []
    layers = module.encoder.layers if hasattr(module, "encoder") else module.decoder.layers
    for layer in layers:
        a = layer.self_attn
        pairs.append((layer.self_attn_layer_norm, [a.q_proj, a.k_proj, a.v_proj], a.q_proj))
        pairs.append((a.v_proj, [a.out_proj], a.out_proj))
        if hasattr(layer, "encoder_attn"):
            x = layer.encoder_attn
            # cross-attention: only the query reads the layer norm's output (keys/values read encoder states)
            pairs.append((layer.encoder_attn_layer_norm, [x.q_proj], x.q_proj))
            pairs.append((x.v_proj, [x.out_proj], x.out_proj))
        pairs.append((layer.final_layer_norm, [layer.fc1], layer.fc1))
        layer.activation_fn = _scaled_activation(layer.activation_fn, layer.fc2.in_features)
        pairs.append((layer.activation_fn, [layer.fc2], layer.fc2))
    return pairs


def smooth(module: Any, samples: Iterable[tuple[np.ndarray, ...]], alpha: float) -> tuple[Any, dict]:
    """A smoothed deep copy of an NPU-layout module (the input is left untouched) and a summary.

    ``samples`` is iterated once, one sample at a time (only per-channel maxima are kept)."""
    import torch

    smoothed = copy.deepcopy(module).eval()
    pairs = _pairs(smoothed)
    amax: dict[int, torch.Tensor] = {}

    def hook(idx: int):
        def fn(_m, args):
            x = args[0]
            m = x.detach().abs().reshape(-1, x.shape[-1]).amax(dim=0)
            amax[idx] = torch.maximum(amax[idx], m) if idx in amax else m
        return fn

    handles = [measured.register_forward_pre_hook(hook(i)) for i, (_, _, measured) in enumerate(pairs)]
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
        for i, (producer, linears, _) in enumerate(pairs):
            w = torch.stack([lin.weight.abs().amax(dim=0) for lin in linears]).amax(dim=0)
            s = (amax[i].clamp(min=1e-5) ** alpha / w.clamp(min=1e-5) ** (1 - alpha)).clamp(min=1e-5)
            if isinstance(producer, torch.nn.LayerNorm):
                producer.weight.div_(s)
                producer.bias.div_(s)
            elif hasattr(producer, "inv_scale"):
                producer.inv_scale.div_(s)
            else:   # value projection: output rows
                producer.weight.div_(s[:, None])
                if producer.bias is not None:
                    producer.bias.div_(s)
            for lin in linears:
                lin.weight.mul_(s)
            ratios.append(float(amax[i].max() / amax[i].median().clamp(min=1e-12)))
    return smoothed, {"alpha": alpha, "pairs": len(pairs), "samples": n,
                      "max_outlier_ratio_before": round(max(ratios), 3)}
