"""What a compile output folder holds, as both sides read it: the compile stage writes it (whisper_npu/compilers/),
the runtimes load it (whisper_npu/runtimes/). A leaf: it imports nothing of either side.

``compiled/<component>/`` holds the backend's artifacts (``provenance.json`` names the one that runs as
``artifacts.model``), the decoder's host-side tables (token and position embeddings: the runtime adds them on the
CPU, they are not inside the compiled decoder) and ``provenance.json`` (backend, tool versions, options and what
they resolved to, calibration set hash when the compiler read it, model, specs).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from whisper_npu.core.errors import StageError
from whisper_npu.core.files import read_json

PROVENANCE = "provenance.json"
EMBED_TOKENS = "embed_tokens.npy"
EMBED_POSITIONS = "embed_positions.npy"


class CompiledNotRunnable(StageError):
    """The compiled artifacts are valid but cannot run on this host (e.g. .mxq files without Mobilint's runtime or
    without an NPU device): the compiled transcription records the reason instead of failing (unless told to).
    ``device`` says where it was asked to run (runtime, target, placement), for the record."""

    def __init__(self, message: str, device: dict | None = None):
        super().__init__(message)
        self.device = device


@dataclass(frozen=True)
class Built:
    """What a compiler's ``build`` returns: artifact file names by kind (``model`` is the one to run), the
    resolved options for provenance, the numerics metric, and the calibration entries held out for it."""
    artifacts: dict[str, str]
    resolved: dict[str, Any]
    numerics: dict[str, Any]
    held_out: list[int] = field(default_factory=list)


def read_provenance(compiled_dir: str | Path) -> dict[str, Any]:
    """The provenance.json the compile stage wrote beside a component's artifacts."""
    prov = Path(compiled_dir) / PROVENANCE
    if not prov.is_file():
        raise StageError(f"{prov}: missing; run the compile stage (`dvc repro compile@{Path(compiled_dir).name}`)")
    return read_json(prov)


def artifact(compiled_dir: str | Path) -> Path:
    """The model file a compile output folder holds (the one that runs), named by its provenance.json."""
    return Path(compiled_dir) / read_provenance(compiled_dir)["artifacts"]["model"]


def compiled_backend_name(enc_dir: str | Path, dec_dir: str | Path) -> str:
    """The compile stage's backend recorded in provenance.json (both components must agree)."""
    names = [read_provenance(d).get("backend") for d in (enc_dir, dec_dir)]
    if names[0] != names[1]:
        raise StageError(f"{enc_dir} and {dec_dir}: compiled with different backends ({names[0]}, {names[1]}); "
                         "recompile both with one compile.backend")
    return str(names[0])


def ort_session(path: str | Path | bytes, threads: int | None = None) -> Any:
    """An ONNX Runtime CPU session over an ONNX artifact (a file or a serialized model), intra-op threads = every
    core unless ``threads`` or OMP_NUM_THREADS says otherwise (the variable torch's threads follow: processes that
    share the cores, such as parallel test workers, set it to 1 so that no thread pool spins against another).
    Both sides open ONNX artifacts with it (the compiler's numerics check, the runtime)."""
    import os

    import onnxruntime as ort

    omp = os.environ.get("OMP_NUM_THREADS", "")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or (int(omp) if omp.isdigit() and int(omp) > 0 else os.cpu_count()) or 1
    opts.log_severity_level = 3
    return ort.InferenceSession(path if isinstance(path, bytes) else str(path), sess_options=opts,
                                providers=["CPUExecutionProvider"])
