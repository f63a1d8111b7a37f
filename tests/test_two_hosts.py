"""Compile host vs NPU host through the real `dvc` CLI: two clones, one local remote.

* compile host: the STAND-IN compiler (tests/standin_qbcompiler, NOT the real qbcompiler) on PYTHONPATH and
  the real ``qbruntime`` 1.5.0 installed but no NPU (this machine): ``dvc repro`` exits 0, the compiled
  transcription records the compiled system as not run (with the reason), score scores fp32 and sets the budget
  ``not_checked``; the .mxq files and Mobilint's model folder are pushed.
* NPU host: a fresh clone, no compiler, the STAND-IN runtime (tests/standin_qbruntime: the real qbruntime's
  method set, the fp32 reference inside) as ``qbruntime`` with an "NPU": ``dvc pull`` then the documented
  commands transcribe the pulled .mxq files and score them without recompiling, reusing the pulled fp32
  transcripts.

Relies on the compiled transcription's contract for CompiledNotRunnable (``compiled_run`` in metrics, budget
``verdict`` ``not_checked``, never pass).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import make_project, run, tiny_params

pytestmark = pytest.mark.slow

TESTS = Path(__file__).parent
NPU_HOST_COMMANDS = (["dvc", "repro", "--force", "--single-item", "transcribe_compiled"],
                     ["dvc", "repro", "--single-item", "score"])


def _mxq_files(repo: Path) -> dict[str, bytes]:
    return {p.relative_to(repo).as_posix(): p.read_bytes() for p in sorted((repo / "compiled").rglob("*.mxq"))}


def test_compile_host_then_npu_host(tmp_path, tiny_model_dir):
    params = tiny_params(tiny_model_dir / "hf")
    params["compile"]["backend"] = "qbcompiler"
    repo = make_project(tmp_path / "compile-host", params)
    remote = tmp_path / "remote"
    run(["dvc", "remote", "add", "-d", "storage", str(remote)], repo)
    compile_env = {"PYTHONPATH": f"{repo}{os.pathsep}{TESTS / 'standin_qbcompiler'}",
                   "STANDIN_QBCOMPILER_VERSION": "1.3.0"}

    # ---- compile host: compiler, runtime installed, no NPU
    run(["dvc", "repro"], repo, env=compile_env, timeout=2400)
    metrics = json.loads((repo / "metrics" / "evaluate.json").read_text())
    assert metrics["compiled_run"]["status"] == "not_run"
    assert "NPU" in metrics["compiled_run"]["reason"]
    assert metrics["budget"]["verdict"] == "not_checked"
    assert all(e["fp32"] for e in metrics["languages"].values()), "fp32 is still scored"
    assert (repo / "compiled" / "mobilint-whisper" / "config.json").is_file()
    mxq = _mxq_files(repo)
    assert len(mxq) == 4   # encoder + decoder, and their copies in Mobilint's model folder
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "compiled on the build host"], repo)
    run(["dvc", "push"], repo)

    # ---- NPU host: fresh clone, no compiler, the runtime with an NPU
    npu = tmp_path / "npu-host"
    run(["git", "clone", "-q", str(repo), str(npu)], tmp_path)
    npu_env = {"PYTHONPATH": f"{npu}{os.pathsep}{TESTS / 'standin_qbruntime'}", "STANDIN_QBRUNTIME_NPU": "1",
               "STANDIN_QBRUNTIME_REFERENCE": str(npu / "models" / "reference")}
    run(["dvc", "pull"], npu, env=npu_env)
    for command in NPU_HOST_COMMANDS:
        out = run(command, npu, env=npu_env, timeout=2400)
        assert "compile@" not in out.stdout and "transcribe_fp32" not in out.stdout, "nothing but the NPU side reruns"
    assert _mxq_files(npu) == mxq
    metrics = json.loads((npu / "metrics" / "evaluate.json").read_text())
    assert metrics["compiled_run"] == {"status": "run", "reason": None}
    assert metrics["backends"]["compiled"] == "mxq"
    # the stand-in runtime computes the fp32 reference: the compiled transcripts equal fp32's
    for lang, e in metrics["languages"].items():
        assert e["delta"][e["unit"]] == 0, lang
    assert metrics["budget"]["verdict"] != "not_checked" and metrics["budget"]["fail"] == ""
