"""Shared fixtures. Slow tests run the real `dvc` CLI in a copy of the project under tmp_path."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent

# What a project copy needs: the pipeline, its code and the DVC config (no data, no outputs).
PROJECT_FILES = ("dvc.yaml", "params.yaml", "stages", "whisper_npu", ".dvc/config", ".dvcignore", ".gitignore")


def run(cmd: list[str], cwd: Path, check: bool = True, env: dict | None = None,
        timeout: float = 1800) -> subprocess.CompletedProcess:
    """Run a command with the project's venv first on PATH; on failure show its output."""
    full_env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
                "DVC_NO_ANALYTICS": "1", "PYTHONPATH": str(cwd), **(env or {})}
    proc = subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
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
