"""With `cache.type: symlink` (or hardlink), the compiler still gets the calibration files by their own names.

DVC then links every output file into its cache (`.dvc/cache/files/md5/ab/cdef...`, no extension). The compile
stage makes the calibration lists absolute for the compiler; following the links there would hand it cache
objects instead of the `.npy` files its documented list format names. Run through the real `dvc` CLI up to
both compile stages, with the STAND-IN compiler (tests/standin_qbcompiler: the real qbcompiler cannot be
installed here) in the SDK's own environment (conftest ``sdk_python``: transformers 4.50.0), which logs the
calibration entries it was given.
"""
from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
from conftest import make_project, run, tiny_params

STANDIN = Path(__file__).parent / "standin_qbcompiler"


@pytest.mark.slow
@pytest.mark.parametrize("cache_type", ["symlink", "hardlink"])
def test_compiler_gets_npy_paths_with_linked_cache(cache_type, tmp_path, tiny_model_dir, sdk_python) -> None:
    log = tmp_path / "standin_calls.jsonl"
    params = tiny_params(tiny_model_dir / "hf", languages=("es_419",))
    params["compile"]["backend"] = "qbcompiler"
    params["compile"]["qbcompiler"]["python"] = shlex.join([
        "env", f"PYTHONPATH={STANDIN}", "STANDIN_QBCOMPILER_VERSION=0.12.0.0", f"STANDIN_QBCOMPILER_LOG={log}",
        str(sdk_python("4.50.0"))])
    repo = make_project(tmp_path / "proj", params)
    run(["dvc", "config", "cache.type", cache_type], repo)
    run(["dvc", "repro", "compile@encoder", "compile@decoder"], repo)

    listed = repo / "calibration" / "encoder" / "whisper_encoder_cali.txt"
    if cache_type == "symlink":
        assert listed.is_symlink()  # the setting took: outputs are links into .dvc/cache
    else:
        assert listed.stat().st_nlink > 1
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    entries = [p for c in calls if c["fn"] == "mxq_compile" for entry in c["kwargs"]["calib_entries"] for p in entry]
    assert len({c["kwargs"]["calib_data_path"] for c in calls if c["fn"] == "mxq_compile"}) == 2  # both components
    assert entries
    calibration = (repo / "calibration").absolute()
    for p in entries:
        assert p.endswith(".npy") and Path(p).is_relative_to(calibration), p   # not .dvc/cache/files/md5/...
