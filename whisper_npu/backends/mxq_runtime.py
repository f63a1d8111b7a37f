"""The Mobilint NPU backend: compiled ``.mxq`` encoder and decoder driven through Mobilint's runtime.

NOT TESTED HERE. No Mobilint runtime (``qbruntime``, formerly ``maccel``) and no ARIES/REGULUS NPU exist on
this machine; the code follows the calls documented in shared/notes/mobilint-qbcompiler.md §4 (Mobilint's
tutorial ``runtime/transformers/stt/mblt-whisper.py`` and the ``qbruntime`` examples), and the tests only
check that it refuses clearly when the runtime is absent. What it does:

* ``rt.Accelerator(dev_no)``, ``rt.ModelConfig()`` with the core mode matching the compile's inference
  scheme (tutorial: encoder ``global4`` on Cluster1, decoder ``single`` on Cluster0/Core3),
  ``rt.Model(path, mc)``, ``model.launch(acc)``, ``model.dispose()``;
* encoder: ``infer([features [1, 3000, 80]])[0]`` reshaped to ``[1, 1500, d]``;
* decoder: token + position embeddings computed on the CPU from ``embed_tokens.npy`` /
  ``embed_positions.npy`` (the tables are not inside the MXQ), passed as ``[1, 1, seq, d]`` together
  with the encoder states; ``infer([hidden, encoder_states], cache_size=past)`` where ``past`` is the
  number of tokens already in the NPU's KV cache; ``reset_cache_memory()`` starts a new sequence;
  output ``[0]`` holds the logits of every fed position, the last row is returned.
"""
from __future__ import annotations

import importlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

RUNTIME_MODULES = ("qbruntime", "maccel")   # new name first; maccel is the 0.x name of the same API


class RuntimeUnavailable(RuntimeError):
    """Mobilint's runtime is not installed (or no NPU): .mxq models cannot run on this machine."""


def import_runtime() -> Any:
    """The first importable Mobilint runtime module, or RuntimeUnavailable saying what to install."""
    errors = []
    for name in RUNTIME_MODULES:
        try:
            return importlib.import_module(name)
        except ImportError as e:
            errors.append(f"{name}: {e}")
    raise RuntimeUnavailable(
        "compiled .mxq models need Mobilint's runtime (pip package mobilint-qb-runtime -> `import qbruntime`, "
        "or the older maccel) and an ARIES/REGULUS NPU; neither import works here ("
        + "; ".join(errors) + "). Evaluate .mxq files on the NPU host, or compile with "
        "compile.backend=onnxruntime to evaluate on the CPU")


def model_config(rt: Any, scheme: str, component: str) -> Any:
    """``rt.ModelConfig`` with the core mode for a compile-time inference scheme.

    Mirrors the tutorial's v0.12 runtime (encoder global4 on Cluster1, decoder single-core on
    Cluster0/Core3, so both stay resident); ``all`` (qbcompiler >= 1.x) runs single-core, as Mobilint's
    prepare_model.py (target cores "0:0").
    """
    mc = rt.ModelConfig()
    core = rt.Core.Core3 if component == "decoder" else rt.Core.Core0
    if scheme in ("single", "all"):
        mc.set_single_core_mode(None, [rt.CoreId(rt.Cluster.Cluster0, core)])
    elif scheme == "multi":
        mc.set_multi_core_mode([rt.Cluster.Cluster0, rt.Cluster.Cluster1])
    elif scheme in ("global", "global4"):
        mc.set_global4_core_mode([rt.Cluster.Cluster1])
    elif scheme == "global8":
        mc.set_global8_core_mode()
    else:
        raise ValueError(f"inference scheme {scheme!r}: no core mode known for it")
    return mc


def _launch(rt: Any, acc: Any, path: Path, scheme: str, component: str) -> Any:
    model = rt.Model(str(path), model_config(rt, scheme, component))
    model.launch(acc)
    return model


class MxqEncoder:
    def __init__(self, model: Any, n_positions: int, d_model: int):
        self.model, self.n_positions, self.d_model = model, n_positions, d_model

    def __call__(self, features: np.ndarray) -> np.ndarray:
        out = np.asarray(self.model.infer([np.ascontiguousarray(features, dtype=np.float32)])[0], dtype=np.float32)
        if out.size != self.n_positions * self.d_model:
            raise RuntimeError(f"encoder .mxq returned shape {list(out.shape)}, expected "
                               f"{self.n_positions * self.d_model} values ([1, {self.n_positions}, {self.d_model}])")
        return out.reshape(1, self.n_positions, self.d_model)


class MxqDecoderSession:
    def __init__(self, model: Any, embed_tokens: np.ndarray, embed_positions: np.ndarray, embed_scale: float = 1.0):
        self.model = model
        self.embed_tokens = np.asarray(embed_tokens, dtype=np.float32)
        self.embed_positions = np.asarray(embed_positions, dtype=np.float32)
        self.embed_scale = float(embed_scale)
        self.vocab = self.embed_tokens.shape[0]
        self.max_positions = self.embed_positions.shape[0]
        self._states: np.ndarray | None = None
        self._past = 0
        try:
            self.max_cache = int(model.get_input_buffer_info()[0].max_cache_size)
        except (AttributeError, IndexError, TypeError):
            self.max_cache = self.max_positions

    def reset(self, encoder_states: np.ndarray) -> None:
        self.model.reset_cache_memory()
        self._states = np.ascontiguousarray(encoder_states, dtype=np.float32)
        self._past = 0

    def embed(self, tokens: Sequence[int], past: int) -> np.ndarray:
        """``[1, 1, seq, d]`` token + position embeddings, as Mobilint's runtime computes them on the CPU."""
        ids = np.asarray(tokens, dtype=np.int64)
        hidden = self.embed_tokens[ids] * self.embed_scale + self.embed_positions[past:past + len(ids)]
        return hidden[None, None].astype(np.float32)

    def step(self, tokens: Sequence[int]) -> np.ndarray:
        if self._states is None:
            raise RuntimeError("MxqDecoderSession.step before reset(encoder_states)")
        end = self._past + len(tokens)
        if end > min(self.max_positions, self.max_cache):
            raise RuntimeError(f"decoder .mxq: {end} tokens exceed the cache ({self.max_cache}) or position "
                               f"table ({self.max_positions})")
        logits = self.model.infer([self.embed(tokens, self._past), self._states], cache_size=self._past)[0]
        self._past = end
        return np.asarray(logits, dtype=np.float32).reshape(-1, self.vocab)[-1]


class MxqBackend:
    """Compiled .mxq encoder + decoder on a Mobilint NPU, as a :class:`whisper_npu.runtime.Backend`."""
    name = "mxq"

    def __init__(self, encoder_mxq: Path, decoder_mxq: Path, embed_tokens: np.ndarray, embed_positions: np.ndarray,
                 n_positions: int, d_model: int, encoder_scheme: str = "global4", decoder_scheme: str = "single",
                 dev_no: int = 0, embed_scale: float = 1.0):
        rt = import_runtime()
        self._acc = rt.Accelerator(dev_no)
        self._models = [_launch(rt, self._acc, Path(encoder_mxq), encoder_scheme, "encoder"),
                        _launch(rt, self._acc, Path(decoder_mxq), decoder_scheme, "decoder")]
        self.encoder = MxqEncoder(self._models[0], n_positions, d_model)
        self.decoder = MxqDecoderSession(self._models[1], embed_tokens, embed_positions, embed_scale)

    def close(self) -> None:
        for m in self._models:
            m.dispose()
        self._models = []


def _one(folder: Path, pattern: str) -> Path:
    found = sorted(folder.glob(pattern))
    if len(found) != 1:
        raise FileNotFoundError(f"{folder}: expected exactly one {pattern}, found {len(found)}; rerun the compile stage")
    return found[0]


def load_mxq_backend(enc_dir: str | Path, dec_dir: str | Path, model_config_: Any,
                     encoder_scheme: str = "global4", decoder_scheme: str = "single") -> MxqBackend:
    """The NPU backend from compiled/encoder and compiled/decoder (one .mxq each + the embedding tables)."""
    import_runtime()  # refuse before touching files when the runtime is absent
    enc_dir, dec_dir = Path(enc_dir), Path(dec_dir)
    scale = float(np.sqrt(model_config_.d_model)) if getattr(model_config_, "scale_embedding", False) else 1.0
    return MxqBackend(_one(enc_dir, "*.mxq"), _one(dec_dir, "*.mxq"),
                      np.load(dec_dir / "embed_tokens.npy"), np.load(dec_dir / "embed_positions.npy"),
                      n_positions=int(model_config_.max_source_positions), d_model=int(model_config_.d_model),
                      encoder_scheme=encoder_scheme, decoder_scheme=decoder_scheme, embed_scale=scale)
