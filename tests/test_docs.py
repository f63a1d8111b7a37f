"""The docs say what the code and the committed results say: the README's results table is what the report prints
from the committed metrics, its "where things live" table names what the registries hold, the README stays short,
every figure the docs quote about the ONNX Runtime INT8 options comes from a bench run recorded in BENCHMARKS.md,
and nothing points at files outside the repository."""
from __future__ import annotations

import ast
import json
import re
import subprocess

import pytest
from conftest import ROOT

NUMBER = re.compile(r"(?<![\w.])\d+\.\d+(?![\w.])")


def test_readme_results_table_is_what_the_report_prints_from_the_committed_metrics():
    from whisper_npu.eval.report import block, headline

    metrics = json.loads((ROOT / "metrics" / "evaluate.json").read_text())
    assert block(ROOT / "README.md") == headline(metrics), \
        "rerun: python -m whisper_npu.eval.report metrics/evaluate.json --update README.md"


def test_readme_is_short():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 200


def _readme_row(what: str) -> str:
    (row,) = [ln for ln in (ROOT / "README.md").read_text().splitlines() if ln.startswith(f"| {what} |")]
    return row


def test_where_things_live_names_every_registered_module():
    from whisper_npu.compilers.registry import COMPILERS
    from whisper_npu.runtimes.registry import RUNTIMES
    from whisper_npu.sources.registry import SOURCES

    assert ", ".join(SOURCES) in _readme_row("an audio source")
    assert ", ".join(COMPILERS) in _readme_row("a compiler")
    assert ", ".join(RUNTIMES) in _readme_row("a runtime")
    for name in SOURCES:
        assert (ROOT / "whisper_npu" / "sources" / f"{name}.py").is_file(), name
    for package in COMPILERS.values():
        assert (ROOT / "whisper_npu" / "compilers" / package / "build.py").is_file(), package
    for module in RUNTIMES.values():
        assert (ROOT / "whisper_npu" / "runtimes" / (module.replace(".", "/") + ".py")).is_file(), module


def test_nothing_points_outside_the_repository():
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    # the team's notes folder beside the checkout, which users do not have (spelled in parts so this file is no hit)
    outside = re.compile("|".join(("shared" + "/notes", r"\.\./" + "shared")))
    hits = [f for f in files if not f.endswith((".lock", ".json", ".svg")) and (ROOT / f).is_file()
            and outside.search((ROOT / f).read_text(errors="replace"))]
    assert hits == [], hits


def test_docs_links_resolve():
    text = (ROOT / "README.md").read_text()
    for path in sorted(set(re.findall(r"\b(docs/[\w.-]+\.md)", text))):
        assert (ROOT / path).is_file(), path


def quantize_docstring() -> str:
    return ast.get_docstring(ast.parse(
        (ROOT / "whisper_npu" / "compilers" / "onnxruntime" / "quantize.py").read_text()))


def params_onnxruntime_comments() -> str:
    text = (ROOT / "params.yaml").read_text(encoding="utf-8")
    block = text[text.index("  onnxruntime:\n"):text.index("  numerics_samples:")]
    return "\n".join(line for line in block.splitlines() if line.strip().startswith("#"))


SOURCES = {"docs/onnxruntime-int8.md": lambda: (ROOT / "docs" / "onnxruntime-int8.md").read_text(encoding="utf-8"),
           "compilers/onnxruntime/quantize.py docstring": quantize_docstring,
           "params.yaml compile.onnxruntime comments": params_onnxruntime_comments}
SETTINGS = {"99.999", "0.5", "0.999999"}  # option values (percentile, smooth_quant_alpha), not measurements


@pytest.mark.parametrize("where", sorted(SOURCES))
def test_quoted_int8_figures_come_from_benchmarks(where: str) -> None:
    benchmarks = (ROOT / "BENCHMARKS.md").read_text(encoding="utf-8")
    quoted = set(NUMBER.findall(SOURCES[where]())) - SETTINGS
    unsourced = sorted(n for n in quoted if n not in benchmarks)
    assert not unsourced, f"{where} quotes {unsourced}, which no bench script printed into BENCHMARKS.md"
