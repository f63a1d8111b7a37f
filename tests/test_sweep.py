"""The calibration sweep's queue commands (bench/sweep_queue.py) and its table and plot (bench/sweep_table.py),
the latter on the `dvc exp show --json` output recorded from the real sweep (bench/sweep-exp-show.json: the
first session's four experiments; bench/sweep-exp-show-2.json: the other four, run later)."""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from bench import sweep_queue, sweep_table
from whisper_npu.params.full import parse_params
from whisper_npu.preset import merge

ROOT = Path(__file__).resolve().parents[1]
RECORDED = [ROOT / "bench" / "sweep-exp-show.json", ROOT / "bench" / "sweep-exp-show-2.json"]


def _applied(args: list[str]) -> dict:
    """params.yaml with an experiment's -S overrides applied (values parsed as Hydra would: YAML scalars/lists)."""
    preset: dict = {}
    for flag, override in zip(args[::2], args[1::2]):
        assert flag == "-S"
        key, value = override.lstrip("+").split("=", 1)
        node = preset
        *parents, last = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = yaml.safe_load(value)
    return merge(yaml.safe_load((ROOT / "params.yaml").read_text()), preset)


def test_every_experiment_is_valid_params_with_one_knob_changed():
    cmds = sweep_queue.commands(ROOT / "params" / "sweep.yaml", ROOT / "params.yaml", ["audio.asterisk.cache=/d"])
    assert [c[c.index("-n") + 1] for c in cmds] == list(sweep_queue.KNOBS)
    base = None
    for cmd, (name, changes) in zip(cmds, sweep_queue.KNOBS.items()):
        args = cmd[cmd.index("-n") + 2:]
        keys = [o.split("=", 1)[0] for o in args[1::2]]
        assert len(keys) == len(set(keys)), f"{name}: a key given twice"
        params = _applied(args)
        parse_params(params, name)          # raises on an invalid experiment (e.g. more clips than recorded)
        assert params["audio"]["asterisk"]["cache"] == "/d"
        assert params["compile"]["onnxruntime"]["mode"] == "static"
        flat = dict(sweep_table._flat(params))
        if base is None:
            base = flat
            continue
        differing = {k for k in flat if flat[k] != base[k]}
        assert differing == set(changes), name


def test_a_knob_the_profile_does_not_set_is_refused():
    base = ["-S", "calibration.samples_per_language=8"]
    with pytest.raises(SystemExit, match="calibration.translate_ratio"):
        sweep_queue.experiment_args(base, {"calibration.translate_ratio": "0.5"}, [])


@pytest.fixture(scope="module")
def recorded() -> list:
    return [commit for path in RECORDED for commit in json.loads(path.read_text())]


def test_table_from_the_recorded_sweep(recorded):
    exps = sweep_table.experiments(recorded)
    assert set(exps) == set(sweep_queue.KNOBS)     # every experiment of the sweep finished
    table = sweep_table.rows(exps)
    assert {r["experiment"] for r in table} == set(exps)
    for r in table:
        # every number is the score stage's own, for that experiment and language
        ev = exps[r["experiment"]]["metrics"][sweep_table.EVALUATE]["data"]["languages"][r["language"]]
        assert (r["fp32"], r["compiled"], r["delta"]) == (ev["fp32"]["wer"], ev["compiled"]["wer"], ev["delta"]["wer"])
        assert r["low"] <= r["delta"] <= r["high"]
        params = sweep_table.params_of(exps[r["experiment"]])
        changed = sweep_queue.KNOBS[r["experiment"]]
        assert r["knob"] == "baseline" if not changed else r["knob"] != "baseline"
        assert r["samples_per_language"] == params["calibration.samples_per_language"]
    md = sweep_table.markdown(table)
    assert md.count("\n") == len(table) + 2
    for name in exps:
        assert f"| {name} |" in md


def test_plot_draws_every_point(recorded, tmp_path):
    table = sweep_table.rows(sweep_table.experiments(recorded))
    root = ET.fromstring(sweep_table.svg(table))
    circles = root.findall("{http://www.w3.org/2000/svg}circle")
    langs = {r["language"] for r in table}
    base = sum(r["knob"] == "baseline" for r in table)
    # the baseline's points appear in each knob's panel, every other experiment's in its own; plus the legend
    assert len(circles) == base * len(sweep_table.KNOB_KEYS) + (len(table) - base) + len(langs)


def test_main_names_a_missing_baseline(tmp_path):
    f = tmp_path / "show.json"
    f.write_text("[]")
    with pytest.raises(SystemExit, match="no finished experiment sweep-base"):
        sweep_table.main([str(f)])


def test_main_merges_several_exp_show_files(capsys, tmp_path):
    sweep_table.main([str(p) for p in RECORDED] + ["--svg", str(tmp_path / "s.svg")])
    out = capsys.readouterr().out
    for name in sweep_queue.KNOBS:
        assert f"| {name} |" in out
    assert (tmp_path / "s.svg").read_text().startswith("<svg")
