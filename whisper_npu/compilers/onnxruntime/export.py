"""Torch modules in the NPU's I/O layout and their ONNX export.

The layout is the one Mobilint's runtime drives the .mxq files with (docs/mobilint.md):

* encoder: ``input_features [1, 3000, 80]`` (frames x mel bins; the transpose to HF's ``[1, 80, 3000]`` is
  inside the graph) -> ``encoder_hidden_states [1, 1500, d]``;
* decoder: ``decoder_hidden_states [1, L, d]`` (token + position embeddings, computed OUTSIDE on the CPU)
  and ``encoder_hidden_states [1, 1500, d]`` -> ``logits [1, L, V]`` (decoder layers, final layer norm
  and proj_out inside). No KV cache: every call runs the whole sequence from position 0.

The embedding tables the runner needs come from :func:`whisper_npu.specs.embedding_tables`.
"""
from __future__ import annotations

import copy
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from whisper_npu.specs import ComponentSpec

log = logging.getLogger(__name__)


def _torch():
    import torch
    return torch


def _modules():
    torch = _torch()
    nn = torch.nn

    class NoPositions(nn.Module):
        """Stands where the decoder adds position embeddings: they are already in the input."""

        def forward(self, x: Any, *args: Any, **kwargs: Any) -> Any:
            return x.new_zeros(())

    class NpuEncoder(nn.Module):
        def __init__(self, encoder: nn.Module):
            super().__init__()
            self.encoder = encoder

        def forward(self, input_features: Any) -> Any:
            return self.encoder(input_features.transpose(1, 2)).last_hidden_state

    class NpuDecoder(nn.Module):
        def __init__(self, decoder: nn.Module, proj_out: nn.Module):
            super().__init__()
            # A shallow copy with its own module table, so the caller's model keeps its positions.
            dec = copy.copy(decoder)
            dec._modules = dict(decoder._modules)
            dec.embed_positions = NoPositions()
            self.decoder = dec
            self.proj_out = proj_out

        def forward(self, decoder_hidden_states: Any, encoder_hidden_states: Any) -> Any:
            # An explicit all-ones mask: without it transformers probes position ids for packed
            # sequences with aten::diff, which the ONNX exporter cannot translate.
            mask = decoder_hidden_states.new_ones(decoder_hidden_states.shape[:2])
            h = self.decoder(inputs_embeds=decoder_hidden_states, encoder_hidden_states=encoder_hidden_states,
                             attention_mask=mask, use_cache=False).last_hidden_state
            return self.proj_out(h)

    return NpuEncoder, NpuDecoder


def npu_module(model: Any, component: str) -> Any:
    """The ``component`` of a ``WhisperForConditionalGeneration`` as a module in NPU layout (eval mode)."""
    NpuEncoder, NpuDecoder = _modules()
    if component == "encoder":
        return NpuEncoder(model.model.encoder).eval()
    if component == "decoder":
        if getattr(model.config, "scale_embedding", False):
            # The NPU runtime adds raw token + position rows; a scaled-embedding model would need the
            # scale applied outside too. No Whisper checkpoint uses it; refuse rather than be wrong.
            raise ValueError("scale_embedding=True models are not supported by the NPU decoder layout")
        return NpuDecoder(model.model.decoder, model.proj_out).eval()
    raise ValueError(f"unknown component {component!r}")


def example_inputs(spec: ComponentSpec, length: int = 8) -> tuple:
    """Deterministic example tensors matching ``spec`` (dynamic dims set to ``length``)."""
    torch = _torch()
    g = torch.Generator().manual_seed(0)
    return tuple(torch.randn(*[length if s == -1 else s for s in t.shape], generator=g) for t in spec.inputs)


def run_torch(module: Any, arrays: tuple[np.ndarray, ...]) -> np.ndarray:
    """Run an NPU-layout module on numpy inputs; float32 numpy output."""
    torch = _torch()
    with torch.inference_mode():
        return module(*(torch.from_numpy(np.ascontiguousarray(a)) for a in arrays)).float().numpy()


def export_onnx(module: Any, spec: ComponentSpec, path: str | Path, opset: int) -> Path:
    """Export ``module`` with the spec's input/output names and dynamic axes (legacy TorchScript exporter,
    ``dynamo=False``: it handles Whisper on torch 2.13 in seconds, see docs/onnxruntime-int8.md)."""
    torch = _torch()
    path = Path(path)
    dynamic = {t.name: {i: f"{t.name}_dim{i}" for i, s in enumerate(t.shape) if s == -1}
               for t in (*spec.inputs, *spec.outputs)}
    dynamic = {k: v for k, v in dynamic.items() if v}
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")   # the legacy exporter's DeprecationWarning and tracer warnings
        torch.onnx.export(module, example_inputs(spec), str(path), dynamo=False, opset_version=opset,
                          input_names=[t.name for t in spec.inputs], output_names=[t.name for t in spec.outputs],
                          dynamic_axes=dynamic or None, do_constant_folding=True)
    if not path.is_file() or path.stat().st_size == 0:
        raise RuntimeError(f"{path}: torch.onnx.export wrote nothing")
    log.info("exported %s (%.1f MB)", path.name, path.stat().st_size / 1e6)
    return path
