"""README "Experiments", run as written on the tiny profile through the real `dvc` CLI: the queue with two
experiments and two workers, `dvc exp show`, `dvc plots diff` (drawn in headless Chromium, offline), and a preset's
overrides (values with spaces and quotes) through a real shell. README's named experiment (`dvc exp run -n
ratio-0.5 ...`, `dvc metrics diff`, `dvc plots diff`) is run in tests/test_remote.py, which then shares it.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, colour_counts, copy_project, run, screenshot

MIN_PIXELS = 500


def exp_rows(repo: Path) -> dict[str, dict]:
    """`dvc exp show --json`: experiment name -> its record (params, metrics, state), for every experiment."""
    rows: dict[str, dict] = {}

    def walk(node) -> None:
        if isinstance(node, list):
            for item in node:
                walk(item)
        elif isinstance(node, dict):
            name = node.get("name")
            data = node.get("data")
            if name and isinstance(data, dict):
                rows[name] = data
            for child in node.get("experiments") or []:
                walk(child)
            for child in node.get("revs") or []:
                walk(child)

    walk(json.loads(run(["dvc", "exp", "show", "--json"], repo).stdout))
    return rows


def param(row: dict, key: str):
    node = row["params"]["params.yaml"]["data"]
    for part in key.split("."):
        node = node[part]
    return node


def assert_bars_drawn(page_dir: Path, tmp_path: Path, series: int) -> None:
    html = (page_dir / "index.html").read_text(encoding="utf-8")
    assert "cdn.jsdelivr" not in html and "<script src" not in html
    png = tmp_path / f"{page_dir.name}.png"
    screenshot(page_dir / "index.html", png, tmp_path / f"chromium-{page_dir.name}")
    counts = colour_counts(png)
    assert all(n >= MIN_PIXELS for n in counts[:series]), counts


@pytest.mark.slow
def test_queue_two_experiments_with_two_workers(tiny_pipeline: Path, tmp_path: Path) -> None:
    repo = copy_project(tiny_pipeline, tmp_path / "proj")
    # a budget change: each experiment reruns only `score` (what the queue and its two workers do is the same for
    # any change; README's translate_ratio experiment is run in tests/test_remote.py)
    run(["dvc", "exp", "run", "--queue", "-S", "score.max_wer_increase=0.05,0.2"], repo)
    queued = run(["dvc", "queue", "status"], repo).stdout
    assert queued.count("Queued") == 2, queued
    run(["dvc", "queue", "start", "-j", "2"], repo)
    deadline = time.time() + 1800
    while time.time() < deadline:
        status = run(["dvc", "queue", "status"], repo).stdout
        if "Queued" not in status and "Running" not in status:
            break
        time.sleep(5)
    assert status.count("Success") == 2, status
    rows = exp_rows(repo)
    budgets = sorted(param(r, "score.max_wer_increase") for r in rows.values())
    assert budgets.count(0.05) == 1 and budgets.count(0.2) == 1, budgets
    names = [n for n, r in rows.items() if param(r, "score.max_wer_increase") in (0.05, 0.2)]
    shown = run(["dvc", "exp", "show", "--md"], repo).stdout
    assert all(n in shown for n in names), shown
    run(["dvc", "plots", "diff", *names, "-o", str(tmp_path / "diff-queue")], repo)
    assert_bars_drawn(tmp_path / "diff-queue", tmp_path, series=4)   # the two queued experiments


@pytest.mark.slow
def test_preset_overrides_survive_the_shell(tiny_pipeline: Path, tmp_path: Path) -> None:
    """README's `eval "dvc exp run $(python -m whisper_npu.preset ...)"` with values holding spaces and quotes."""
    repo = copy_project(tiny_pipeline, tmp_path / "proj")
    preset = {"audio": {"local": {"dir": "my clips/it's \"here\""}}, "calibration": {"translate_ratio": 0.3}}
    (repo / "preset.yaml").write_text(yaml.safe_dump(preset, allow_unicode=True))
    shutil.copytree(ROOT / "params", repo / "params")
    run(["bash", "-c", 'eval "dvc exp run --queue -n tutorial $(python -m whisper_npu.preset params/tutorial.yaml)"'],
        repo)
    run(["bash", "-c", 'eval "dvc exp run --queue -n preset $(python -m whisper_npu.preset preset.yaml)"'], repo)
    row = exp_rows(repo)["preset"]
    assert param(row, "audio.local.dir") == "my clips/it's \"here\""
    assert param(row, "calibration.translate_ratio") == 0.3
    tutorial = exp_rows(repo)["tutorial"]   # queued only: it needs the hub, FLEURS and the Mobilint SDK to run
    want = yaml.safe_load((ROOT / "params" / "tutorial.yaml").read_text())
    assert param(tutorial, "model.id") == want["model"]["id"] == "openai/whisper-small"
    assert param(tutorial, "compile.qbcompiler.encoder_scheme") == want["compile"]["qbcompiler"]["encoder_scheme"]
    assert param(tutorial, "audio.calibration_clips") == want["audio"]["calibration_clips"]
    run(["dvc", "queue", "remove", "--all"], repo)
