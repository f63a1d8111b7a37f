"""Every figure has a script: the numbers the docs quote about the ONNX Runtime INT8 options are ones a bench
script printed into BENCHMARKS.md (the README section, compilers/onnxruntime/quantize.py docstring, params.yaml's comments)."""
from __future__ import annotations

import re

import pytest
from conftest import ROOT

NUMBER = re.compile(r"(?<![\w.])\d+\.\d+(?![\w.])")


def readme_section(title: str) -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else None]


def ort_int8_docstring() -> str:
    import ast

    return ast.get_docstring(ast.parse((ROOT / "whisper_npu" / "compilers" / "onnxruntime" / "quantize.py").read_text()))


def params_onnxruntime_comments() -> str:
    text = (ROOT / "params.yaml").read_text(encoding="utf-8")
    block = text[text.index("  onnxruntime:\n"):text.index("  numerics_samples:")]
    return "\n".join(line for line in block.splitlines() if line.strip().startswith("#"))


SOURCES = {"README ONNX Runtime section": lambda: readme_section("The ONNX Runtime INT8 backend and its options"),
           "compilers/onnxruntime/quantize.py docstring": ort_int8_docstring,
           "params.yaml compile.onnxruntime comments": params_onnxruntime_comments}
SETTINGS = {"99.999", "0.5"}  # option values (percentile, smooth_quant_alpha), not measurements


@pytest.mark.parametrize("where", sorted(SOURCES))
def test_quoted_int8_figures_come_from_benchmarks(where: str) -> None:
    benchmarks = (ROOT / "BENCHMARKS.md").read_text(encoding="utf-8")
    quoted = set(NUMBER.findall(SOURCES[where]())) - SETTINGS
    unsourced = sorted(n for n in quoted if n not in benchmarks)
    assert not unsourced, f"{where} quotes {unsourced}, which no bench script printed into BENCHMARKS.md"
