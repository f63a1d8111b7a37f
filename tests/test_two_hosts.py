"""Compile host vs NPU host through the real `dvc` CLI: two clones, one local remote.

* compile host (a copy of the tests' tiny pipeline, switched to the qbcompiler backend): the STAND-IN compiler
  (tests/standin_qbcompiler, NOT the real qbcompiler) and the real qbruntime 1.5.0 without an NPU (this machine):
  `dvc repro` exits 0 with the compiled system recorded as not run; push.
* NPU host: a fresh clone, `dvc pull`, no compiler, the STAND-IN runtime (tests/standin_qbruntime: the real
  qbruntime's method set, the fp32 reference inside) as `qbruntime` with an "NPU": a plain `dvc repro` exits 0,
  reruns only the toolchain check, the compiled transcription and score, leaves compiled/ byte-identical, and the
  compiled transcripts come from the pulled .mxq files through the runtime (the stand-in computes fp32 inside, so
  they equal the pulled fp32 transcripts).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml
from conftest import copy_project, run

from whisper_npu.core.files import sha256_tree

pytestmark = pytest.mark.slow

TESTS = Path(__file__).parent


def test_plain_dvc_repro_on_the_npu_host_runs_the_pulled_mxq_files(tmp_path, tiny_pipeline):
    repo = copy_project(tiny_pipeline, tmp_path / "compile-host")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["compile"]["backend"] = "qbcompiler"
    (repo / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True, sort_keys=False))
    run(["dvc", "remote", "add", "-d", "storage", str(tmp_path / "remote")], repo)
    run(["dvc", "repro"], repo, env={"PYTHONPATH": f"{repo}{os.pathsep}{TESTS / 'standin_qbcompiler'}",
                                     "STANDIN_QBCOMPILER_VERSION": "1.3.0"}, timeout=2400)
    assert json.loads((repo / "metrics" / "evaluate.json").read_text())["compiled_run"]["status"] == "not_run"
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "compiled on the build host"], repo)
    run(["dvc", "push"], repo)

    npu = tmp_path / "npu-host"
    run(["git", "clone", "-q", str(repo), str(npu)], tmp_path)
    env = {"PYTHONPATH": f"{npu}{os.pathsep}{TESTS / 'standin_qbruntime'}", "STANDIN_QBRUNTIME_NPU": "1",
           "STANDIN_QBRUNTIME_REFERENCE": str(npu / "models" / "reference")}
    run(["dvc", "pull"], npu, env=env)
    compiled = sha256_tree(npu / "compiled")
    out = run(["dvc", "repro"], npu, env=env, timeout=2400).stdout
    ran = {line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage '")}
    assert ran == {"toolchain", "transcribe_compiled", "score"}, out
    assert sha256_tree(npu / "compiled") == compiled
    metrics = json.loads((npu / "metrics" / "evaluate.json").read_text())
    assert metrics["compiled_run"] == {"status": "run", "reason": None}
    assert metrics["backends"]["compiled"] == "mxq"
    assert metrics["compiled_device"] == {"runtime": "qbruntime v1.5.0", "target_device": "aries-rb",
                                          "encoder": {"dev_no": 0, "core_mode": "single", "cores": [[0, 0]]},
                                          "decoder": {"dev_no": 0, "core_mode": "single", "cores": [[1, 0]]}}
    for lang, e in metrics["languages"].items():
        assert e["delta"][e["unit"]] == 0, lang
