"""The toolchain stage's record of what shapes the compile (build/toolchain.json) on a host that does not compile: an
NPU host keeps the pulled qbcompiler record, so `dvc repro` there never recompiles or removes compiled/ (the whole
flow through the real `dvc` CLI: tests/test_two_hosts.py). No qbcompiler is installed here."""
from __future__ import annotations

import json

import pytest
import yaml
from conftest import params_with

from stages import toolchain
from whisper_npu.core.errors import StageError
from whisper_npu.params.full import parse_params

QB_RECORD = {"backend": "qbcompiler", "compiler": {"module": "qbcompiler", "version": "1.3.0", "api": "1.3"},
             "interpreter": {"command": "this", "python": "3.11.7", "torch": "2.7.1", "transformers": "4.57.1",
                             "cuda": False}}


def _params(backend: str, python: str = ""):
    return parse_params(params_with({"compile": {"backend": backend, "qbcompiler": {"python": python}}}))


def _compiled(tmp_path, backend: str = "qbcompiler"):
    for component in ("encoder", "decoder"):
        (tmp_path / "compiled" / component).mkdir(parents=True)
        (tmp_path / "compiled" / component / "provenance.json").write_text(json.dumps({"backend": backend}))
    return tmp_path / "compiled"


@pytest.mark.parametrize("backend", ["qbcompiler", "auto"])
@pytest.mark.parametrize("python", ["", "/nonexistent/qbcompiler-venv/bin/python"])
def test_npu_host_keeps_the_pulled_record(tmp_path, backend, python):
    """No compiler in compile.qbcompiler.python (or that interpreter cannot start here) and compiled/ holds qbcompiler
    outputs: the record is kept as it is."""
    assert toolchain.compile_record(_params(backend, python), QB_RECORD, _compiled(tmp_path)) is QB_RECORD


def test_nothing_to_keep(tmp_path):
    """No qbcompiler outputs to transcribe: compile.backend qbcompiler fails naming the key, auto is onnxruntime."""
    empty = tmp_path / "compiled"
    with pytest.raises(StageError, match=r"compile.qbcompiler.python = '' .* has no qbcompiler and .* holds no .mxq"):
        toolchain.compile_record(_params("qbcompiler"), QB_RECORD, empty)
    with pytest.raises(StageError, match=r"compile.qbcompiler.python = '/nonexistent/python': cannot start"):
        toolchain.compile_record(_params("qbcompiler", "/nonexistent/python"), None, _compiled(tmp_path))
    assert toolchain.compile_record(_params("auto"), QB_RECORD, _compiled(tmp_path / "o", "onnxruntime"))["backend"] \
        == "onnxruntime"


def test_main_leaves_the_kept_record_untouched(tmp_path):
    """The file is not rewritten (same bytes, same hash for DVC); build/runtime.json says what runs here."""
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(params_with({"compile": {"backend": "qbcompiler"}})))
    out = tmp_path / "build" / "toolchain.json"
    out.parent.mkdir()
    out.write_text(json.dumps(QB_RECORD, indent=1))
    before = out.read_bytes()
    toolchain.main(["--params", str(params), "--out", str(out), "--runtime", str(tmp_path / "build" / "runtime.json"),
                    "--compiled", str(_compiled(tmp_path))])
    assert out.read_bytes() == before
    runtime = json.loads((tmp_path / "build" / "runtime.json").read_text())
    assert runtime["mobilint-qb-runtime"] == "1.5.0" and runtime["npu_devices"] == []
