"""The Mobilint NPU backend: compiled ``.mxq`` encoder and decoder driven through Mobilint's runtime.

Runs with ``qbruntime`` (PyPI ``mobilint-qb-runtime``, checked against 1.5.0) and its 0.x name ``maccel``
(checked against 0.30.1). Both wheels import on a machine without an NPU; tests/test_mxq_runtime.py checks
every class, method and keyword used here against the installed packages and drives this runner end to
end against a fake whose method set is read from the real ``qbruntime.Model``. NOT run here against an
NPU (none exists on this project's machines). What it does (docs/mobilint.md):

* placement from params ``npu.encoder`` / ``npu.decoder`` (device number, core mode, cores), checked against the
  target and the inference scheme recorded in each component's provenance (whisper_npu/npu.py: an ``all`` MXQ
  holds every core mode, any other scheme one); a mismatch is an error naming the key;
* ``rt.Accelerator(dev_no=N)`` per device used (keyword: qbruntime's first parameter is ``device_name``, maccel's
  is ``dev_no``); no runtime, no NPU device ``N``, a device that cannot be opened (``QbRuntimeError``, e.g.
  ``Driver_NotInitialized`` from a missing or mismatched driver) or a runtime whose API differs from the one
  checked (TypeError / AttributeError) -> :class:`RuntimeUnavailable` with the runtime's own message;
* ``rt.ModelConfig()`` with the placement's core mode (``set_single_core_mode(core_ids=[CoreId(...)])``,
  ``set_multi_core_mode`` / ``set_global4_core_mode`` with its clusters, ``set_global8_core_mode()``),
  ``rt.Model(path, mc)``, ``launch(acc)``, ``dispose()``;
* encoder: ``infer([features [1, 3000, 80]])[0]`` reshaped to ``[1, 1500, d]``;
* decoder: token + position embeddings computed on the CPU (the tables are not inside the MXQ) passed as
  ``[1, 1, seq, d]`` with the encoder states; ``infer([hidden, states], cache_size=past)`` where ``past``
  is the number of tokens already in the NPU's KV cache. A new sequence starts with ``cache_size=0``
  (qbruntime 1.x has no ``reset_cache_memory``; Mobilint's own code dropped it, mblt-model-zoo
  ``a31f272``). Output ``[0]`` holds the logits of the fed positions (or only the last one for a
  ``last_token_only`` build); the last row is returned.
"""
from __future__ import annotations

import importlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from whisper_npu.artifacts import EMBED_POSITIONS, EMBED_TOKENS, PROVENANCE, CompiledNotRunnable, read_provenance
from whisper_npu.core.errors import StageError
from whisper_npu.npu import Placement
from whisper_npu.specs import embed

if TYPE_CHECKING:
    from whisper_npu.params.npu import NpuParams

log = logging.getLogger(__name__)

RUNTIME_MODULES = ("qbruntime", "maccel")   # new name first; maccel is the 0.x name of the same API


class RuntimeUnavailable(RuntimeError):
    """Mobilint's runtime is not installed, or no NPU device is present: .mxq models cannot run here."""


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


def runtime_name(rt: Any) -> str:
    return f"{rt.__name__} {getattr(rt, '__version__', '')}".strip()


def open_accelerator(rt: Any, dev_no: int = 0) -> Any:
    """``rt.Accelerator`` for device ``dev_no``; RuntimeUnavailable when the runtime finds no such NPU or cannot
    open it."""
    devices = getattr(rt, "get_available_device_numbers", None)   # qbruntime only
    if devices is not None and dev_no not in list(devices()):
        raise RuntimeUnavailable(f"{runtime_name(rt)} is installed but finds no NPU device {dev_no} "
                                 f"(available: {list(devices()) or 'none'}); run on the NPU host")
    try:
        return rt.Accelerator(dev_no=dev_no)
    except RuntimeError as e:   # QbRuntimeError / MAccelError both derive from RuntimeError
        raise RuntimeUnavailable(f"{runtime_name(rt)} is installed but cannot open NPU device {dev_no}: "
                                 f"{' '.join(str(e).split())}") from None


def model_config(rt: Any, where: Placement) -> Any:
    """``rt.ModelConfig`` in the placement's core mode on its cores (whisper_npu/npu.py)."""
    mc = rt.ModelConfig()
    clusters = [getattr(rt.Cluster, f"Cluster{c}") for c in where.clusters]
    if where.core_mode == "single":
        cores = [rt.CoreId(getattr(rt.Cluster, f"Cluster{c}"), getattr(rt.Core, f"Core{k}"))
                 for c, k in where.cores]
        mc.set_single_core_mode(core_ids=cores)
    elif where.core_mode == "multi":
        mc.set_multi_core_mode(clusters)
    elif where.core_mode == "global4":
        mc.set_global4_core_mode(clusters)
    elif where.core_mode == "global8":
        mc.set_global8_core_mode()
    return mc


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
        info = model.get_input_buffer_info()
        cache = int(info[0].max_cache_size) if info else 0
        self.max_cache = cache if cache > 0 else self.max_positions

    def reset(self, encoder_states: np.ndarray) -> None:
        # No runtime call: the next infer passes cache_size=0, which starts a new sequence on the NPU.
        self._states = np.ascontiguousarray(encoder_states, dtype=np.float32)
        self._past = 0

    def embed(self, tokens: Sequence[int], past: int) -> np.ndarray:
        """``[1, 1, seq, d]`` token + position embeddings, as Mobilint's runtime computes them on the CPU."""
        return embed(self.embed_tokens, self.embed_positions, tokens, past, self.embed_scale)[None]

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
    """Compiled .mxq encoder + decoder on a Mobilint NPU, as a :class:`whisper_npu.runtime.Backend`. ``device``
    records the runtime, the target and each component's placement."""
    name = "mxq"

    def __init__(self, encoder_mxq: Path, decoder_mxq: Path, embed_tokens: np.ndarray, embed_positions: np.ndarray,
                 n_positions: int, d_model: int, encoder: Placement, decoder: Placement, embed_scale: float = 1.0,
                 target_device: str = "aries-rb"):
        rt = import_runtime()
        self.device = {"runtime": runtime_name(rt), "target_device": target_device, "encoder": encoder.record(),
                       "decoder": decoder.record()}
        self._models: list[Any] = []
        try:
            accelerators = {n: open_accelerator(rt, n) for n in sorted({encoder.dev_no, decoder.dev_no})}
            for path, where in ((encoder_mxq, encoder), (decoder_mxq, decoder)):
                model = rt.Model(str(path), model_config(rt, where))
                model.launch(accelerators[where.dev_no])
                self._models.append(model)
        except (TypeError, AttributeError) as e:   # a runtime whose API is not the one checked
            self.close()
            raise RuntimeUnavailable(f"{runtime_name(rt)}: its API differs from the one this runner was checked "
                                     f"against (qbruntime 1.5.0, maccel 0.30.1): {type(e).__name__}: {e}") from None
        except BaseException:
            self.close()
            raise
        self.encoder = MxqEncoder(self._models[0], n_positions, d_model)
        self.decoder = MxqDecoderSession(self._models[1], embed_tokens, embed_positions, embed_scale)

    def close(self) -> None:
        for m in self._models:
            m.dispose()
        self._models = []


def _one(folder: Path, pattern: str) -> Path:
    found = sorted(folder.glob(pattern))
    if len(found) != 1:
        raise FileNotFoundError(f"{folder}: expected exactly one {pattern}, found {len(found)}; "
                                "rerun the compile stage")
    return found[0]


def load_mxq_backend(enc_dir: str | Path, dec_dir: str | Path, model_config_: Any, encoder: Placement,
                     decoder: Placement, target_device: str = "aries-rb") -> MxqBackend:
    """The NPU backend from compiled/encoder and compiled/decoder (one .mxq each + the embedding tables)."""
    import_runtime()  # refuse before touching files when the runtime is absent
    enc_dir, dec_dir = Path(enc_dir), Path(dec_dir)
    scale = float(np.sqrt(model_config_.d_model)) if getattr(model_config_, "scale_embedding", False) else 1.0
    return MxqBackend(_one(enc_dir, "*.mxq"), _one(dec_dir, "*.mxq"),
                      np.load(dec_dir / EMBED_TOKENS), np.load(dec_dir / EMBED_POSITIONS),
                      n_positions=int(model_config_.max_source_positions), d_model=int(model_config_.d_model),
                      encoder=encoder, decoder=decoder, embed_scale=scale, target_device=target_device)


# ------------------------------------------------------------------------------------------- the registry's entry

def mxq_call(compiled_dir: str | Path) -> dict:
    """The ``mxq_compile`` keywords the compile stage recorded (provenance ``resolved.calls.mxq_compile``)."""
    prov = read_provenance(compiled_dir)
    calls = prov.get("resolved", {}).get("calls")
    if not isinstance(calls, dict) or not isinstance(calls.get("mxq_compile"), dict):
        raise StageError(f"{Path(compiled_dir) / PROVENANCE}: no resolved.calls.mxq_compile (written by an "
                         f"older compile stage?); rerun `dvc repro compile@{Path(compiled_dir).name}`")
    return calls["mxq_compile"]


def compiled_scheme(compiled_dir: str | Path) -> str:
    """The inference scheme the compile stage passed to ``mxq_compile``; ``single`` when it passed none
    (qbcompiler's documented default; the 0.11 decoder call)."""
    return str(mxq_call(compiled_dir).get("inference_scheme") or "single")


def compiled_target(compiled_dir: str | Path) -> str:
    """The target device passed to ``mxq_compile``; ``aries-rb`` for compilers without the argument."""
    return str(mxq_call(compiled_dir).get("target_device") or "aries-rb")


def placements(enc_dir: Path, dec_dir: Path, npu: NpuParams) -> dict[str, Placement]:
    """``npu.encoder`` / ``npu.decoder`` checked against the target and scheme each component was compiled for;
    StageError naming the key and the folder when the MXQ cannot run there."""
    out = {}
    for component, d in (("encoder", enc_dir), ("decoder", dec_dir)):
        try:
            out[component] = npu.placement(component, compiled_target(d), compiled_scheme(d))
        except ValueError as e:
            raise StageError(f"{d}: {e}") from None
    return out


def load(enc_dir: Path, dec_dir: Path, model_config: Any, npu: NpuParams) -> Any:
    """The two .mxq files on the NPU through Mobilint's runtime, placed as params ``npu`` says; CompiledNotRunnable
    (with the placement asked for) when this host cannot run them."""
    where, target = placements(enc_dir, dec_dir, npu), compiled_target(dec_dir)
    device = {"runtime": None, "target_device": target, **{c: p.record() for c, p in where.items()}}
    try:
        device["runtime"] = runtime_name(import_runtime())   # no runtime: not runnable here, whatever the artifacts say
        return load_mxq_backend(enc_dir, dec_dir, model_config, where["encoder"], where["decoder"], target)
    except RuntimeUnavailable as e:
        raise CompiledNotRunnable(f"{dec_dir}: {e}", device) from None
