"""STAND-IN for Mobilint's runtime ``qbruntime``. This is NOT the real runtime and no NPU is involved.

Its classes, method names and parameter names are those of the real ``qbruntime`` 1.5.0 wheel, recorded
in ``../surface.json`` (tests/test_mxq_runtime.py checks that file against the installed real wheel, so an
API change there fails a test). Methods the pipeline does not need raise NotImplementedError; the ones it
needs are simulated:

* ``Accelerator`` / ``get_available_device_numbers``: an NPU (device 0) "exists" only when
  ``STANDIN_QBRUNTIME_NPU=1``; otherwise ``Accelerator()`` raises ``QbRuntimeError`` as the real one does
  ("Acc_DeviceNotFound occurred." on a machine without an NPU). ``STANDIN_QBRUNTIME_NPU=unopenable``: device 0 is
  listed but cannot be opened, ``QbRuntimeError`` "Driver_NotInitialized occurred." (what the real 1.5.0 raises
  for ``Accelerator("aries-rb", 0)`` when the driver is not there; the real class is ``qbruntime.QbRuntimeError``,
  a RuntimeError, messages ``"<Code> occurred.\nPlease visit <docs> for more details."``);
* ``Model(path, config)``: ``path`` must be an .mxq written by the stand-in compiler (tests/standin_qbcompiler:
  JSON naming the component and the inference scheme it was compiled with); ``launch`` refuses a core mode
  the scheme does not hold (an ``all`` MXQ needs an explicit mode, as the real runtime);
* ``infer``: the fp32 reference from ``STANDIN_QBRUNTIME_REFERENCE`` (a model store: models/reference) in the
  NPU layout (whisper_npu/backends/onnx_export.py). The decoder keeps a KV "cache" of the fed embeddings:
  ``cache_size`` = tokens already cached (0 starts a new sequence), as qbruntime documents it.
"""
from __future__ import annotations

import enum
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

_SURFACE = json.loads((Path(__file__).parent.parent / "surface.json").read_text())
__version__ = _SURFACE["version"]
STANDIN = True


class QbRuntimeError(RuntimeError):
    pass


class Cluster(enum.Enum):
    Cluster0 = 1 << 16
    Cluster1 = 1 << 17
    Error = 0


class Core(enum.Enum):
    Core0 = 1
    Core1 = 2
    Core2 = 4
    Core3 = 8
    All = 15
    GlobalCore = 16
    Error = 0


class CoreId:
    def __init__(self, cluster: Cluster, core: Core):
        self.cluster, self.core = cluster, core


_DOCS = "\nPlease visit https://docs.mobilint.com/v1.5/doxygen/html_en/group__CPPAPI.html for more details."


def _npu() -> str:
    return os.environ.get("STANDIN_QBRUNTIME_NPU", "")


def get_available_device_numbers(device_name: str = "auto") -> list:
    return [0] if _npu() in ("1", "unopenable") else []


class Accelerator:
    def __init__(self, device_name="auto", dev_no=0):
        if not isinstance(dev_no, int) or not isinstance(device_name, str):
            raise TypeError(f"stand-in qbruntime: Accelerator(device_name={device_name!r}, dev_no={dev_no!r})")
        if _npu() == "unopenable" and dev_no == 0:
            raise QbRuntimeError("Driver_NotInitialized occurred." + _DOCS)
        if _npu() != "1" or dev_no != 0:
            raise QbRuntimeError("Acc_DeviceNotFound occurred." + _DOCS)
        self.dev_no = dev_no


class ModelConfig:
    def __init__(self, num_cores=None):
        self.mode = "auto"

    def set_single_core_mode(self, num_cores=None, core_ids=None):
        if not core_ids or not all(isinstance(c, CoreId) for c in core_ids):
            raise TypeError("stand-in qbruntime: set_single_core_mode needs core_ids=[CoreId, ...]")
        self.mode = "single"
        return True

    def set_global4_core_mode(self, clusters=(Cluster.Cluster0, Cluster.Cluster1)):
        self.mode = "global4"
        return True

    def set_global8_core_mode(self):
        self.mode = "global8"
        return True

    def set_multi_core_mode(self, clusters=(Cluster.Cluster0, Cluster.Cluster1)):
        self.mode = "multi"
        return True


class BufferInfo:
    def __init__(self, max_cache_size: int = 0):
        self.max_cache_size = max_cache_size


# the core modes an MXQ compiled with a scheme holds (docs: an `all` MXQ holds every mode, no default)
_MODES = {"single": {"single", "auto"}, "multi": {"multi", "auto"}, "global": {"global4", "auto"},
          "global4": {"global4", "auto"}, "global8": {"global8", "auto"},
          "all": {"single", "multi", "global4", "global8"}}
_REFERENCE: dict[str, Any] = {}


def _reference(component: str) -> Any:
    root = os.environ.get("STANDIN_QBRUNTIME_REFERENCE")
    if not root:
        raise QbRuntimeError("stand-in qbruntime: set STANDIN_QBRUNTIME_REFERENCE to the reference model store")
    if root not in _REFERENCE:
        from whisper_npu.model.store import load_hf

        _REFERENCE[root] = load_hf(Path(root))[0]
    from whisper_npu.compilers.onnxruntime import export as onnx_export

    return onnx_export.npu_module(_REFERENCE[root], component)


class Model:
    def __init__(self, path, model_config=None):
        try:
            self._meta = json.loads(Path(path).read_text())
        except (OSError, ValueError):
            raise QbRuntimeError(f"stand-in qbruntime: {path} is not a stand-in .mxq") from None
        self._config = model_config or ModelConfig()
        self._module = None
        self._cache: np.ndarray | None = None

    def launch(self, acc):
        if not isinstance(acc, Accelerator):
            raise TypeError("stand-in qbruntime: launch(acc) needs an Accelerator")
        scheme = self._meta.get("inference_scheme") or "single"
        if self._config.mode not in _MODES[scheme]:
            raise QbRuntimeError(f"stand-in qbruntime: MXQ compiled with inference_scheme={scheme!r} cannot "
                                 f"run in core mode {self._config.mode!r}")
        self._module = _reference(self._meta["component"])

    def dispose(self):
        self._module = None

    def get_input_buffer_info(self):
        n = int(self._module.decoder.config.max_target_positions) if self._meta["component"] == "decoder" else 0
        return [BufferInfo(n), BufferInfo(0)] if n else [BufferInfo(0)]

    def infer(self, inputs, outputs=None, cache_size=0, params=None):
        import torch

        if self._module is None:
            raise QbRuntimeError("stand-in qbruntime: infer before launch")
        arrays = [np.asarray(a, dtype=np.float32) for a in (inputs if isinstance(inputs, list) else [inputs])]
        with torch.inference_mode():
            if self._meta["component"] == "encoder":
                return [self._module(torch.from_numpy(arrays[0])).numpy()]
            new = arrays[0].reshape(1, -1, arrays[0].shape[-1])
            if cache_size == 0 or self._cache is None:
                self._cache = new
            else:
                if cache_size > self._cache.shape[1]:
                    raise QbRuntimeError(f"stand-in qbruntime: cache_size={cache_size} > cached tokens")
                self._cache = np.concatenate([self._cache[:, :cache_size], new], axis=1)
            states = torch.from_numpy(arrays[1].reshape(1, -1, arrays[1].shape[-1]))
            logits = self._module(torch.from_numpy(self._cache), states).numpy()
        return [logits[:, None, -new.shape[1]:]]   # (batch, 1, seq, vocab), as the real runtime returns


def _not_simulated(cls_name: str, name: str) -> Any:
    def method(self, *args, **kwargs):
        raise NotImplementedError(f"stand-in qbruntime: {cls_name}.{name} is not simulated")
    method.__name__ = name
    return method


# Every other public member of the real classes exists too, so the method SET is the real one.
for _cls in (Accelerator, Model, ModelConfig, BufferInfo, CoreId):
    for _name, _params in _SURFACE["classes"].get(_cls.__name__, {}).items():
        if not _name.startswith("_") and not hasattr(_cls, _name):
            setattr(_cls, _name, _not_simulated(_cls.__name__, _name) if _params is not None else None)
