"""The build host: qbcompiler in its own interpreter (``compile.qbcompiler.python``) and the toolchain stage's
preflight. The SDK's environment is a second virtual environment with transformers 4.50.0 (``sdk_python`` in
conftest) holding the STAND-IN compiler (tests/standin_qbcompiler, NOT the real one); the pipeline's environment has
transformers 5.x and no qbcompiler at all."""
from __future__ import annotations

import importlib.util
import json
import shlex
import time
from pathlib import Path

import pytest
import yaml
from conftest import default_params, make_project, run
from test_compile import STANDIN, calib_root, compile_argv, run_main, standin, toolchain, write_params  # noqa: F401

from stages import toolchain as toolchain_stage
from whisper_npu.compilers.mobilint import build as build_mod
from whisper_npu.compilers.mobilint.plan import PARSER_TRANSFORMERS
from whisper_npu.core.errors import StageError


def sdk_command(python: Path, version: str, log: Path) -> str:
    """``compile.qbcompiler.python``: the SDK environment's python with the stand-in compiler on its path."""
    return shlex.join(["env", f"PYTHONPATH={STANDIN}", f"STANDIN_QBCOMPILER_VERSION={version}",
                       f"STANDIN_QBCOMPILER_LOG={log}", str(python)])


def preflight(tmp_path: Path, **compile_over) -> dict:
    """Run the toolchain stage (the preflight) on params.yaml with ``compile_over``; its build/toolchain.json."""
    build_mod._PROBES.clear()
    params = write_params(tmp_path, **compile_over)
    out = tmp_path / "build" / "toolchain.json"
    toolchain_stage.main(["--params", str(params), "--out", str(out), "--compiled", str(tmp_path / "compiled")])
    return json.loads(out.read_text())


def test_pipeline_environment_has_no_compiler():
    """What the tests below rely on: only the SDK side can import qbcompiler."""
    assert importlib.util.find_spec("qbcompiler") is None


# ------------------------------------------------------------------------------------------ the preflight

def test_sdk_python_that_cannot_start_names_the_key(tmp_path):
    with pytest.raises(StageError, match=r"compile\.qbcompiler\.python = '/nonexistent/sdk/bin/python': cannot "
                                         r"start .*set it to the SDK's Python"):
        preflight(tmp_path, backend="qbcompiler", qbcompiler={"python": "/nonexistent/sdk/bin/python"})


def test_auto_without_a_compiler_says_why_onnxruntime(tmp_path, caplog):
    caplog.set_level("INFO")
    record = preflight(tmp_path, backend="auto", qbcompiler={"python": "/nonexistent/sdk/bin/python"})
    assert record["backend"] == "onnxruntime"
    assert "compile backend auto: onnxruntime (compile.qbcompiler.python = '/nonexistent/sdk/bin/python': " \
           "cannot start" in caplog.text


def test_transformers_the_parser_was_not_released_with_is_refused(tmp_path, standin):
    """In this interpreter (transformers 5.x) a 1.2 compiler's Whisper parser is refused before any work."""
    standin("1.2.0")
    with pytest.raises(StageError, match=r"compile\.qbcompiler\.python = '': qbcompiler 1\.2\.0's Whisper parser was "
                                         r"released with transformers 4\.50\.0 .* install transformers==4\.50\.0"):
        preflight(tmp_path, backend="qbcompiler")


def test_unknown_compiler_version_is_refused(tmp_path, standin):
    standin("2.1.0")
    with pytest.raises(StageError, match=r"qbcompiler 2\.1\.0: unknown API version"):
        preflight(tmp_path, backend="qbcompiler")


def test_cuda_device_without_cuda_names_the_key(tmp_path):
    params = default_params()
    params["device"] = "cuda"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(StageError, match=r"device = cuda"):
        toolchain_stage.main(["--params", str(tmp_path / "params.yaml"), "--out", str(tmp_path / "t.json")])
    assert not (tmp_path / "t.json").exists()


@pytest.mark.slow
@pytest.mark.parametrize("version,over,needle", [
    ("1.2.0", {"device": "gpu"}, r"compile\.qbcompiler\.device = gpu: env .* sees no CUDA device"),
    ("1.2.0", {"decoder_part_options": {"last_token_only": True}},
     r"compile\.qbcompiler\.decoder_part_options: needs qbcompiler >= 1\.3"),
    ("1.3.0", {"decoder_part_options": {"last_token_only": True}},
     r"qbcompiler 1\.3\.0's Whisper parser: no documented transformers"),   # a warning, not a refusal: see below
])
def test_preflight_refusals_in_the_sdk_interpreter(tmp_path, sdk_python, caplog, version, over, needle):
    """Against the SDK environment (transformers 4.50.0): CUDA asked of a host without it, options the version
    does not take; each refused by the toolchain stage, naming the key, in seconds."""
    qb = {"python": sdk_command(sdk_python("4.50.0"), version, tmp_path / "calls.jsonl"), **over}
    if version == "1.3.0":
        # 1.3 has no documented parser transformers: logged, and the options it takes pass
        caplog.set_level("WARNING")
        record = preflight(tmp_path, backend="qbcompiler", qbcompiler=qb)
        assert record["compiler"] == {"module": "qbcompiler", "version": "1.3.0", "api": "1.3"}
        assert "no documented transformers version for its parser" in caplog.text
        return
    started = time.monotonic()
    with pytest.raises(StageError, match=needle):
        preflight(tmp_path, backend="qbcompiler", qbcompiler=qb)
    print(f"refused after {time.monotonic() - started:.1f} s")
    assert not (tmp_path / "build" / "toolchain.json").exists()


# ------------------------------------------------------------------------------------------ compiling there

@pytest.mark.slow
@pytest.mark.parametrize("version", ["1.2.0", "1.4.0"])
def test_compile_runs_in_the_sdk_interpreter(tmp_path, sdk_python, tiny_model_dir, calib_root, version):  # noqa: F811
    """Both components compiled through the second interpreter: the toolchain records that interpreter's
    transformers (4.50.0 for 1.2, 4.57.1 for 1.4) and the compiler found there; the SDK side loads the model itself
    (1.4: the compiler's ``load_for_part``; 1.2: transformers' Auto class with sdpa) and runs both calls; nothing of
    the compiler is imported into this process."""
    log = tmp_path / "calls.jsonl"
    transformers = PARSER_TRANSFORMERS[tuple(int(x) for x in version.split(".")[:2])]
    qb = {"python": sdk_command(sdk_python(transformers), version, log)}
    record = preflight(tmp_path, backend="qbcompiler", qbcompiler=qb)
    assert record["interpreter"]["transformers"] == transformers
    assert record["interpreter"]["python"] and record["compiler"]["version"] == version
    params = tmp_path / "params.yaml"
    for component in ("encoder", "decoder"):
        argv = compile_argv(component, params, tmp_path / "build" / "toolchain.json", tiny_model_dir, calib_root,
                            tmp_path)
        assert run_main(argv) == 0
        prov = json.loads((tmp_path / "compiled" / component / "provenance.json").read_text())
        assert prov["backend"] == "qbcompiler"
        assert prov["resolved"]["interpreter"]["transformers"] == transformers
        assert (tmp_path / "compiled" / component / f"{prov['artifacts']['model']}").is_file()
    calls = [json.loads(x) for x in log.read_text().splitlines()]
    fns = [c["fn"] for c in calls]
    loads = [c for c in calls if c["fn"] == "load_for_part"]
    if version == "1.4.0":
        assert [c["kwargs"]["part"] for c in loads] == ["encoder", "decoder"]
        assert all(c["kwargs"]["model_id"] == str((tiny_model_dir / "hf").resolve()) for c in loads)
    else:
        assert loads == []
    assert fns.count("mblt_compile") == 2 and fns.count("mxq_compile") == 2
    assert "qbcompiler" not in __import__("sys").modules


@pytest.mark.slow
def test_dvc_repro_with_an_sdk_python_that_cannot_start_stops_before_audio(tmp_path):
    """``dvc repro`` (the real CLI) fails at the toolchain stage, naming the key, before any audio stage runs."""
    params = default_params()
    params["compile"]["backend"] = "qbcompiler"
    params["compile"]["qbcompiler"]["python"] = "/nonexistent/sdk/bin/python"
    repo = make_project(tmp_path / "proj", params)
    started = time.monotonic()
    proc = run(["dvc", "repro"], repo, check=False)
    took = time.monotonic() - started
    print(f"dvc repro failed after {took:.1f} s")
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "compile.qbcompiler.python = '/nonexistent/sdk/bin/python': cannot start" in out
    assert "Running stage 'toolchain'" in out and "Running stage 'audio@" not in out
    assert not (repo / "data").exists() and not (repo / "models").exists()
