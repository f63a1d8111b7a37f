"""Every bench script's quick mode, run end to end: the tiny random Whisper (the session's ``tiny_model_dir``, so
no download), the smallest sizes. A bench broken by a change elsewhere in the project fails here.

The figures are meaningless at these sizes and never checked (benchmarks print figures; nothing asserts a time);
the tables' shape, and what a bench reads from the pipeline (stage names, log lines, metrics files), are.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from bench import common

ROOT = Path(__file__).resolve().parents[1]

# bench module -> the test below that runs its quick mode (common is the shared helpers, run by every one)
QUICK_TESTS = {
    "calibration_throughput": "test_calibration_throughput_quick",
    "compiled_models": "test_compiled_models_quick",
    "evaluate_speed": "test_run_all_quick_runs_evaluate_speed",
    "run_all": "test_run_all_quick_runs_evaluate_speed",
    "sensitivity_chains": "test_sensitivity_chains_on_the_tiny_pipeline",
    "incremental": "test_incremental_quick_from_the_tiny_pipeline",
    "label_speed": "test_label_speed_quick",
    "memory": "test_memory_quick",
    "static_int8": "test_static_int8_quick",
    "sweep_queue": "test_sweep_queue_dry_run",
    "sweep_table": "test_sweep_table_on_the_recorded_sweep",
    "transcribe_rtf": "test_transcribe_rtf_quick_on_the_real_english_run",
    "weight_quantization": "test_weight_quantization_quick",
}


def test_every_bench_script_has_a_quick_test():
    scripts = {p.stem for p in (ROOT / "bench").glob("*.py")} - {"__init__", "common"}
    assert scripts == set(QUICK_TESTS), "a bench script without a quick run here (or a stale entry)"
    assert all(callable(globals().get(test)) for test in QUICK_TESTS.values())


@pytest.fixture
def tiny(monkeypatch, tiny_model_dir: Path) -> Path:
    """The benches' tiny model is the session's (built once, not once per bench)."""
    monkeypatch.setattr(common, "TINY_MODEL", tiny_model_dir)
    return tiny_model_dir


def markdown(tables: list) -> str:
    assert tables and all(t.rows for t in tables)
    return "\n".join(t.markdown() for t in tables)


@pytest.mark.slow
def test_calibration_throughput_quick(tiny, tmp_path):
    from bench import calibration_throughput

    tables = calibration_throughput.run(["--quick", "--workdir", str(tmp_path)])
    md = markdown(tables)
    assert len(tables[0].rows) == 2 and "tiny random Whisper" in md


@pytest.mark.slow
def test_compiled_models_quick(tiny, tmp_path):
    from bench import compiled_models

    metrics = ROOT / "metrics" / "evaluate.json"   # the score stage's committed output: its note must parse it
    tables = compiled_models.run(["--quick", "--workdir", str(tmp_path), "--evaluate-metrics", str(metrics)])
    markdown(tables)
    assert [r[0] for r in tables[0].rows] == ["torch fp32 (HF, KV cache)", *compiled_models.MODES]
    assert any(n.startswith(f"{metrics} (score stage") for n in tables[0].notes)


@pytest.mark.slow
def test_run_all_quick_runs_evaluate_speed(tiny, tmp_path):
    """run_all's quick mode on one bench (each bench's own quick run is tested apart): evaluate_speed's."""
    from bench import run_all

    out = tmp_path / "run.md"
    text = run_all.run(["--quick", "--only", "evaluate_speed", "--out", str(out)])
    assert out.read_text(encoding="utf-8") == text
    assert "figures are not meaningful" in text
    assert "fp32 reference (transcribe_fp32): batched decode vs batch 1" in text
    assert "(transcribe_compiled): as the stage runs it vs the whole graph per token" in text


@pytest.mark.slow
def test_label_speed_quick(tiny, tmp_path):
    from bench import label_speed

    tables = label_speed.run(["--quick", "--workdir", str(tmp_path)])
    markdown(tables)
    (row,) = tables[0].rows
    assert row[0] == "synthetic"
    assert row[2] >= 0   # the label stage's log line was found (-1 otherwise)


@pytest.mark.slow
def test_memory_quick(tiny, tmp_path):
    """One size (the quick mode's two would double the time, same code)."""
    from bench import memory

    tables = memory.run(["--quick", "--sizes", "2", "--workdir", str(tmp_path)])
    markdown(tables)
    stages = {r[0] for r in tables[0].rows}
    assert stages == {"toolchain", "model", "audio@*", "label@*", "labels", "calibrate_encoder", "calibrate_decoder",
                      "compile@encoder", "compile@decoder", "sensitivity", "mobilint_model", "transcribe_fp32@*",
                      "transcribe_compiled", "score"}


@pytest.mark.slow
def test_incremental_quick_from_the_tiny_pipeline(tiny_pipeline, tmp_path):
    """From a copy of the tests' tiny pipeline (its first run is shared with the other tests), the no-op run and
    the accuracy-budget change, which reruns the score stage alone."""
    from bench import incremental

    tables = incremental.run(["--quick", "--repo", str(tiny_pipeline), "--changes", "score.max_wer_increase",
                              "--workdir", str(tmp_path)])
    markdown(tables)
    rows = {r[0].split(":")[0]: r for r in tables[0].rows}
    assert rows["none (no-op, median of 1)"][1] == "none"
    assert rows["score.max_wer_increase"][1] == "score"


@pytest.mark.slow
@pytest.mark.parametrize("memory", [False, True], ids=["variants", "memory"])
def test_static_int8_quick(tiny, memory):
    from bench import static_int8

    tables = static_int8.run(["--quick", *(["--memory"] if memory else [])])
    markdown(tables)
    if memory:
        assert [r[0] for r in tables[0].rows] == ["encoder", "decoder"]
    else:
        assert [r[0] for r in tables[0].rows] == list(static_int8.DEFAULT_VARIANTS)


def test_sweep_queue_dry_run(capsys):
    from bench import sweep_queue

    sweep_queue.main(["--dry-run", "--preset", str(ROOT / "params" / "sweep.yaml"), "--params",
                      str(ROOT / "params.yaml")])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(sweep_queue.KNOBS)
    assert all(line.startswith("dvc exp run --queue -n sweep-") for line in lines)


def test_sweep_table_on_the_recorded_sweep(capsys, tmp_path):
    from bench import sweep_table

    svg = tmp_path / "sweep.svg"
    sweep_table.main([str(ROOT / "bench" / "sweep-exp-show.json"), str(ROOT / "bench" / "sweep-exp-show-2.json"),
                      "--svg", str(svg)])
    assert capsys.readouterr().out.startswith("| experiment | knob = value |")
    assert svg.read_text(encoding="utf-8").startswith("<svg")


@pytest.mark.slow
def test_transcribe_rtf_quick_on_the_real_english_run(real_english_run):
    """The real whisper-base and its INT8 model from the run the accuracy floor shares; 20 s of its real clips."""
    from bench import transcribe_rtf

    repo = real_english_run
    tables = transcribe_rtf.run(["--quick", "--model", str(repo / "models" / "reference"), "--compiled",
                                 str(repo / "compiled"), "--audio", str(repo / "data" / "audio")])
    markdown(tables)
    (fp32, compiled) = tables[0].rows
    assert fp32[:2] == ["fp32", "torch"] and compiled[:2] == ["compiled", "onnxruntime-dynamic"]
    assert fp32[4] == 1.0 and compiled[5] >= 1 and 0 <= compiled[6] < 0.5


@pytest.mark.slow
def test_sensitivity_chains_on_the_tiny_pipeline(tiny_pipeline):
    """The families study on the tests' tiny pipeline (its reference model and calibration sets), the encoder only:
    one row per family and the all-8-bit row, with finite metrics."""
    import math

    from bench import sensitivity_chains

    (t,) = sensitivity_chains.run(["--workspace", str(tiny_pipeline), "--components", "encoder", "--samples", "1"])
    markdown([t])
    assert [r[0].split(" (")[0] for r in t.rows] == ["none", *sensitivity_chains.FAMILIES]
    assert all(math.isfinite(v) for r in t.rows for v in r[1:])


def test_weight_quantization_quick(tiny):
    """ORT's per-channel loop and the at-once computation on the tiny model's decoder (its lm_head has the real
    vocabulary's 51,865 channels): a row with both times, and the script itself checks the bytes are identical."""
    from bench import weight_quantization

    (t,) = weight_quantization.run(["--quick", "--components", "decoder"])
    markdown([t])
    ((component, loop, once, ratio, same),) = t.rows
    assert component == "decoder" and same == "yes" and loop > 0 and once > 0 and ratio == once / loop
