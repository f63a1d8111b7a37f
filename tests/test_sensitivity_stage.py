"""The sensitivity stage (stages/sensitivity.py): its params section, the "not run" outputs when disabled, the recipe
files as `-S` overrides that DVC's own override parser applies and that our params accept (both compilers), and the
stage through the real `dvc` CLI on the tiny profile, with its ONNX Runtime recipe applied by `dvc exp run` and
reaching the compiled models. The ranking on a planted sensitive layer is tests/test_sensitivity.py's. Random
weights: no number here says anything about Whisper."""
from __future__ import annotations

import copy
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, copy_project, default_params, run

from stages import sensitivity as stage
from whisper_npu.params.base import ParamsError
from whisper_npu.params.full import parse_params
from whisper_npu.params.sensitivity import SensitivityParams

CHOSEN = {"encoder": ["encoder.1.fc2", "encoder.1.residual.ffn", "encoder.conv1"],
          "decoder": ["decoder.0.self_attn.q_proj", "decoder.lm_head", "decoder.1.encoder_attn.softmax"]}


def applied(params: dict, recipe: str, tmp_path: Path) -> dict:
    """``params`` with the recipe's lines (comments dropped) applied by DVC's own `-S` code (Hydra overrides)."""
    from dvc.utils.hydra import apply_overrides

    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    lines = [ln for ln in recipe.splitlines() if ln and not ln.startswith("#")]
    apply_overrides(str(path), lines)
    return yaml.safe_load(path.read_text())


def sensitivity_section(**changes) -> SensitivityParams:
    return SensitivityParams.model_validate({**default_params()["sensitivity"], **changes})


@pytest.mark.parametrize("key, value, message", [
    ("components", ["encoder", "joiner"], r"sensitivity.components\[1\] = 'joiner': must be one of encoder, decoder"),
    ("components", [], r"sensitivity.components = \[\]: list encoder and/or decoder, each once"),
    ("top_k", -1, r"sensitivity.top_k = -1: must be >= 0"),
    ("samples", 0, r"sensitivity.samples = 0: must be >= 1"),
    ("proxy", "all", r"sensitivity.proxy = 'all': must be one of matmul, npu"),
    ("min_gain_db", -1.0, r"sensitivity.min_gain_db = -1.0: must be >= 0"),
    ("enabled", "yes", r"sensitivity.enabled = 'yes': must be true or false"),
])
def test_params_errors_name_the_key(key, value, message):
    data = default_params()
    data["sensitivity"][key] = value
    with pytest.raises(ParamsError, match=message):
        parse_params(data)
    assert default_params()["sensitivity"]["enabled"] is False   # off by default: `make demo` stays as fast


def test_disabled_stage_is_fast_and_says_not_run(tmp_path):
    """No model, no calibration set is read (the paths do not exist): seconds, and every output says why."""
    out = tmp_path / "sensitivity"
    start = time.time()
    subprocess.run([sys.executable, "-m", "stages.sensitivity", "--params", str(ROOT / "params.yaml"),
                    "--model", str(tmp_path / "none"), "--encoder-calibration", str(tmp_path / "none.txt"),
                    "--decoder-calibration", str(tmp_path / "none.json"), "--out", str(out)],
                   cwd=ROOT, check=True, capture_output=True)
    assert time.time() - start < 30
    report = json.loads((out / "report.json").read_text())
    assert report == {"enabled": False, "ran": False, "reason": stage.NOT_RUN}
    assert json.loads((out / "sqnr.json").read_text()) == []
    assert "did not run" in (out / "groups.md").read_text()
    for name in ("onnxruntime.overrides", "qbcompiler.overrides"):
        text = (out / name).read_text()
        assert text.startswith("# ") and text.count("\n") == 1, text
        # the documented command: no line left to apply, so `dvc exp run` gets no -S at all
        args = subprocess.run(["bash", "-c", f"grep -v '^#' {out / name} | sed 's/^/-S /'"], capture_output=True,
                              text=True, check=False).stdout
        assert args == ""


def test_onnxruntime_recipe_through_dvc_override_parser(tmp_path):
    text = stage.onnxruntime_overrides(CHOSEN, "npu")
    assert not any(ln.startswith("#") for ln in text.splitlines())   # the plain `sed` command works on it
    assert all(" " not in ln for ln in text.splitlines())            # one shell word per line after $(...)
    data = applied(default_params(), text, tmp_path)
    ort = parse_params(data).compile.onnxruntime
    assert (ort.mode, ort.proxy, ort.keep_float, ort.high_precision) == ("static", "npu", [], [])
    assert {k: v.model_dump(exclude_none=True) for k, v in ort.groups.items()} == \
        {n: {"bits": 16} for names in CHOSEN.values() for n in names}


def test_qbcompiler_recipe_parses_into_params(tmp_path):
    """The documented section and field (bit.layerOverrides.activation16Bits, written the way params carry config
    objects: bit.layer_overrides.activation_16bits), layer names from module groups only."""
    from whisper_npu.compilers.mobilint.plan import CONFIG_SECTIONS, _configs

    text = stage.qbcompiler_overrides(CHOSEN)
    lines = text.splitlines()
    assert lines[0].startswith("# ") and "NOT VERIFIED" in lines[0] and "activation16Bits" in lines[0]
    assert "encoder.1.residual.ffn" in lines[1] and "decoder.1.encoder_attn.softmax" in lines[1]   # said, not mapped
    qb = parse_params(applied(default_params(), text, tmp_path)).compile.qbcompiler
    assert qb.encoder_configs == {"bit": {"layer_overrides": {"activation_16bits": [
        "model_encoder_layers_1_fc2", "model_encoder_conv1"]}}}
    assert qb.decoder_configs == {"bit": {"layer_overrides": {"activation_16bits": [
        "model_decoder_layers_0_self_attn_q_proj", "proj_out"]}}}
    assert "bit" in CONFIG_SECTIONS
    for component in ("encoder", "decoder"):   # what the 1.3 plan sends mxq_compile as bit_config
        assert _configs("1.3", component, qb, "1.3.0", None, ())["bit"]["layer_overrides"]["activation_16bits"]
    # other config sections already set are kept (the override merges into them)
    data = default_params()
    data["compile"]["qbcompiler"]["encoder_configs"] = {"calibration": {"mode": 0}}
    qb = parse_params(applied(data, text, tmp_path)).compile.qbcompiler
    assert qb.encoder_configs["calibration"] == {"mode": 0} and "bit" in qb.encoder_configs
    assert stage.qbcompiler_overrides({"encoder": []}).count("\n") == 2   # the note and "no group promoted"


def test_depth_and_decisions():
    assert [stage.depth(g, 4) for g in ("encoder.conv1", "encoder.embed_positions", "encoder.3.fc2",
                                        "encoder.layer_norm", "decoder.lm_head")] == [-1, -1, 3, 4, 4]
    sp = sensitivity_section(min_gain_db=1.0)
    report = {"component": "encoder", "ranking": ["a", "b", "c"],
              "groups": [{"group": "a", "isolation_gain": 3.0}, {"group": "b", "isolation_gain": 0.5},
                         {"group": "c", "isolation_gain": -1.0}, {"group": "d"}]}
    assert stage.promoted(report, sp) == ["a"]
    assert stage.promoted(report, sensitivity_section(min_gain_db=0.0)) == ["a", "b"]   # positive gains only
    assert stage.decision({"group": "d"}, ["a"], 1.0) == "8 bit (not isolated)"


@pytest.mark.slow
def test_stage_through_dvc_and_recipe_round_trip(tiny_pipeline: Path, tmp_path: Path) -> None:
    repo = copy_project(tiny_pipeline, tmp_path / "proj")
    start = time.time()
    run(["dvc", "exp", "run", "-S", "sensitivity.enabled=true", "-S", "sensitivity.samples=1",
         "-S", "sensitivity.top_k=3", "-S", "sensitivity.min_gain_db=0", "-S", "sensitivity.min_kl_reduction=0",
         "sensitivity"], repo)
    study_seconds = time.time() - start
    out = repo / "sensitivity"
    report = json.loads((out / "report.json").read_text())
    assert report["ran"] and set(report["components"]) == {"encoder", "decoder"}
    for component, rep in report["components"].items():
        names = [r["group"] for r in rep["groups"]]
        assert f"{component}.1.fc2" in names and len(rep["ranking"]) == 3, (component, rep["ranking"])
        assert rep["held_out_samples"] == 1
        assert all(r["isolation_gain"] is not None for r in rep["groups"] if r["group"] in rep["ranking"])
    table = (out / "groups.md").read_text()
    assert "| decision |" in table and "| encoder.1.fc2 |" in table and "| decoder.lm_head |" in table
    rows = json.loads((out / "sqnr.json").read_text())
    assert {r["component"] for r in rows} == {"encoder", "decoder"}
    assert {r["depth"] for r in rows if r["component"] == "encoder"} == {-1, 0, 1, 2}
    promoted = report["promoted"]
    assert promoted["encoder"], report   # random weights, but restoring the worst groups to 16 bits helps some
    assert run(["dvc", "metrics", "show", "--json"], repo).returncode == 0
    plots = json.loads(run(["dvc", "plots", "show", "--json"], repo).stdout)["data"]
    (sqnr_plot,) = [v for k, v in plots.items() if k.startswith("SQNR per group against depth")]
    assert len(sqnr_plot[0]["content"]["data"]["values"]) == len(rows)

    # the recipe for qbcompiler: valid params
    qb_text = (out / "qbcompiler.overrides").read_text()
    parse_params(applied(yaml.safe_load((repo / "params.yaml").read_text()), qb_text, tmp_path))

    # the recipe for ONNX Runtime, applied exactly as documented, reaches the compiled models
    before = {c: json.loads((repo / "compiled" / c / "provenance.json").read_text()) for c in ("encoder", "decoder")}
    command = ("dvc exp run $(grep -v '^#' sensitivity/onnxruntime.overrides | sed 's/^/-S /') "
               "compile@encoder compile@decoder")
    run(["bash", "-c", command], repo)
    ort = yaml.safe_load((repo / "params.yaml").read_text())["compile"]["onnxruntime"]
    want = {n: {"bits": 16} for names in promoted.values() for n in names}
    assert ort["groups"] == want and ort["mode"] == "static" and ort["proxy"] == "npu"
    diff = run(["dvc", "params", "diff", "--json"], repo).stdout
    assert "compile.onnxruntime.groups" in diff, diff
    for component in ("encoder", "decoder"):
        prov = json.loads((repo / "compiled" / component / "provenance.json").read_text())
        assert prov != before[component]
        q = prov["quantization"]
        assert q["proxy"] == "npu" and q["groups_overridden"] == sorted(promoted[component]), q
        if promoted[component]:
            model = next((repo / "compiled" / component).glob("*.onnx"))
            assert sixteen_bit_tensors(model), f"{component}: no int16 Q/DQ in {model}"
    print(f"study {study_seconds:.0f} s")


def sixteen_bit_tensors(path: Path) -> list[str]:
    import onnx

    graph = onnx.load(str(path)).graph
    types = {i.name: i.data_type for i in graph.initializer}
    return [n.input[0] for n in graph.node if n.op_type == "QuantizeLinear" and n.input[0] not in types
            and types.get(n.input[2]) == 5]


def test_recipe_keeps_params_valid_when_nothing_is_promoted(tmp_path):
    data = applied(copy.deepcopy(default_params()), stage.onnxruntime_overrides({"encoder": []}, "matmul"), tmp_path)
    assert parse_params(data).compile.onnxruntime.groups == {}
