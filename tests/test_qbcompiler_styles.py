"""The qbcompiler adapter's newer call styles (1.0.1 config objects, 1.2 target_device, 1.3 model_part) and
target devices, against the STAND-IN compiler (tests/standin_qbcompiler: built from Mobilint's v1.3 docs'
signatures; NOT the real compiler), and the newest public STT compile as a preset."""
from __future__ import annotations

import inspect
import json
import shutil
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, default_params, section
from test_compile import (  # noqa: F401
    CALIB_FILE,
    N_CALIB,
    _expected_entries,
    calib_root,
    compile_argv,
    run_main,
    standin,
    toolchain,
    write_params,
)

from whisper_npu.compilers.mobilint import plan as qbcompiler
from whisper_npu.core.errors import StageError
from whisper_npu.params.base import ParamsError
from whisper_npu.params.full import parse_params

SHAPE = (1, 80, 3000)
ET = {"norm_conv": {"apply": True, "learn": True}, "qk": {"apply": True}, "ud": {"apply": True, "learn": True},
      "vo": {"apply": True}, "feed_forward_multi_lut": {"apply": True}, "spin_r2": {"apply": True, "learn": True},
      "qk_rotation": {"apply": True}, "flatten_quant": {"apply": True, "learn": True},
      "optimize_ffn": {"apply": True, "ch_per_ffn": -1}}
BIT = {"transformer": {"mixed_precision": {"activation": {"apply": True}}}}
HESSIAN = {"apply": True, "attributes": {"act_order": True, "block_size": 128, "perc_damp": 0.01}}


def qb_params(**changes):
    """``compile.qbcompiler`` as params.yaml sets it, with ``changes``."""
    return section("compile", qbcompiler=changes).qbcompiler


def latest_params(preset: str = "tutorial-latest") -> dict:
    """params.yaml with params/<preset>.yaml applied the documented way (preset -> dvc -S overrides, applied by
    DVC's own override code)."""
    from dvc.utils.hydra import apply_overrides

    from whisper_npu.preset import overrides
    return _applied(overrides(ROOT / "params" / f"{preset}.yaml", ROOT / "params.yaml"), apply_overrides)


def _applied(args: list[str], apply_overrides) -> dict:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "params.yaml"
        shutil.copy(ROOT / "params.yaml", path)
        apply_overrides(str(path), [a for a in args if a != "-S"])
        return yaml.safe_load(path.read_text())


def test_percentile_preset_is_the_public_decoder_recipe():
    """The percentile/rotation decoder recipe as data: 1.2 calls (backend hf), percentile output calibration with
    Mobilint's nested MaxPercentile, six equivalent transformations, no bit config, no HessianQuant; the tutorial's
    data (20 calibration clips per language, 30 FLEURS test clips scored)."""
    data = latest_params("tutorial-percentile")
    assert data["audio"]["calibration_clips"] == data["calibration"]["samples_per_language"] == 20
    assert data["audio"]["eval_clips"] == 30 and data["audio"]["fleurs"]["eval_split"] == "test"
    p = parse_params(data).compile.qbcompiler
    dec = qbcompiler.plan_calls("1.2", "decoder", p, gpu=True, input_features_shape=SHAPE, version="1.2.0")
    assert dec["mblt_compile"] == {"backend": "hf", "target": "decoder", "device": "cpu", "target_device": "aries-rb"}
    assert dec["configs"] == {
        "calibration": {"output": 0, "mode": 1, "max_percentile": {"percentile": 0.999999}},
        "equivalent_transformation": {k: {"apply": True} for k in ("qk", "ud", "vo", "spin_r2", "qk_rotation")}
        | {"optimize_ffn": {"apply": True, "ch_per_ffn": -1}}}
    assert dec["llm_config"] == {"factory": "LlmConfig", "use_full_seq_length": True}


def test_percentile_preset_through_the_1_2_stand_in(standin, tmp_path, toolchain, tiny_model_dir, calib_root):
    """Its config objects are ones a 1.2 compiler builds (CalibrationConfig.MaxPercentile nested)."""
    calls = standin("1.2.0")
    qb = latest_params("tutorial-percentile")["compile"]["qbcompiler"]
    params = write_params(tmp_path, backend="qbcompiler", qbcompiler=qb)
    assert run_main(compile_argv("decoder", params, toolchain, tiny_model_dir, calib_root, tmp_path)) == 0
    mxq = next(c["kwargs"] for c in calls() if c["fn"] == "mxq_compile")
    assert mxq["calibration_config"] == {"factory": "CalibrationConfig", "output": 0, "mode": 1,
                                         "max_percentile": {"percentile": 0.999999}}
    assert "bit_config" not in mxq and "hessian_quant_config" not in mxq


def test_latest_preset_is_the_newest_tutorial_compile():
    """The 1a5d15de calls with the f3f9d540 / 29501292 config objects, as data, for ARIES and REGULUS; the
    tutorial's data (340 calibration clips, 30 FLEURS test clips per language scored)."""
    data = latest_params()
    assert data["audio"]["calibration_clips"] == data["calibration"]["samples_per_language"] == 20
    assert data["audio"]["eval_clips"] == 30 and data["labels"]["splits"] == ["calibration"]
    p = parse_params(data).compile.qbcompiler
    enc = qbcompiler.plan_calls("1.3", "encoder", p, gpu=True, input_features_shape=SHAPE, version="1.3.0")
    dec = qbcompiler.plan_calls("1.3", "decoder", p, gpu=True, input_features_shape=SHAPE, version="1.3.0")
    assert enc["mblt_compile"] == {"backend": "torch", "model_part": "encoder", "target_device": "aries-rb",
                                   "feed_dict": {"input_features": [1, 80, 3000]}}
    assert dec["mblt_compile"] == {"backend": "torch", "model_part": "decoder", "target_device": "aries-rb",
                                   "model_part_options": {"last_token_only": True},
                                   "dynamic_axes": {"inputs_embeds": [1], "cache_position": [0]}}
    assert enc["mxq_compile"] == dec["mxq_compile"] == {"device": "gpu", "target_device": "aries-rb",
                                                        "inference_scheme": "all"}
    assert enc["configs"] == {"bit": BIT, "equivalent_transformation": ET}
    assert dec["configs"] == {"bit": BIT, "calibration": {"mode": 0, "output": 0}, "equivalent_transformation": ET,
                              "hessian_quant": HESSIAN}
    assert dec["llm_config"] == {"factory": "LlmConfig", "use_full_seq_length": True}
    data["compile"]["qbcompiler"]["target_device"] = "regulus-rb"
    p = parse_params(data).compile.qbcompiler
    dec = qbcompiler.plan_calls("1.3", "decoder", p, gpu=False, input_features_shape=SHAPE, version="1.3.0")
    assert dec["mxq_compile"] == {"device": "cpu", "target_device": "regulus-rb", "inference_scheme": "single"}
    assert dec["llm_config"] == {"factory": "LlmConfig", "use_full_seq_length": True,
                                 "max_sequence_length": 1024, "max_cache_length": 1024}
    cal = parse_params(data).calibration
    assert (cal.prefix_fractions, cal.min_tokens, cal.strip_final_eot, cal.json_layout) == \
        ([0.2, 0.4, 0.6, 0.8, 1.0], 8, True, "minimal")


def test_seed_preset_still_gives_the_012_calls():
    from dvc.utils.hydra import apply_overrides

    from whisper_npu.preset import overrides
    data = _applied(overrides(ROOT / "params" / "tutorial.yaml", ROOT / "params.yaml"), apply_overrides)
    qb = parse_params(data).compile.qbcompiler
    plans = [qbcompiler.plan_calls("0.12", c, qb, gpu=True, input_features_shape=SHAPE, version="0.12.0.0")
             for c in ("encoder", "decoder")]
    assert [p["mxq_compile"] for p in plans] == [{"device": "cuda", "inference_scheme": "global4"},
                                                 {"device": "cuda", "inference_scheme": "single"}]
    assert parse_params(data).calibration.prefix_fractions == [1.0]


@pytest.mark.parametrize("over,key", [
    ({"target_device": "regulus-rb", "encoder_scheme": "global4"}, "compile.qbcompiler.encoder_scheme = global4"),
    ({"target_device": "regulus-rb", "decoder_scheme": "all"}, "compile.qbcompiler.decoder_scheme = all"),
    ({"target_device": "regulus-ra"}, "compile.qbcompiler.target_device = regulus-ra"),
    ({"llm_max_sequence_length": 512, "llm_max_cache_length": 256}, "compile.qbcompiler.llm_max_cache_length"),
    ({"decoder_configs": {"llm": {}}}, "compile.qbcompiler.decoder_configs.llm"),
    ({"encoder_configs": {"quantisation": {}}}, "compile.qbcompiler.encoder_configs.quantisation: unknown"),
    ({"encoder_configs": {"bit": 8}}, "compile.qbcompiler.encoder_configs.bit = 8"),
])
def test_params_refuse_unsupported_combinations(over, key):
    params = default_params()
    params["compile"]["qbcompiler"].update(over)
    with pytest.raises(ParamsError, match=key.replace(".", r"\.").replace("(", r"\(")):
        parse_params(params)


@pytest.mark.parametrize("api,version,over,match", [
    ("0.12", "0.12.0.0", {"target_device": "regulus-rb"}, "target_device = regulus-rb: the installed qbcompiler"),
    ("1.x", "1.0.2", {"target_device": "regulus-rb"}, "REGULUS needs qbcompiler >= 1.1"),
    ("1.1", "1.1.2", {"target_device": "regulus-rb-usb"}, "knows only aries-rb, regulus-rb"),
    ("1.2", "1.2.0", {"decoder_part_options": {"last_token_only": True}},
     "decoder_part_options: needs qbcompiler >= 1.3"),
    ("1.2", "1.2.0", {"target_device": "regulus-rb-usb"}, "regulus-rb-usb: documented from qbcompiler 1.3"),
    ("0.12", "0.12.0.0", {"decoder_configs": {"hessian_quant": {"apply": True}}},
     "compile.qbcompiler.decoder_configs: config objects need qbcompiler.configs"),
    ("0.12", "0.12.0.0", {"llm_max_sequence_length": 448}, "llm_max_sequence_length / llm_max_cache_length"),
    ("1.x", "1.0.1", {"decoder_scheme": "all"}, r"decoder_scheme = all: needs qbcompiler >= 1\.0\.2"),
    # the docs' accuracy knobs, documented from 1.3 (1.4: HessianQuant's solver), refused below, naming the key
    ("1.2", "1.2.0", {"decoder_configs": {"calibration": {"group_lut": {"irls_iter": 3}}}},
     r"decoder_configs\.calibration\.group_lut: documented from qbcompiler 1\.3 on; the installed compiler is 1\.2\.0"),
    ("1.2", "1.2.0", {"decoder_configs": {"calibration": {"layer_overrides": {"method": {}}}}},
     r"decoder_configs\.calibration\.layer_overrides: documented from qbcompiler 1\.3"),
    ("1.2", "1.2.0", {"decoder_configs": {"bit": {"layer_overrides": {"weight_8bits": ["x"]}}}},
     r"decoder_configs\.bit\.layer_overrides\.weight_8bits: documented from qbcompiler 1\.3"),
    ("1.3", "1.3.0", {"decoder_configs": {"hessian_quant": {"apply": True, "solver": "symmetric"}}},
     r"decoder_configs\.hessian_quant\.solver: documented from qbcompiler 1\.4"),
    ("1.2", "1.2.0", {"parser_workers": 2}, r"parser_workers = 2: .* documented from qbcompiler 1\.3"),
])
def test_plan_refuses_what_the_compiler_lacks(api, version, over, match):
    qb = qb_params(**over)
    with pytest.raises(StageError, match=match):
        qbcompiler.plan_calls(api, "decoder", qb, gpu=True, input_features_shape=SHAPE, version=version)


def test_0_12_plan_is_the_seed_exactly():
    """The seed tutorial's calls (bc59d82), with every new key at its default."""
    enc = qbcompiler.plan_calls("0.12", "encoder", qb_params(), gpu=True, input_features_shape=SHAPE,
                                version="0.12.0.0")
    dec = qbcompiler.plan_calls("0.12", "decoder", qb_params(), gpu=True, input_features_shape=SHAPE,
                                version="0.12.0.0")
    assert enc == {"api": "0.12", "mblt_compile": {"target": "encoder", "device": "cpu", "backend": "hf"},
                   "mxq_compile": {"device": "cuda", "inference_scheme": "global4"}, "llm_config": None,
                   "configs": {}, "save_config": False, "load_for_part": False, "warnings": []}
    assert dec["mblt_compile"] == {"target": "decoder", "device": "cpu", "backend": "hf"}
    assert dec["mxq_compile"] == {"device": "cuda", "inference_scheme": "single"}
    assert dec["llm_config"] == {"factory": "get_llm_config",
                                 "kwargs": {"llm_config_apply": True, "use_full_seq_length": True}}


def _latest_qb_over(target: str) -> dict:
    qb = latest_params()["compile"]["qbcompiler"]
    qb["target_device"] = target
    return qb


@pytest.mark.parametrize("version,target", [("1.3.0", "aries-rb"), ("1.3.0", "regulus-rb"), ("1.4.1", "aries-rb")])
@pytest.mark.parametrize("component", ["encoder", "decoder"])
def test_standin_1_3_latest_calls(standin, version, target, component, tmp_path, toolchain, tiny_model_dir,
                                  calib_root):
    """The newest style end to end through the stage: live model + model_part, target_device on both calls,
    config objects built with Mobilint's nesting, config_save_path beside the .mxq and in provenance."""
    calls = standin(version)
    params = write_params(tmp_path, backend="qbcompiler", qbcompiler=_latest_qb_over(target))
    assert run_main(compile_argv(component, params, toolchain, tiny_model_dir, calib_root, tmp_path)) == 0
    out = tmp_path / "compiled" / component
    stem = f"whisper-tiny-random_{component}"
    recorded = calls()
    loads = [c["kwargs"] for c in recorded if c["fn"] == "load_for_part"]
    mblt, mxq = (c["kwargs"] for c in recorded if c["fn"] in ("mblt_compile", "mxq_compile"))
    # 1.4: the model comes from the compiler's own load_for_part (the newest tutorial), given the local folder
    assert loads == ([{"model_id": str((tiny_model_dir / "hf").resolve()), "part": component,
                       "dtype": "torch.float32", "device": "cpu"}] if version >= "1.4" else [])
    expected_mblt = {"model": "WhisperForConditionalGeneration", "backend": "torch", "model_part": component,
                     "target_device": target, "mblt_save_path": mblt["mblt_save_path"]}
    if component == "encoder":
        expected_mblt["feed_dict"] = {"input_features": [1, 80, 3000]}
    else:
        expected_mblt.update(model_part_options={"last_token_only": True},
                             dynamic_axes={"inputs_embeds": [1], "cache_position": [0]})
    assert mblt == expected_mblt
    # the equivalent transformation wrote its rotations into the compiler's working directory: kept beside the
    # artifact, listed in provenance, never left in the folder the stage ran from
    rotations = f"spinWeight/{stem}/R2/layer_0.pth"
    assert (out / f"{stem}.workdir" / rotations).is_file() and not Path("spinWeight").exists()
    assert json.loads((out / "provenance.json").read_text())["resolved"]["workdir_files"] == [rotations]
    scheme = "single" if target == "regulus-rb" else "all"
    expected = {"model": mblt["mblt_save_path"], "calib_data_path": mxq["calib_data_path"],
                "save_path": mxq["save_path"], "device": "cpu", "target_device": target, "inference_scheme": scheme,
                "config_save_path": mxq["config_save_path"],
                "calib_entries": _expected_entries(calib_root, component),
                "equivalent_transformation_config": {"factory": "EquivalentTransformationConfig", **ET},
                "bit_config": {"factory": "BitConfig", **BIT}}
    if component == "decoder":
        llm = {"calibration": {"use_full_seq_length": True}}
        if target == "regulus-rb":
            llm.update(max_sequence_length=1024, max_cache_length=1024)
        expected.update(calibration_config={"factory": "CalibrationConfig", "output": 0, "mode": 0},
                        hessian_quant_config={"factory": "HessianQuantConfig", **HESSIAN},
                        llm_config={"factory": "LlmConfig", "apply": True, "attributes": llm})
    assert mxq == expected
    assert Path(mxq["config_save_path"]).is_absolute() and Path(mxq["config_save_path"]).name == f"{stem}.config.yaml"
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["artifacts"]["compile_config"] == f"{stem}.config.yaml" and (out / f"{stem}.config.yaml").is_file()
    assert prov["resolved"]["compiler_config"]["inferenceScheme"] == scheme
    assert prov["resolved"]["calls"]["mxq_compile"]["inference_scheme"] == scheme
    assert json.loads((out / f"{stem}.mxq").read_text())["target_device"] == target
    assert str(tmp_path) not in (out / "provenance.json").read_text(), "no absolute paths in provenance"


def test_standin_1_2_target_device_with_hf(standin, tmp_path, toolchain, tiny_model_dir, calib_root):
    calls = standin("1.2.1")
    params = write_params(tmp_path, backend="qbcompiler", qbcompiler={"target_device": "regulus-rb"})
    assert run_main(compile_argv("decoder", params, toolchain, tiny_model_dir, calib_root, tmp_path)) == 0
    mblt, mxq = (c["kwargs"] for c in calls())
    assert {k: mblt[k] for k in ("backend", "target", "target_device", "device")} == \
        {"backend": "hf", "target": "decoder", "target_device": "regulus-rb", "device": "cpu"}
    assert (mxq["target_device"], mxq["inference_scheme"]) == ("regulus-rb", "single")
    assert mxq["llm_config"]["attributes"]["max_cache_length"] == 1024 and "config_save_path" not in mxq


KNOBS = {"calibration": {"layer_overrides": {"method": {"model_decoder_layers_0_fc2": "max"}},
                         "group_lut": {"irls_iter": 3, "dro_eps": 0.0, "cover_floor": 0.85},
                         "optimize_lut": {"optimization_level": 1}},
         "bit": {"layer_overrides": {"weight_8bits": ["model_decoder_layers_0_fc1"]}}}


def test_accuracy_knobs_reach_a_1_3_compiler_and_provenance(standin, tmp_path, toolchain, tiny_model_dir,
                                                            calib_root, monkeypatch):
    """The docs' "Accuracy Degradation Handling" knobs as config objects (Python names by the Pydantic alias rule,
    docs/mobilint.md) and the parser's worker count as its environment variable; both recorded in provenance."""
    calls = standin("1.3.0")
    seen = {}
    import qbcompiler as standin_module  # the stand-in, first on sys.path

    real = standin_module.mblt_compile

    def mblt_compile(**kwargs):
        seen["workers"] = __import__("os").environ.get("MBLT_HL_PARSER_NUM_WORK")
        return real(**kwargs)
    monkeypatch.setattr(standin_module, "mblt_compile", mblt_compile)
    params = write_params(tmp_path, backend="qbcompiler", qbcompiler={"decoder_configs": KNOBS, "parser_workers": 2})
    assert run_main(compile_argv("decoder", params, toolchain, tiny_model_dir, calib_root, tmp_path)) == 0
    mxq = next(c["kwargs"] for c in calls() if c["fn"] == "mxq_compile")
    assert mxq["calibration_config"] == {"factory": "CalibrationConfig", **KNOBS["calibration"]}
    assert mxq["bit_config"] == {"factory": "BitConfig", **KNOBS["bit"]}
    assert seen["workers"] == "2" and "MBLT_HL_PARSER_NUM_WORK" not in __import__("os").environ
    resolved = json.loads((tmp_path / "compiled" / "decoder" / "provenance.json").read_text())["resolved"]
    assert resolved["calls"]["configs"] == KNOBS and resolved["parser_workers"] == 2


def test_standin_refuses_an_undocumented_config_field(standin, tmp_path, toolchain, tiny_model_dir, calib_root,
                                                      capsys):
    calls = standin("1.3.0")
    params = write_params(tmp_path, backend="qbcompiler",
                          qbcompiler={"decoder_configs": {"hessian_quant": {"apply": True, "blocksize": 3}}})
    assert run_main(compile_argv("decoder", params, toolchain, tiny_model_dir, calib_root, tmp_path)) == 1
    err = capsys.readouterr().err
    assert "compile.qbcompiler.decoder_configs.hessian_quant: HessianQuantConfig refused it" in err
    assert calls() == [], "refused before the parse"
    assert not (tmp_path / "compiled" / "decoder").exists()


def test_missing_config_class_names_the_key(standin, tmp_path, toolchain, tiny_model_dir, calib_root, capsys):
    standin("1.3.0")   # LayerBiasCorrectionConfig exists in 1.3 only; BiasCorrectionConfig from 1.4
    params = write_params(tmp_path, backend="qbcompiler",
                          qbcompiler={"encoder_configs": {"bias_correction": {"apply": False}}})
    assert run_main(compile_argv("encoder", params, toolchain, tiny_model_dir, calib_root, tmp_path)) == 1
    assert "encoder_configs.bias_correction: qbcompiler 1.3.0 has no qbcompiler.configs.BiasCorrectionConfig" in \
        capsys.readouterr().err


def test_feature_detection_not_version(standin, monkeypatch):
    """A 1.2-numbered build whose mxq_compile lacks target_device is driven in the 1.x style; a 1.1 build that takes
    it gets the 1.1 target names; what decides is the probed surface."""
    from whisper_npu.compilers.mobilint import sdk_side

    standin("1.2.0")
    import qbcompiler as qb
    sig = inspect.signature(qb.mxq_compile)
    assert qbcompiler.call_style(sdk_side.probe()["compiler"]).api == "1.2"
    monkeypatch.setattr(qb.mxq_compile, "__signature__", sig.replace(parameters=[
        p for p in sig.parameters.values() if p.name != "target_device"]))
    assert qbcompiler.call_style(sdk_side.probe()["compiler"]).api == "1.x"
    probe = {**sdk_side.probe()["compiler"], "version": "1.1.2", "mxq_compile": ["model", "target_device", "**"]}
    assert qbcompiler.call_style(probe).api == "1.1"
