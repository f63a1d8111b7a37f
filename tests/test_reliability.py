"""Reliability through the real stage CLIs and the real dvc CLI: bad audio, bad params, missing tools,
interruption (SIGINT/SIGTERM), determinism, and workspace paths / clip names.

What each test shows is listed in README's "Guarantees". The slow tests share one run of the tiny profile
(conftest `tiny_pipeline`) and work on copies of it.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml
from conftest import (
    ROOT,
    VENV_BIN,
    assert_status_clean,
    copy_project,
    default_params,
    lock_hashes,
    make_project,
    run,
    section,
)
from test_audio import make_corpus, tone, wav_bytes

from stages import audio as audio_stage
from whisper_npu.core.errors import StageError
from whisper_npu.core.files import read_jsonl
from whisper_npu.sources import loader

SR = 16000
OUTPUT_DIRS = ("build", "models", "data", "calibration", "compiled", "metrics", "plots")


# ------------------------------------------------------------------------------------------- helpers

def write_params(path: Path, params: dict) -> Path:
    path.write_text(yaml.safe_dump(params, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def stage_cli(module: str, args: list[str], env: dict | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """``python -m stages.<module> ...`` as dvc runs it (paths in ``args`` are absolute or relative to cwd)."""
    return run([sys.executable, "-m", f"stages.{module}", *args], cwd, check=False, env=env, timeout=600)


def assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """Non-zero exit, no traceback, exactly one ``error:`` line, containing every needle."""
    assert proc.returncode != 0, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])
    return errors[0]


def small_params(**audio) -> dict:
    p = default_params()
    p["languages"] = ["de_de"]
    p["audio"].update({"calibration_clips": 2, "eval_clips": 1, **audio})
    p["calibration"]["samples_per_language"] = 2
    return p


def output_files(repo: Path) -> list[Path]:
    return sorted(f for d in OUTPUT_DIRS if (repo / d).exists() for f in (repo / d).rglob("*") if f.is_file())


# ------------------------------------------------------------------------------------------- 1. bad audio

@pytest.mark.slow
def test_bad_audio_corpus_through_the_stage_clis(tmp_path: Path, tiny_model_dir: Path) -> None:
    """The whole bad-audio corpus of test_audio in one local folder, through `python -m stages.audio` and then
    `python -m stages.calibrate_encoder`: every file gets its documented outcome, nothing crashes, and every
    calibration sample is finite and of the encoder's spec."""
    cases = make_corpus(tmp_path / "in" / "de_de")
    params = small_params(source="local", local={"dir": str(tmp_path / "in")})
    params["audio"].update(calibration_clips=len(cases) - 2, eval_clips=2, max_skipped_fraction=1.0)
    params["calibration"]["samples_per_language"] = len(cases) - 2
    write_params(tmp_path / "params.yaml", params)
    root = tmp_path / "data" / "audio"
    folders = [root / "calibration" / "de_de", root / "evaluation" / "de_de"]

    proc = stage_cli("audio", ["--params", str(tmp_path / "params.yaml"), "--lang", "de_de", "--out", str(root)])
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "error:" not in proc.stderr, proc.stderr
    kept: dict[str, int] = {}
    reasons: dict[str, str] = {}
    for out in folders:
        for row in read_jsonl(out / "manifest.jsonl"):
            name = row["source"]["path"].split("/", 1)[1]
            kept[name] = kept.get(name, 0) + 1
            y, rate = sf.read(str(out / row["file"]), dtype="float32", always_2d=True)
            assert rate == SR and y.shape[1] == 1 and np.isfinite(y).all() and 0 < len(y) <= 30 * SR
        reasons |= {s["source_ref"].split("/", 1)[1]: s["reason"] for s in read_jsonl(out / "skipped.jsonl")}
    for name, outcome in cases.items():
        if outcome.startswith("ok"):
            assert name in kept and name not in reasons, name
        else:
            assert name not in kept and reasons[name].startswith(outcome), (name, reasons.get(name))
    assert kept["j_ten_minutes.flac"] == 20
    for out in folders:
        for name in ("manifest.jsonl", "skipped.jsonl"):  # nothing machine-specific recorded
            assert str(tmp_path) not in (out / name).read_text(encoding="utf-8"), name

    hf = tiny_model_dir / "hf"
    enc = tmp_path / "calibration" / "encoder"
    proc = stage_cli("calibrate_encoder", [
        "--params", str(tmp_path / "params.yaml"), "--audio", str(tmp_path / "data" / "audio"),
        "--feature-config", str(hf / "preprocessor_config.json"), "--model-config", str(hf / "config.json"),
        "--out", str(enc)])
    assert proc.returncode == 0, proc.stderr
    arrays = sorted(enc.glob("*.npy"))
    assert len(arrays) == len(cases) - 2
    for f in arrays:
        a = np.load(f)
        assert a.dtype == np.float32 and a.shape == (1, 3000, 80) and np.isfinite(a).all(), f.name

    # the default skip budget (a quarter of the clips) is exceeded by this corpus: one line, no output
    params["audio"]["max_skipped_fraction"] = 0.25
    write_params(tmp_path / "params.yaml", params)
    proc = stage_cli("audio", ["--params", str(tmp_path / "params.yaml"), "--lang", "de_de", "--out", str(root)])
    assert_one_line_error(proc, "audio.max_skipped_fraction", "unusable")
    assert not any(out.exists() for out in folders)


def _audio_folder_with_a_nan_clip(root: Path) -> None:
    """data/audio/calibration/de_de as the audio stage writes it, except that one clip is a float WAV with NaN
    samples: a clip that got past the audio stage (hand-edited folder). The audio stage itself cannot write
    one: it skips non-finite input and writes 16-bit PCM, which has no NaN."""
    folder = root / "calibration" / "de_de"
    folder.mkdir(parents=True)
    (folder / "de_de_0000.wav").write_bytes(wav_bytes(tone(1.0)))
    bad = tone(1.0).astype(np.float32)
    bad[200:220] = np.nan
    (folder / "de_de_0001.wav").write_bytes(wav_bytes(bad, subtype="FLOAT"))
    rows = [{"id": f"de_de_{i:04d}", "file": f"de_de_{i:04d}.wav", "lang": "de_de", "split": "calibration",
             "duration": 1.0, "text": "Guten Tag.", "text_en": "Good day.", "source": {}} for i in range(2)]
    (folder / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


@pytest.mark.parametrize("stage", ["calibrate_encoder", "calibrate_decoder"])
def test_a_nan_clip_that_gets_past_the_audio_stage_never_becomes_a_calibration_sample(
        stage: str, tmp_path: Path, tiny_model_dir: Path) -> None:
    _audio_folder_with_a_nan_clip(tmp_path / "audio")
    # the decoder set's text from the labels (the default): both clips labelled, so only the audio is wrong
    (tmp_path / "decoder_text.jsonl").write_text("".join(json.dumps(
        {"id": f"de_de_{i:04d}", "lang": "de_de", "transcription": "Guten Tag.", "translation": "Good day."}) + "\n"
        for i in range(2)), encoding="utf-8")
    params = write_params(tmp_path / "params.yaml", small_params())
    out = tmp_path / "calibration" / stage.split("_")[1]
    if stage == "calibrate_encoder":
        args = ["--feature-config", str(tiny_model_dir / "hf" / "preprocessor_config.json"),
                "--model-config", str(tiny_model_dir / "hf" / "config.json")]
    else:
        args = ["--text", str(tmp_path / "decoder_text.jsonl"), "--model", str(tiny_model_dir),
                "--metrics", str(tmp_path / "metrics" / "calibration.json")]
    proc = stage_cli(stage, ["--params", str(params), "--audio", str(tmp_path / "audio"), "--out", str(out), *args])
    assert_one_line_error(proc, "de_de_0001.wav", "NaN")
    assert not out.exists() and not list(out.parent.glob(f".{out.name}.tmp-*"))
    assert not (tmp_path / "metrics" / "calibration.json").exists()


# ------------------------------------------------------------------------------------------- 2. bad params

BAD_PARAMS = {
    # case: (edit of small_params(), text that must be in the error line, whether the audio stage reads it)
    "out-of-range": (lambda p: p["calibration"].update(translate_ratio=1.5),
                     "calibration.translate_ratio = 1.5: must be <= 1", False),
    "unknown-key": (lambda p: p["audio"].update(clip=3), "audio.clip: unknown key", True),
    "old-clips-key": (lambda p: p["audio"].update(clips=3),
                      "audio.clips: no longer a key: calibration_clips replaced it", True),
    "wrong-type": (lambda p: p.update(seed="zero"), "seed = 'zero': must be an integer", True),
    "unknown-language": (lambda p: p.update(languages=["de_de", "xx_yy"]), "languages[1] = 'xx_yy'", False),
    "more-samples-than-clips": (lambda p: p["calibration"].update(samples_per_language=3),
                                "calibration.samples_per_language = 3: must be <= audio.calibration_clips = 2",
                                False),
    "not-yaml": (None, "not valid YAML: line 3, column 6", True),
}


@pytest.mark.parametrize("case", sorted(BAD_PARAMS))
def test_bad_params_stop_the_stage_with_one_line_naming_the_key(case: str, tmp_path: Path) -> None:
    """The toolchain stage (the first of every `dvc repro`) checks the whole file, cross-section rules included; a
    stage run by hand checks the sections it reads. Either way: one line naming the file and the key, no output."""
    edit, message, audio_reads_it = BAD_PARAMS[case]
    path = tmp_path / "params.yaml"
    if edit is None:
        path.write_text("seed: 0\nlanguages: [de_de\naudio: {clips: 3}\n")
    else:
        params = small_params()
        edit(params)
        write_params(path, params)
    proc = stage_cli("toolchain", ["--params", str(path), "--out", str(tmp_path / "build" / "toolchain.json")])
    assert_one_line_error(proc, str(path), message)
    assert not (tmp_path / "build").exists()
    out = tmp_path / "out"
    proc = stage_cli("audio", ["--params", str(path), "--lang", "de_de", "--out", str(out)])
    if audio_reads_it:
        assert_one_line_error(proc, str(path), message)
    else:
        assert proc.returncode == 0, proc.stderr   # not the audio stage's section: toolchain's check stops repro
        shutil.rmtree(out)
    assert not out.exists()  # refused before any work


@pytest.mark.slow
def test_every_stage_checks_params_before_any_work(tmp_path: Path) -> None:
    """Each stage command of dvc.yaml (first foreach item), run in a fresh project copy without any inputs and with
    a bad value in a params key it reads (the first its dvc.yaml entry lists; the toolchain stage reads them all),
    fails on the params with one line, not on a missing input."""
    repo = make_project(tmp_path / "proj")
    spec = yaml.safe_load((repo / "dvc.yaml").read_text())
    subst = {k: v for entry in spec.get("vars", []) for k, v in entry.items()}
    checked = []
    for name, body in spec["stages"].items():
        stage = body.get("do", body)
        cmd = stage["cmd"]
        if isinstance(body.get("foreach"), dict):  # compile: ${key} and ${item.<field>} of the first entry
            key, fields = next(iter(body["foreach"].items()))
            cmd = cmd.replace("${key}", key)
            for k, v in fields.items():
                cmd = cmd.replace(f"${{item.{k}}}", v)
        cmd = cmd.replace("${item}", "de_de")  # per-language stages: over ${languages}
        for k, v in subst.items():
            cmd = cmd.replace(f"${{{k}}}", v)
        assert "--params" in cmd, f"{name}: every stage reads params.yaml"
        key = (stage.get("params") or ["seed"])[0]
        params = default_params()
        if key == "seed":
            params["seed"], message = -1, "params.yaml: seed = -1: must be >= 0"
        elif key == "languages":
            params["languages"], message = [], "params.yaml: languages = []: at least one language"
        elif "." in key and isinstance(params[key.split(".")[0]][key.split(".")[1]], dict):   # npu.encoder
            section, field = key.split(".")
            params[section][field]["no_such_key"], message = 1, f"params.yaml: {key}.no_such_key: unknown key"
        elif "." in key:
            section, field = key.split(".")
            params[section][field], message = 0, f"params.yaml: {key} = 0: must be >= 1"
        else:
            params[key]["no_such_key"], message = 1, f"params.yaml: {key}.no_such_key: unknown key"
        (repo / "params.yaml").write_text(yaml.safe_dump(params))
        argv = cmd.split()
        assert argv[:2] == ["python", "-m"], cmd
        proc = stage_cli(argv[2].split(".", 1)[1], argv[3:], cwd=repo)
        assert_one_line_error(proc, message)
        checked.append(name)
    assert len(checked) == len(spec["stages"]), checked
    assert not [f for d in OUTPUT_DIRS if (repo / d).exists() for f in (repo / d).rglob("*")]


def test_synth_language_without_corpus_text_is_one_line(tmp_path: Path) -> None:
    params = small_params()
    params["languages"] = ["hi_in"]  # in the language table, but the synthetic corpus has no Hindi text
    write_params(tmp_path / "params.yaml", params)
    out = tmp_path / "out"
    proc = stage_cli("audio", ["--params", str(tmp_path / "params.yaml"), "--lang", "hi_in", "--out", str(out)])
    assert_one_line_error(proc, "'hi_in' has no synthetic speech", "audio.source = synth", "de_de")
    assert not (out / "calibration" / "hi_in").exists() and not (out / "evaluation" / "hi_in").exists()


def test_local_source_with_fewer_files_than_clips_is_one_line(tmp_path: Path) -> None:
    folder = tmp_path / "mine" / "de_de"
    folder.mkdir(parents=True)
    for name in ("a.wav", "b.wav"):
        (folder / name).write_bytes(wav_bytes(tone(1.0)))
    write_params(tmp_path / "params.yaml", small_params(source="local", local={"dir": str(tmp_path / "mine")}))
    out = tmp_path / "out"
    proc = stage_cli("audio", ["--params", str(tmp_path / "params.yaml"), "--lang", "de_de", "--out", str(out)])
    assert_one_line_error(proc, "has 2 clips, audio.calibration_clips + audio.eval_clips ask for 2 + 1",
                          "lower them or add clips")
    assert not (out / "calibration" / "de_de").exists() and not (out / "evaluation" / "de_de").exists()


@pytest.mark.slow
def test_bad_params_through_dvc_repro(project) -> None:
    """Not-YAML params.yaml: DVC reads it itself (dvc.yaml interpolates ${languages}) and stops before any stage
    with its own message naming the file and line. A valid-YAML but invalid value reaches the stage, whose
    one-line error is what the user sees above DVC's "failed to reproduce"."""
    repo = project(small_params())
    (repo / "params.yaml").write_text("seed: 0\nlanguages: [de_de\naudio: {clips: 3}\n")
    proc = run(["dvc", "repro"], repo, check=False)
    assert proc.returncode != 0
    assert "unable to read: 'params.yaml', YAML file structure is corrupted" in proc.stderr, proc.stderr
    assert "line: 3" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert "Running stage" not in proc.stdout

    params = small_params()
    params["calibration"]["translate_ratio"] = 1.5
    write_params(repo / "params.yaml", params)
    proc = run(["dvc", "repro"], repo, check=False)
    assert proc.returncode != 0
    assert_one_line_error(proc, "params.yaml: calibration.translate_ratio = 1.5: must be <= 1")
    # the toolchain stage checks the whole file first: no model, audio or label work starts
    assert "failed to reproduce 'toolchain'" in proc.stderr, proc.stderr
    assert [ln for ln in proc.stdout.splitlines() if ln.startswith("Running stage")] == ["Running stage 'toolchain':"]
    assert not (repo / "models" / "reference").exists()


# ------------------------------------------------------------------------------------------- 3. missing tools

@pytest.mark.parametrize("tool", ["espeak-ng", "qbcompiler", "fleurs-offline"])
def test_missing_tool_is_one_line_saying_what_to_do(tool: str, tmp_path: Path) -> None:
    """(The model hub while offline is tests/test_model.py::test_hub_unreachable_is_a_one_line_error.)"""
    params = small_params()
    env: dict[str, str] = {}
    if tool == "espeak-ng":
        env["PATH"] = str(VENV_BIN)  # the venv's tools only: no espeak-ng
        module, out = "audio", tmp_path / "data" / "audio" / "calibration" / "de_de"
        args = ["--lang", "de_de", "--out", str(tmp_path / "data" / "audio")]
        needles = ("espeak-ng: not installed", "apt-get install espeak-ng")
    elif tool == "qbcompiler":
        if _importable("qbcompiler"):
            pytest.skip("qbcompiler is installed here")
        params["compile"]["backend"] = "qbcompiler"
        module, out = "compile", tmp_path / "compiled" / "encoder"
        # inputs that do not exist: the missing compiler is reported before any input is read
        args = ["--component", "encoder", "--toolchain", str(tmp_path / "toolchain.json"), "--model",
                str(tmp_path / "model"), "--calibration", str(tmp_path / "cal.txt"), "--out", str(out),
                "--metrics", str(tmp_path / "metrics.json")]
        needles = ("compile.backend = qbcompiler: compile.qbcompiler.python = '' (this interpreter) has no "
                   "qbcompiler", "pip install qbcompiler-", "point compile.qbcompiler.python at",
                   "compile.backend to onnxruntime")
    else:
        params["audio"]["source"] = "fleurs"  # google/fleurs from the hub
        env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_HOME=str(tmp_path / "hf-home"),
                   HF_DATASETS_CACHE=str(tmp_path / "hf-datasets"))
        module, out = "audio", tmp_path / "data" / "audio" / "calibration" / "de_de"
        args = ["--lang", "de_de", "--out", str(tmp_path / "data" / "audio")]
        needles = ("audio.fleurs.dataset = 'google/fleurs'", "check the network", "audio.source: synth or local")
    write_params(tmp_path / "params.yaml", params)
    proc = stage_cli(module, ["--params", str(tmp_path / "params.yaml"), *args], env=env)
    assert_one_line_error(proc, *needles)
    assert not out.exists()
    assert not (out.parent.exists() and list(out.parent.glob(".*.tmp-*")))


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


# ------------------------------------------------------------------------------------------- 4. interruption

def _children(pid: int) -> list[int]:
    """Every descendant of ``pid`` (from /proc), so the test signals only processes it started."""
    parent: dict[int, int] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                parent[int(d.name)] = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parent.items() if pp == p]
        found += kids
        todo += kids
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _interrupt_mid_run(repo: Path, stage: str, module: str, out: Path, sig: int,
                       env: dict) -> subprocess.CompletedProcess:
    """`dvc repro -f -s <stage>`; once the stage's temporary output exists (work under way), signal the stage
    process (as Ctrl-C or a job scheduler would) and return dvc's result."""
    full_env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}", "DVC_NO_ANALYTICS": "1",
                "PYTHONPATH": str(repo), **env}
    logs = {name: repo.parent / f"dvc-{name}.log" for name in ("stdout", "stderr")}
    with open(logs["stdout"], "w") as so, open(logs["stderr"], "w") as se:  # files: a full pipe cannot block dvc
        # SIGINT as a terminal delivers it: a shell's background job (`cmd &`, e.g. a CI runner's) inherits SIGINT
        # ignored, and Python then installs no KeyboardInterrupt handler in dvc or the stage; restore the default
        proc = subprocess.Popen(["dvc", "repro", "-f", "-s", stage], cwd=repo, env=full_env, stdout=so, stderr=se,
                                start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        signalled, deadline = False, time.time() + 300
        try:
            while proc.poll() is None and not signalled and time.time() < deadline:
                # the stage process is the descendant whose pid names the temporary output (not its shell)
                for pid in _children(proc.pid):
                    if f"-m {module} " in _cmdline(pid) and out.with_name(f".{out.name}.tmp-{pid}").exists():
                        os.kill(pid, sig)
                        signalled = True
                        break
                time.sleep(0.01)
            proc.wait(timeout=300)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)  # our own process group only
                proc.wait()
    stdout, stderr = (logs[n].read_text(errors="replace") for n in ("stdout", "stderr"))
    assert signalled, f"the stage finished before its output appeared:\n{stdout}\n{stderr}"
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


@pytest.mark.slow
@pytest.mark.parametrize("sig,stage,module,out", [
    (signal.SIGINT, "calibrate_decoder", "stages.calibrate_decoder", "calibration/decoder"),
    (signal.SIGTERM, "compile@decoder", "stages.compile", "compiled/decoder"),
], ids=["SIGINT-calibrate_decoder", "SIGTERM-compile_decoder"])
def test_interrupted_stage_leaves_no_output_and_the_next_repro_completes(
        sig: int, stage: str, module: str, out: str, tiny_pipeline: Path, tmp_path: Path) -> None:
    repo = copy_project(tiny_pipeline, tmp_path / "proj")
    before = lock_hashes(repo)
    tmpdir = tmp_path / "tmpdir"
    tmpdir.mkdir()
    proc = _interrupt_mid_run(repo, stage, module, repo / out, sig, {"TMPDIR": str(tmpdir)})
    assert proc.returncode != 0
    assert f"exited with {128 + sig}" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    # nothing DVC could take for a finished output: no output, no temporary sibling, no stray temp files
    assert not (repo / out).exists()
    assert not list((repo / out).parent.glob(".*.tmp-*"))
    assert not list(tmpdir.iterdir()), list(tmpdir.iterdir())
    status = json.loads(run(["dvc", "status", "--json"], repo).stdout)
    changed = {k: v for entry in status[stage] if isinstance(entry, dict)
               for k, v in entry.get("changed outs", {}).items()}
    assert changed.get(out) == "deleted", status
    assert lock_hashes(repo) == before  # dvc.lock not touched by the failed run

    # the next repro completes and is clean (DVC checks the last finished run's outputs out of its cache:
    # the stage's command and deps are unchanged since then)
    ran = run(["dvc", "repro"], repo).stdout
    assert f"Stage '{stage}' is cached - skipping run, checking out outputs" in ran, ran
    assert_status_clean(repo)
    assert lock_hashes(repo) == before


def _start_and_wait_for_stage(repo: Path, args: list[str], module: str, out: Path | None, logs: Path) -> tuple:
    """Start `dvc <args>` in its own process group; return (proc, stage pid) once the stage process runs (DVC
    holds the workspace lock then) and, with ``out``, its temporary output exists."""
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}", "DVC_NO_ANALYTICS": "1",
           "PYTHONPATH": str(repo)}
    so, se = open(logs.with_suffix(".out"), "w"), open(logs.with_suffix(".err"), "w")
    proc = subprocess.Popen(["dvc", *args], cwd=repo, env=env, stdout=so, stderr=se, start_new_session=True)
    deadline = time.time() + 300
    while proc.poll() is None and time.time() < deadline:
        for pid in _children(proc.pid):
            if f"-m {module} " in _cmdline(pid) and (out is None or out.with_name(f".{out.name}.tmp-{pid}").exists()):
                return proc, pid
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL) if proc.poll() is None else None
    raise AssertionError(f"{module} never started writing {out}:\n{logs.with_suffix('.err').read_text()}")


def _finish(proc: subprocess.Popen) -> None:
    try:
        proc.wait(timeout=600)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # our own process group only
            proc.wait()


def test_stage_start_removes_temporaries_of_dead_processes_only(tmp_path: Path) -> None:
    from whisper_npu.core.files import atomic_output

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        out = tmp_path / "out"
        (tmp_path / f".out.tmp-{gone.pid}").mkdir()                 # a SIGKILLed run's leftover
        (tmp_path / f".out.tmp-{alive.pid}").mkdir()                # another run's work in progress
        (tmp_path / f".other.tmp-{gone.pid}").mkdir()               # another output's: not ours to judge
        with atomic_output(out) as tmp:
            tmp.write_text("done")
        left = sorted(p.name for p in tmp_path.iterdir())
        assert left == sorted([f".other.tmp-{gone.pid}", f".out.tmp-{alive.pid}", "out"]), left
    finally:
        alive.kill()
        alive.wait()


@pytest.mark.slow
def test_sigkilled_stage_temporary_is_removed_by_the_next_run(tiny_pipeline: Path, tmp_path: Path) -> None:
    repo = copy_project(tiny_pipeline, tmp_path / "proj")
    before = lock_hashes(repo)
    out = repo / "calibration" / "decoder"
    proc, pid = _start_and_wait_for_stage(repo, ["repro", "-f", "-s", "calibrate_decoder"], "stages.calibrate_decoder",
                                          out, tmp_path / "killed")
    os.kill(pid, signal.SIGKILL)  # no handler runs: the temporary stays, as after a power cut or the OOM killer
    _finish(proc)
    assert proc.returncode != 0
    assert out.with_name(f".decoder.tmp-{pid}").exists()
    run(["dvc", "repro", "-f", "-s", "calibrate_decoder"], repo)
    assert not list(out.parent.glob(".*.tmp-*")), list(out.parent.glob(".*.tmp-*"))
    assert_status_clean(repo)
    assert lock_hashes(repo) == before  # the rerun is byte-identical


@pytest.mark.slow
def test_two_repros_at_once_get_dvcs_lock_error_not_corrupted_outputs(tiny_pipeline: Path, tmp_path: Path) -> None:
    repo = copy_project(tiny_pipeline, tmp_path / "proj")
    before = lock_hashes(repo)
    first, pid = _start_and_wait_for_stage(repo, ["repro", "-f", "-s", "audio@es_419"], "stages.audio", None,
                                           tmp_path / "first")
    os.kill(pid, signal.SIGSTOP)  # held mid-stage (with DVC's lock) for as long as the second run takes
    try:
        second = run(["dvc", "repro", "-f", "-s", "audio@es_419"], repo, check=False, timeout=600)
    finally:
        os.kill(pid, signal.SIGCONT)
        _finish(first)
    assert second.returncode != 0
    # DVC's lock error: the workspace lock, or (dvc 3 repro) the read/write lock on the outputs, which names
    # the process holding it
    said = second.stderr + second.stdout
    assert "Unable to acquire lock" in said or ("is busy, it is being blocked by" in said and
                                                f"(PID {first.pid})" in said), said
    assert first.returncode == 0, (tmp_path / "first.err").read_text()
    assert_status_clean(repo)
    assert lock_hashes(repo) == before


# ------------------------------------------------------------------------------------------- 5+6. determinism, paths

def _without_rtf(obj):
    """evaluate.json without its real-time factors (wall-clock)."""
    if isinstance(obj, dict):
        return {k: _without_rtf(v) for k, v in obj.items() if k != "rtf" and not k.startswith("rtf_")}
    if isinstance(obj, list):
        return [_without_rtf(v) for v in obj]
    return obj


@pytest.mark.slow
def test_forced_rerun_in_a_path_with_spaces_and_unicode_is_byte_identical(tiny_pipeline: Path, tmp_path: Path) -> None:
    """The tiny pipeline moved to a workspace with spaces and non-ASCII characters (its model folder too) and
    re-run from scratch with `dvc repro -f`: it completes, no output holds the workspace path, and every output
    has the dvc.lock hash of the first run (in another directory) except the wall-clock ones: the transcription
    timings and metrics/evaluate.json, which differs only in its real-time factors."""
    space = tmp_path / "my wörk space ü"
    repo = copy_project(tiny_pipeline, space / "pröject 1")
    model = shutil.copytree(Path(yaml.safe_load((repo / "params.yaml").read_text())["model"]["id"]),
                            space / "tiny mödel" / "hf")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["model"]["id"] = str(model)
    write_params(repo / "params.yaml", params)
    before = lock_hashes(tiny_pipeline)

    run(["dvc", "repro", "-f"], repo)

    assert_status_clean(repo)
    after = lock_hashes(repo)
    assert set(after) == set(before)
    differ = {k for k in before if before[k] != after[k]}
    wall_clock = {k for k in before if k.endswith(".timing.json")} | {"score:metrics/evaluate.json"}
    assert differ <= wall_clock, sorted(differ - wall_clock)
    first = json.loads((tiny_pipeline / "metrics" / "evaluate.json").read_text())
    again = json.loads((repo / "metrics" / "evaluate.json").read_text())
    assert _without_rtf(first) == _without_rtf(again)

    needles = {str(p).encode() for p in (tmp_path, repo, tiny_pipeline, tiny_pipeline.parent)}
    files = output_files(repo)
    assert len(files) > 30
    leaks = [(f.relative_to(repo).as_posix(), n.decode()) for f in files for n in needles if n in f.read_bytes()]
    assert not leaks, leaks


def test_clip_names_with_spaces_unicode_and_one_stem(tmp_path: Path) -> None:
    """Local audio in a folder with spaces and non-ASCII characters; file names that share a stem or carry
    spaces and non-ASCII characters each become a distinct clip with its own id; a transcript that two
    same-stem files would share is refused with one line."""
    root = tmp_path / "my aud ïo"
    folder = root / "ko_kr"
    folder.mkdir(parents=True)
    names = ["a.wav", "a.flac", "A.wav", "my clip 1.wav", "녹음 파일.ogg", "café.wav", "cafe\u0301.wav"]
    for k, name in enumerate(names):
        sf.write(str(folder / name), tone(1.0 + 0.1 * k, freq=200 + 30 * k), SR)
    (folder / "my clip 1.txt").write_text("안녕하세요", encoding="utf-8")
    p = section("audio", source="local", calibration_clips=len(names) - 1, eval_clips=1, local={"dir": str(root)})
    params = small_params(source="local", calibration_clips=len(names) - 1, local={"dir": str(root)})
    params["languages"] = ["ko_kr"]
    write_params(tmp_path / "params.yaml", params)
    out = tmp_path / "out"
    audio_stage.main(["--params", str(tmp_path / "params.yaml"), "--lang", "ko_kr", "--out", str(out)])

    folders = [out / "calibration" / "ko_kr", out / "evaluation" / "ko_kr"]
    manifest = [r for f in folders for r in read_jsonl(f / "manifest.jsonl")]
    assert len({r["id"] for r in manifest}) == len(names) == len(manifest)
    assert sorted(r["source"]["path"] for r in manifest) == sorted(f"ko_kr/{n}" for n in names)
    assert sorted(f.name for d in folders for f in d.glob("*.wav")) == sorted(r["file"] for r in manifest)
    assert [r["text"] for r in manifest if r["source"]["path"] == "ko_kr/my clip 1.wav"] == ["안녕하세요"]
    assert not any(str(root) in (f / "manifest.jsonl").read_text(encoding="utf-8") for f in folders)

    (folder / "a.txt").write_text("annyeong", encoding="utf-8")
    with pytest.raises(StageError, match=r"ko_kr/a\.txt matches a\.flac and a\.wav; rename"):
        loader.get_clips("ko_kr", p, 0)
