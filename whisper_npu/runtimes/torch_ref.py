"""The fp32 reference backend: the Hugging Face Whisper model behind the runtime protocol.

The decoder session keeps HF's own key/value cache (``past_key_values``), fed the prompt first and then one
token per step, the way the NPU decoder is driven; with the loop in whisper_npu/decode.py it gives the same
tokens as HF greedy ``generate`` (tests/test_evaluate.py checks it). It also decodes several clips at once
(``reset_batch`` / ``step_batch`` / ``select``, for ``decode.greedy_decode_batch``).
"""
from __future__ import annotations

import inspect
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from whisper_npu.specs import decoder_spec, encoder_spec


class TorchEncoder:
    def __init__(self, model: Any):
        self.model = model
        self.spec = encoder_spec(model.config)

    def __call__(self, features: np.ndarray) -> np.ndarray:
        import torch

        self.spec.inputs[0].check(features, "torch encoder")
        with torch.inference_mode():
            # NPU layout [1, 3000, 80] -> HF layout [1, 80, 3000].
            x = torch.from_numpy(np.ascontiguousarray(features.transpose(0, 2, 1))).to(self.model.device)
            out = self.model.model.encoder(input_features=x).last_hidden_state
        return out.to(torch.float32).cpu().numpy()


class TorchDecoderSession:
    def __init__(self, model: Any):
        self.model = model
        self.spec = decoder_spec(model.config)
        self._encoder_outputs: Any = None
        self._cache: Any = None
        # transformers renamed past_key_values to cache (5.x; the old name warns until its removal).
        params = inspect.signature(type(model).forward).parameters
        self._cache_arg = "cache" if "cache" in params else "past_key_values"

    def reset(self, encoder_states: np.ndarray) -> None:
        self.spec.inputs[1].check(encoder_states, "torch decoder")
        self.reset_batch(encoder_states)

    def reset_batch(self, encoder_states: np.ndarray) -> None:
        """``[B, 1500, d]`` encoder states: ``B`` sequences decoded together (see :meth:`step_batch`)."""
        import torch
        from transformers.modeling_outputs import BaseModelOutput

        for row in encoder_states:
            self.spec.inputs[1].check(row[None], "torch decoder")
        states = torch.from_numpy(encoder_states).to(self.model.device)
        self._encoder_outputs = BaseModelOutput(last_hidden_state=states)
        self._cache = None
        if self._cache_arg == "past_key_values":
            # transformers 4.x (qbcompiler's 4.50.0): start from an empty cache object; given None it warns
            # that tuples are deprecated and hands back tuples. 5.x builds its own from the model config.
            from transformers.cache_utils import DynamicCache, EncoderDecoderCache

            self._cache = EncoderDecoderCache(DynamicCache(), DynamicCache())

    def step(self, tokens: Sequence[int]) -> np.ndarray:
        return self.step_batch([tokens])[0]

    def step_batch(self, tokens: Sequence[Sequence[int]]) -> np.ndarray:
        """Rows of equal length, one per sequence; ``[B, V]`` float32 logits of each row's last position.
        The rows are at the same position, so no padding or attention mask: batched logits equal batch-1
        logits here (torch CPU, tests/test_evaluate.py)."""
        import torch

        if self._encoder_outputs is None:
            raise RuntimeError("TorchDecoderSession.step before reset(encoder_states)")
        with torch.inference_mode():
            ids = torch.tensor([list(t) for t in tokens], dtype=torch.long, device=self.model.device)
            out = self.model(encoder_outputs=self._encoder_outputs, decoder_input_ids=ids, use_cache=True,
                             **{self._cache_arg: self._cache})
        self._cache = getattr(out, self._cache_arg)
        return out.logits[:, -1].to(torch.float32).cpu().numpy()

    def select(self, rows: Sequence[int]) -> None:
        """Keep these batch rows of the key/value cache and the encoder states (finished sequences leave)."""
        import torch
        from transformers.modeling_outputs import BaseModelOutput

        if self._encoder_outputs is None:
            raise RuntimeError("TorchDecoderSession.select before reset(encoder_states)")
        idx = torch.tensor(list(rows), dtype=torch.long, device=self.model.device)
        self._cache.batch_select_indices(idx)
        self._encoder_outputs = BaseModelOutput(last_hidden_state=self._encoder_outputs.last_hidden_state[idx])


class TorchBackend:
    """fp32 HF Whisper as a :class:`whisper_npu.decoding.protocol.Backend`."""
    name = "fp32"

    def __init__(self, model: Any):
        self.model = model.eval()
        self.encoder = TorchEncoder(self.model)
        self.decoder = TorchDecoderSession(self.model)

    def close(self) -> None:
        """Nothing to release."""


def load_torch_backend(model_dir: str | Path, device: str = "cpu") -> tuple[TorchBackend, Any]:
    """(backend, store.Processor) from the reference model store (models/reference), the model on ``device``
    (cpu or cuda:N; float32 either way: it is the reference)."""
    from whisper_npu.model.store import load_hf

    model, processor = load_hf(model_dir)
    return TorchBackend(model.to(device)), processor
