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
from whisper_npu import promotion as promotion_mod
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
    ("wer_languages", ["en_us", "en_us"], r"sensitivity.wer_languages = \['en_us', 'en_us'\]: each language once"),
    ("wer_clips", 0, r"sensitivity.wer_clips = 0: must be >= 1"),
    ("max_wer_increase", -0.01, r"sensitivity.max_wer_increase = -0.01: must be >= 0"),
    ("range_methods", ["minmax", "max"], r"sensitivity.range_methods\[1\] = 'max': must be one of minmax, percentile"),
    ("range_methods", ["entropy", "entropy"],
     r"sensitivity.range_methods = \['entropy', 'entropy'\]: each method once"),
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
                    "--decoder-calibration", str(tmp_path / "none.json"), "--audio", str(tmp_path / "none"),
                    "--fp32", str(tmp_path / "none"), "--out", str(out)],
                   cwd=ROOT, check=True, capture_output=True)
    assert time.time() - start < 30
    report = json.loads((out / "report.json").read_text())
    assert report == {"enabled": False, "ran": False, "reason": stage.NOT_RUN}
    assert json.loads((out / "sqnr.json").read_text()) == []
    assert json.loads((out / "promotion.json").read_text()) == []
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


def test_recipe_with_range_methods_round_trip(tmp_path):
    """The study's range methods reach compile.onnxruntime.groups through DVC's override parser for the groups
    that stay at 8 bits (a promoted group keeps its min/max: the methods were chosen for 8 bits); for qbcompiler they
    are a comment (the value format of calibration.layerOverrides.method is not documented), and the file still
    parses into params."""
    methods = {"encoder.0.self_attn.softmax": "minmax", "encoder.1.fc2": "percentile", "decoder.lm_head": "entropy",
               "decoder.0.fc1": "percentile"}
    data = applied(default_params(), stage.onnxruntime_overrides(CHOSEN, "npu", methods), tmp_path)
    groups = {k: v.model_dump(exclude_none=True) for k, v in parse_params(data).compile.onnxruntime.groups.items()}
    want = {n: {"bits": 16} for names in CHOSEN.values() for n in names}
    want.update({"encoder.0.self_attn.softmax": {"method": "minmax"}, "decoder.0.fc1": {"method": "percentile"}})
    assert groups == want
    text = stage.qbcompiler_overrides(CHOSEN, methods)
    (note,) = [ln for ln in text.splitlines() if "range methods" in ln]
    assert note.startswith("# ") and "NOT applied" in note and "layerOverrides.method" in note
    assert "model_encoder_layers_1_fc2=MaxPercentile" in note and "proj_out=Histogram" in note
    assert "encoder.0.self_attn.softmax=Max" in note   # an op group: no layer name to guess
    qb = parse_params(applied(default_params(), text, tmp_path)).compile.qbcompiler
    assert "calibration" not in qb.encoder_configs and qb.encoder_configs["bit"]


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
    # WER-checked promotion on the tiny profile's two languages; the random model's WER is meaningless, so the goal is
    # set where the first step passes (the loop's decisions are test_promotion_stops_at_a_failing_language's)
    run(["dvc", "exp", "run", "-S", "sensitivity.enabled=true", "-S", "sensitivity.samples=1",
         "-S", "sensitivity.top_k=3", "-S", "sensitivity.wer_languages=[en_us,es_419]",
         "-S", "sensitivity.max_wer_increase=100", "-S", "sensitivity.max_steps=2",
         "-S", "sensitivity.range_methods=[minmax,percentile,entropy]", "sensitivity"], repo)
    study_seconds = time.time() - start
    out = repo / "sensitivity"
    report = json.loads((out / "report.json").read_text())
    assert report["ran"] and set(report["components"]) == {"encoder", "decoder"}
    for component, rep in report["components"].items():
        names = [r["group"] for r in rep["groups"]]
        singles = [n for n in rep["ranking"] if not n.startswith("family:")]
        assert f"{component}.1.fc2" in names and len(singles) == 3, (component, rep["ranking"])
        families = {r["group"]: r for r in rep["groups"] if r["group"].startswith("family:")}
        assert set(families) == set(rep["ranking"]) - set(singles)
        assert {"family:fc2", "family:residual", "family:layer_norm", "family:ends"} <= set(families)   # npu roles
        assert set(families["family:ends"]["chain"]) == ({"encoder.conv1", "encoder.conv2", "encoder.embed_positions"}
                                                         if component == "encoder" else {"decoder.lm_head"})
        assert set(families["family:fc2"]["chain"]) == {f"{component}.0.fc2", f"{component}.1.fc2"}
        assert rep["held_out_samples"] == 1
        assert all(r["isolation_gain"] is not None for r in rep["groups"] if r["group"] in rep["ranking"])
        chosen = {r["group"]: r["range_method"] for r in rep["groups"] if r.get("range_method")}
        assert chosen and all(report["range_methods"][g] == m for g, m in chosen.items())
        softmax = [r for r in rep["groups"] if r["group"].endswith(".softmax")]   # ORT's fixed [0, 1] grid zeroes
        assert softmax and all(r["range_method"] for r in softmax), softmax     # a random model's attention weights
    table = (out / "groups.md").read_text()
    assert "range method (local SQNR dB: all 8-bit / minmax / percentile / entropy) | decision |" in table
    assert "| decision |" in table and "| encoder.1.fc2 |" in table and "| decoder.lm_head |" in table
    rows = json.loads((out / "sqnr.json").read_text())
    assert {r["component"] for r in rows} == {"encoder", "decoder"}
    assert {r["depth"] for r in rows if r["component"] == "encoder"} == {-1, 0, 1, 2}
    promoted = report["promoted"]
    promotion = report["promotion"]
    assert report["rule"] == "wer" and promotion["chosen"] == 1 and len(promotion["steps"]) == 1
    (step,) = promotion["steps"]
    assert set(step["languages"]) == {"en_us", "es_419"} and step["passed"]
    for r in step["languages"].values():
        assert r["clips"] == 1 and r["passed"] and r["delta"] == round(r["wer"] - r["fp32_wer"], 6), r
        assert r["rtf"] > 0
        assert r["ci95"]["low"] <= r["delta"] <= r["ci95"]["high"]
    for component, rep in report["components"].items():   # step 1: each component's best family, whole
        by_name = {r["group"]: r for r in rep["groups"]}
        best = [n for n in rep["ranking"] if n.startswith("family:")][:1]
        assert step["families"][component] == best
        assert promoted[component] == sorted(g for n in best for g in by_name[n]["chain"])
    assert step["groups"] == sum(len(v) for v in promoted.values()) > 0
    curve = json.loads((out / "promotion.json").read_text())
    assert [(r["step"], r["lang"]) for r in curve] == [(1, "en_us"), (1, "es_419")]
    assert "## Promotion checked by WER" in table and "Recipe: step 1." in table
    assert run(["dvc", "metrics", "show", "--json"], repo).returncode == 0
    plots = json.loads(run(["dvc", "plots", "show", "--json"], repo).stdout)["data"]
    (sqnr_plot,) = [v for k, v in plots.items() if k.startswith("SQNR per group against depth")]
    assert len(sqnr_plot[0]["content"]["data"]["values"]) == len(rows)
    (wer_plot,) = [v for k, v in plots.items() if k.startswith("WER increase per language against groups")]
    assert len(wer_plot[0]["content"]["data"]["values"]) == len(curve)

    # the recipe for qbcompiler: valid params
    qb_text = (out / "qbcompiler.overrides").read_text()
    parse_params(applied(yaml.safe_load((repo / "params.yaml").read_text()), qb_text, tmp_path))

    # the recipe for ONNX Runtime, applied exactly as documented, reaches the compiled models
    before = {c: json.loads((repo / "compiled" / c / "provenance.json").read_text()) for c in ("encoder", "decoder")}
    command = ("dvc exp run $(grep -v '^#' sensitivity/onnxruntime.overrides | sed 's/^/-S /') "
               "compile@encoder compile@decoder")
    run(["bash", "-c", command], repo)
    ort = yaml.safe_load((repo / "params.yaml").read_text())["compile"]["onnxruntime"]
    methods = report["range_methods"]
    want = promotion_mod.recipe_groups(promoted, methods)
    assert ort["groups"] == want and ort["mode"] == "static" and ort["proxy"] == "npu"
    diff = run(["dvc", "params", "diff", "--json"], repo).stdout
    assert "compile.onnxruntime.groups" in diff, diff
    for component in ("encoder", "decoder"):
        prov = json.loads((repo / "compiled" / component / "provenance.json").read_text())
        assert prov != before[component]
        q = prov["quantization"]
        assert q["proxy"] == "npu" and q["groups_overridden"] == sorted(g for g in want if g.startswith(component)), q
        assert any(g.endswith(".softmax") for g in q["groups_overridden"]), q   # the study's measured ranges
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


def family_report(component: str, gains: dict[str, float]) -> dict:
    """A study report with role families only: ``gains`` family -> isolation gain (two groups each)."""
    rows = [{"group": f"family:{f}", "chain": [f"{component}.0.{f}", f"{component}.1.{f}"], "isolation_gain": g}
            for f, g in gains.items()]
    return {"component": component, "groups": rows,
            "ranking": [r["group"] for r in sorted(rows, key=lambda r: -r["isolation_gain"])]}


def test_promotion_steps_follow_the_family_ranking():
    from whisper_npu import promotion

    reports = {"encoder": family_report("encoder", {"fc2": 1.0, "residual": 4.0, "softmax": -0.5}),
               "decoder": family_report("decoder", {"layer_norm": 0.2})}
    # families that lose alone stay in, last (whisper-base's encoder fc2 is needed with the others)
    assert promotion.ranked_families(reports["encoder"]) == ["family:residual", "family:fc2", "family:softmax"]
    assert promotion.steps_available(reports) == 3
    assert promotion.step_groups(reports, 1) == {"encoder": ["encoder.0.residual", "encoder.1.residual"],
                                                 "decoder": ["decoder.0.layer_norm", "decoder.1.layer_norm"]}
    assert promotion.step_groups(reports, 2)["encoder"] == ["encoder.0.fc2", "encoder.0.residual", "encoder.1.fc2",
                                                            "encoder.1.residual"]
    assert promotion.step_groups(reports, 2)["decoder"] == promotion.step_groups(reports, 1)["decoder"]
    cp = parse_params(default_params()).compile
    cand = promotion.candidate_params(cp, "npu", promotion.step_groups(reports, 1)).onnxruntime
    assert (cand.mode, cand.proxy, cand.keep_float, cand.high_precision) == ("static", "npu", [], [])
    assert {k: v.model_dump(exclude_none=True) for k, v in cand.groups.items()} == \
        {g: {"bits": 16} for g in ("encoder.0.residual", "encoder.1.residual", "decoder.0.layer_norm",
                                  "decoder.1.layer_norm")}


def _promote_with_standins(tiny_pipeline: Path, monkeypatch, search: str, bad: set[tuple[int, str]]):
    """``promotion.promote`` on two languages of the tiny pipeline with the compiled model's decode replaced (named
    stand-in: hypotheses chosen per step; a bad one is the fp32 text with 200 inserted words, so its WER is above
    fp32's). Returns (result, decoded systems in order, step of each encoder compile, reports)."""
    from whisper_npu import promotion
    from whisper_npu.core.files import read_jsonl
    from whisper_npu.decoding import run as run_mod
    from whisper_npu.runtimes import onnxruntime as ort_runtime

    fp32 = {r["id"]: r["text"] for lang in ("en_us", "es_419")
            for r in read_jsonl(tiny_pipeline / "data" / "transcripts" / "fp32" / f"{lang}.jsonl")}
    reports = {"encoder": family_report("encoder", {"fc2": 1.0, "residual": 4.0, "attention": 0.5}),
               "decoder": family_report("decoder", {"layer_norm": 0.2})}
    by_groups = {tuple(sorted(g for gs in promotion.step_groups(reports, k).values() for g in gs)): k
                 for k in (1, 2, 3)}
    current, decoded, compiled = {"k": 0}, [], []

    def fake_run_clips(system, backend, clips, features, cfg, to_text, batch_size):
        decoded.append(system)
        garbled = (current["k"], clips[0].lang) in bad
        return [{"id": c.id, "lang": c.lang, "seconds": 0.1,
                 "text": fp32[c.id] + " zzz" * 200 if garbled else fp32[c.id]} for c in clips]

    def fake_compile(component, candidate, out_dir):
        current["k"] = by_groups[tuple(sorted(candidate.onnxruntime.groups))]   # the step, from the recipe itself
        if component == "encoder":
            compiled.append(current["k"])

    monkeypatch.setattr(run_mod, "run_clips", fake_run_clips)
    monkeypatch.setattr(ort_runtime, "load_ort_backend", lambda enc, dec: object())
    raw = default_params()
    raw["sensitivity"].update(wer_languages=["en_us", "es_419"], wer_clips=1, max_steps=5, max_wer_increase=0.01,
                              search=search)
    full = parse_params(raw)
    out = promotion.promote(reports, fake_compile, model_dir=tiny_pipeline / "models" / "reference", cp=full.compile,
                            sp=full.sensitivity, tp=full.transcribe, audio_root=tiny_pipeline / "data" / "audio",
                            fp32_dir=tiny_pipeline / "data" / "transcripts" / "fp32", bootstrap_samples=200, seed=0)
    return out, decoded, compiled, reports


@pytest.mark.slow
def test_promotion_stops_at_a_failing_language(tiny_pipeline: Path, monkeypatch, tmp_path):
    """``search: linear``: step 1 garbles en_us, so it stops there (es_419 not decoded); step 2 garbles es_419
    (decoded after en_us); step 3 decodes es_419 first, matches fp32 everywhere and is the recipe."""
    from whisper_npu import promotion

    out, decoded, compiled, reports = _promote_with_standins(tiny_pipeline, monkeypatch, "linear",
                                                             {(1, "en_us"), (2, "es_419")})
    assert decoded == ["step 1 en_us", "step 2 en_us", "step 2 es_419", "step 3 es_419", "step 3 en_us"]
    assert compiled == [1, 2, 3]
    s1, s2, s3 = out["steps"]
    assert not s1["passed"] and list(s1["languages"]) == ["en_us"] and s1["languages"]["en_us"]["delta"] > 0.01
    assert not s2["passed"] and s2["languages"]["en_us"]["passed"] and not s2["languages"]["es_419"]["passed"]
    assert s3["passed"] and all(r["delta"] == 0 and r["passed"] for r in s3["languages"].values())
    assert out["chosen"] == 3 and out["promoted"] == promotion.step_groups(reports, 3)
    text = promotion.markdown(out)
    assert "Recipe: step 3." in text and "not decoded" in text   # es_419 at step 1
    rows = promotion.curve_rows(out)
    assert [(r["step"], r["lang"]) for r in rows] == [(1, "en_us"), (2, "en_us"), (2, "es_419"), (3, "en_us"),
                                                      (3, "es_419")]
    with pytest.raises(Exception, match="sensitivity.wer_languages entry 'fr_fr'"):
        promotion.fp32_rows(tiny_pipeline / "data" / "transcripts" / "fp32", "fr_fr")


@pytest.mark.slow
@pytest.mark.parametrize("bad, decoded, chosen", [
    # the middle step fails on es_419, so only the last is left: 2 steps decoded where linear decodes 3
    ({(1, "en_us"), (2, "es_419")}, ["step 2 en_us", "step 2 es_419", "step 3 es_419", "step 3 en_us"], 3),
    # the middle step passes and step 1 fails: step 2 is the smallest passing one
    ({(1, "en_us")}, ["step 2 en_us", "step 2 es_419", "step 1 en_us"], 2),
    # nothing passes: the most promoted step tried is the one reported
    ({(k, "en_us") for k in (1, 2, 3)}, ["step 2 en_us", "step 3 en_us"], None),
])
def test_promotion_bisects_to_the_smallest_passing_step(tiny_pipeline: Path, monkeypatch, bad, decoded, chosen):
    from whisper_npu import promotion

    out, got, _, reports = _promote_with_standins(tiny_pipeline, monkeypatch, "bisect", bad)
    assert got == decoded and out["chosen"] == chosen and out["search"] == "bisect"
    assert [s["step"] for s in out["steps"]] == sorted({int(d.split()[1]) for d in decoded})   # in step order
    assert out["promoted"] == promotion.step_groups(reports, chosen or 3)
