"""With `cache.type: symlink` (or hardlink), the compiler still gets the calibration files by their own names.

DVC then links every output file into its cache (`.dvc/cache/files/md5/ab/cdef...`, no extension). The compile
stage makes the calibration lists absolute for the compiler; following the links there would hand it cache
objects instead of the `.npy` files its documented list format names. Run through the real `dvc` CLI: a copy
of the tests' tiny pipeline relinked, then both compile stages rerun with the STAND-IN compiler
(tests/standin_qbcompiler: the real qbcompiler cannot be installed here) in the SDK's own environment (conftest
``sdk_python``: transformers 4.50.0), which logs the calibration entries it was given.
"""
from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
import yaml
from conftest import copy_project, run

STANDIN = Path(__file__).parent / "standin_qbcompiler"


def _entries(log: Path) -> list[str]:
    """Every calibration file the stand-in's mxq_compile calls were given (both components)."""
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert len({c["kwargs"]["calib_data_path"] for c in calls if c["fn"] == "mxq_compile"}) == 2
    return [p for c in calls if c["fn"] == "mxq_compile" for entry in c["kwargs"]["calib_entries"] for p in entry]


@pytest.mark.slow
def test_compiler_gets_npy_paths_with_linked_cache(tmp_path, tiny_pipeline, sdk_python) -> None:
    """Symlinks first, then the same workspace relinked as hardlinks and both compile stages rerun."""
    log = tmp_path / "standin_calls.jsonl"
    repo = copy_project(tiny_pipeline, tmp_path / "proj")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["compile"]["backend"] = "qbcompiler"
    params["compile"]["qbcompiler"]["python"] = shlex.join([
        "env", f"PYTHONPATH={STANDIN}", "STANDIN_QBCOMPILER_VERSION=0.12.0.0", f"STANDIN_QBCOMPILER_LOG={log}",
        str(sdk_python("4.50.0"))])
    (repo / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True, sort_keys=False))
    listed = repo / "calibration" / "encoder" / "whisper_encoder_cali.txt"
    calibration = (repo / "calibration").absolute()
    for cache_type in ("symlink", "hardlink"):
        run(["dvc", "config", "cache.type", cache_type], repo)
        if cache_type == "symlink":
            assert not listed.is_symlink()   # the tiny pipeline ran with DVC's default cache type (copies)
            run(["dvc", "checkout", "--relink", "calibrate_encoder", "calibrate_decoder"], repo)
            run(["dvc", "repro", "compile@encoder", "compile@decoder"], repo)
            assert listed.is_symlink()  # the setting took: outputs are links into .dvc/cache
        else:
            log.unlink()
            run(["dvc", "checkout", "--relink", "calibrate_encoder", "calibrate_decoder"], repo)
            run(["dvc", "repro", "-f", "-s", "compile@encoder", "compile@decoder"], repo)
            assert not listed.is_symlink() and listed.stat().st_nlink > 1
        entries = _entries(log)
        assert entries, cache_type
        for p in entries:   # not .dvc/cache/files/md5/...
            assert p.endswith(".npy") and Path(p).is_relative_to(calibration), (cache_type, p)
