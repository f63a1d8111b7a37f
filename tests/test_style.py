"""The code keeps the project's own style settings (pyproject.toml [tool.ruff]): lines of at most 120 columns,
imports sorted the configured way, no unused import. Checked with ruff (a dev dependency, pinned in constraints.txt)."""
from __future__ import annotations

import subprocess
import sys

from conftest import ROOT


def test_lines_imports_and_unused_imports_follow_the_project_settings():
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--select", "E501,I001,F401",
                           "--output-format", "concise", "."], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
