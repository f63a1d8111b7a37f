"""params.yaml loads into typed, frozen sections; every kind of bad value fails before any work, naming the key."""
from __future__ import annotations

import copy
import importlib
import re
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from whisper_npu.params.base import ParamsError
from whisper_npu.params.full import Params, load_params, parse_params

ROOT = Path(__file__).resolve().parents[1]


def base() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def with_value(key: str, value) -> dict:
    data = copy.deepcopy(base())
    *parents, last = key.split(".")
    node = data
    for p in parents:
        node = node[p]
    node[last] = value
    return data


def test_default_params_load():
    p = load_params(ROOT / "params.yaml")
    assert isinstance(p, Params)
    assert p.model.model_name == "whisper-base"
    assert len(p.languages) == 17
    assert p.calibration.translate_ratio == 0.2


def test_params_yaml_is_the_one_place_defaults_are_written():
    """Every key of the schema is required (no default in code; audio.per_language entries are overrides whose
    unset keys mean "the audio value"), so params.yaml spells out every knob and DVC tracks each one."""
    def optional(model, path=""):
        for name, f in model.model_fields.items():
            ann = f.annotation
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                yield from optional(ann, f"{path}{name}.")
            elif not f.is_required():
                yield f"{path}{name}"
    assert list(optional(Params)) == []
    data = base()
    del data["calibration"]["translate_ratio"]
    with pytest.raises(ParamsError,
                       match=r"params.yaml: calibration.translate_ratio: missing; params.yaml must set it"):
        parse_params(data, "params.yaml")


@pytest.mark.parametrize("key, value, message", [
    # unknown keys, at the top and in a section
    ("colour", "blue", r"colour: unknown key; allowed in params: seed, languages"),
    ("calibration.translate_rato", 0.2, r"calibration.translate_rato: unknown key; allowed in calibration:"),
    # wrong types
    ("seed", "zero", r"seed = 'zero': must be an integer"),
    ("audio.calibration_clips", 2.5, r"audio.calibration_clips = 2.5: must be an integer"),
    ("audio.calibration_clips", True, r"audio.calibration_clips = True: must be an integer"),
    ("score.strict", "yes", r"score.strict = 'yes': must be true or false"),
    ("calibration.translate_ratio", "0.2", r"calibration.translate_ratio = '0.2': must be a number"),
    ("languages", "en_us", r"languages = 'en_us': must be a list"),
    ("model", "whisper-base", r"model = 'whisper-base': must be a mapping"),
    # out of range
    ("audio.calibration_clips", -3, r"audio.calibration_clips = -3: must be >= 1"),
    ("audio.eval_clips", -1, r"audio.eval_clips = -1: must be >= 0"),
    ("seed", -1, r"seed = -1: must be >= 0"),
    ("calibration.translate_ratio", 1.5, r"calibration.translate_ratio = 1.5: must be <= 1"),
    ("calibration.translate_ratio", -0.1, r"calibration.translate_ratio = -0.1: must be >= 0"),
    ("audio.max_skipped_fraction", 2, r"audio.max_skipped_fraction = 2.0: must be <= 1"),
    ("transcribe.max_new_tokens", 1000, r"transcribe.max_new_tokens = 1000: must be <= 440"),
    # unknown choices
    ("compile.backend", "tensorrt", r"compile.backend = 'tensorrt': must be one of auto, qbcompiler, onnxruntime"),
    ("audio.source", "youtube", r"audio.source = 'youtube': must be one of synth, fleurs, local"),
    ("compile.onnxruntime.mode", "int4", r"compile.onnxruntime.mode = 'int4': must be one of dynamic, static"),
    ("compile.qbcompiler.encoder_scheme", "global16", r"encoder_scheme = 'global16': must be one of"),
    ("calibration.text_source", "gpt", r"calibration.text_source = 'gpt': must be one of generated, labels, reference"),
    # list contents and cross-key rules
    ("languages", ["en_us", "xx_yy"], r"languages\[1\] = 'xx_yy': unknown; allowed: ar_eg, "),
    ("languages", [], r"languages = \[\]: at least one language"),
    ("languages", ["en_us", "en_us"], r"languages: 'en_us' is listed twice"),
    ("model.id", "whisper-large", r"model.id = 'whisper-large': with model.source = pypi must be one of"),
    ("calibration.samples_per_language", 7, r"calibration.samples_per_language = 7: must be <= "
                                            r"audio.calibration_clips = 6"),
    # the key audio.calibration_clips replaced
    ("audio.clips", 8, r"audio.clips: no longer a key: calibration_clips replaced it \(the calibration pool per "
                       r"language\), with eval_clips evaluation clips on top of it, disjoint; the old clips = "
                       r"calibration_clips \+ eval_clips"),
    ("audio.synth.rate", [170, 135], r"audio.synth.rate = \[170, 135\]: must be \[min, max\]"),
    ("audio.synth.pitch", [0, 120], r"audio.synth.pitch = \[0, 120\]: must be \[min, max\]"),
    ("audio.synth.variants", [3], r"audio.synth.variants\[0\] = 3: must be a string"),
    ("compile.onnxruntime.op_types", ["MatMul", 4], r"compile.onnxruntime.op_types\[1\] = 4: must be a string"),
    ("labels.splits", ["train"], r"labels.splits\[0\] = 'train': unknown; allowed: calibration, evaluation"),
    ("labels.splits", [], r"labels.splits = \[\]: list calibration and/or evaluation, each once"),
    ("labels.splits", ["calibration", "calibration"], r"labels.splits = .*each once"),
    ("labels.splits", "calibration", r"labels.splits = 'calibration': must be a list"),
    ("labels.batch_size", 0, r"labels.batch_size = 0: must be >= 1"),
    # NPU placement: form, then the target and an explicit compile scheme
    ("npu.require_compiled", "yes", r"npu.require_compiled = 'yes': must be true or false"),
    ("npu.encoder.dev_no", -1, r"npu.encoder.dev_no = -1: must be >= 0"),
    ("npu.encoder.core_mode", "all", r"npu.encoder.core_mode = 'all': must be one of single, multi, global4, global8"),
    ("npu.decoder.cores", [[2, 0]], r"npu.decoder.cores\[0\] = \[2, 0\]: cluster must be 0-1 and core 0-3"),
    ("npu.decoder.cores", [["1", "0"]], r"npu.decoder.cores\[0\] = \['1', '0'\] is not a \[cluster, core\] pair"),
    ("npu.decoder.cores", [60], r"npu.decoder.cores\[0\] = 60 is not a \[cluster, core\] pair"),
    ("npu.decoder.cores", [], r"npu.decoder.cores = \[\]: name at least one \[cluster, core\]"),
    ("npu.decoder.cores", "1:0", r"npu.decoder.cores = '1:0': must be auto or a list of \[cluster, core\] pairs"),
    ("npu.decoder.cores", [[0, 1], [0, 1]], r"npu.decoder.cores = \[\[0, 1\], \[0, 1\]\]: a core is listed twice"),
    ("npu.encoder.core_mode", "global4", r"npu.encoder.cores = auto: Mobilint's placement is single-core; with "
                                         r"npu.encoder.core_mode = global4 list the cores"),
    ("compile.qbcompiler.encoder_scheme", "global4",
     r"npu.encoder.core_mode = single: an MXQ compiled with inference scheme 'global4' runs in global4"),
])
def test_bad_value_names_key_value_and_allowed(key, value, message):
    with pytest.raises(ParamsError) as err:
        parse_params(with_value(key, value), "params.yaml")
    text = str(err.value)
    assert text.startswith("params.yaml: "), text
    assert re.search(message, text), text


def test_label_splits_must_cover_what_calibration_reads():
    data = with_value("labels.splits", ["evaluation"])
    data["calibration"]["text_source"] = "generated"
    assert parse_params(data).labels.splits == ["evaluation"]
    data["calibration"]["text_source"] = "labels"
    with pytest.raises(ParamsError, match=r"labels.splits = \['evaluation'\]: calibration.text_source = labels"):
        parse_params(data)
    assert base()["labels"]["splits"] == ["calibration"]  # evaluation labels are never read: not made by default


def test_labels_can_be_off_only_when_nothing_reads_them():
    data = with_value("labels.enabled", False)
    data["calibration"]["text_source"] = "generated"
    assert parse_params(data).labels.enabled is False
    data["calibration"]["text_source"] = "labels"
    with pytest.raises(ParamsError, match=r"labels.enabled = false: calibration.text_source = labels reads"):
        parse_params(data)


def test_local_source_needs_a_folder():
    data = with_value("audio.source", "local")
    with pytest.raises(ParamsError, match=r"audio.local.dir = '': with audio.source = local"):
        parse_params(data)


def test_hub_source_accepts_any_repo_id():
    data = with_value("model.source", "hub")
    data["model"]["id"] = "openai/whisper-small"
    assert parse_params(data).model.model_name == "whisper-small"


def test_not_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text("seed: [0\nlanguages: :\n")
    with pytest.raises(ParamsError, match=rf"{re.escape(str(bad))}: not valid YAML"):
        load_params(bad)
    with pytest.raises(ParamsError, match="cannot read params file"):
        load_params(tmp_path / "nope.yaml")


def test_a_list_at_top_level_is_refused():
    with pytest.raises(ParamsError, match="params = .*must be a mapping"):
        parse_params([1, 2])


def test_params_are_frozen():
    p = load_params(ROOT / "params.yaml")
    with pytest.raises(Exception):
        p.seed = 3  # type: ignore[misc]
    with pytest.raises(Exception):
        p.audio.calibration_clips = 3  # type: ignore[misc]


def test_presets_are_valid_and_become_overrides():
    from whisper_npu.preset import merge, overrides

    presets = sorted((ROOT / "params").glob("*.yaml"))
    assert presets, "params/ holds the presets"
    for preset in presets:
        parse_params(merge(base(), yaml.safe_load(preset.read_text())), str(preset))
    args = overrides(ROOT / "params" / "tutorial.yaml", ROOT / "params.yaml")
    pairs = dict(a.split("=", 1) for a in args[1::2])
    assert args[0::2] == ["-S"] * len(pairs)
    assert pairs["model.id"] == "openai/whisper-small"
    assert pairs["audio.source"] == "fleurs" and pairs["audio.calibration_clips"] == "20"
    assert pairs["compile.qbcompiler.encoder_scheme"] == "global4"


def test_a_bad_preset_is_refused(tmp_path):
    from whisper_npu.preset import overrides

    bad = tmp_path / "bad.yaml"
    bad.write_text("calibration:\n  translate_ratio: 3\n")
    with pytest.raises(ParamsError, match="bad.yaml: calibration.translate_ratio = 3.0: must be <= 1"):
        overrides(bad, ROOT / "params.yaml")


def test_every_stage_cmd_module_imports_and_deps_exist():
    """dvc.yaml hygiene: each cmd's module imports, and every declared source dependency exists."""
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    for name, stage in dvc["stages"].items():
        stage = stage.get("do", stage)  # foreach stages keep their body under `do`
        m = re.search(r"python -m ([\w.]+)", stage["cmd"])
        assert m, f"{name}: cmd is not `python -m stages.<name>`"
        importlib.import_module(m.group(1))
        for dep in stage.get("deps", []):
            if "${" not in dep and dep.endswith(".py"):
                assert (ROOT / dep).exists(), f"{name}: dependency {dep} does not exist"


# ------------------------------------------------------------------------------ audio.per_language

def test_default_profile_uses_real_speech_with_30_evaluation_clips():
    p = load_params(ROOT / "params.yaml")
    real = {lang for lang in p.languages if p.audio.for_lang(lang).source == "asterisk"}
    assert real == {"en_us", "es_419", "fr_fr", "it_it", "ru_ru"}
    for lang in p.languages:
        a = p.audio.for_lang(lang)
        assert a.calibration_clips == p.calibration.samples_per_language == 6   # calibration counts unchanged
        if lang in real:
            assert a.eval_clips == 30 and a.selection == "seeded"
        else:
            assert (a.source, a.calibration_clips, a.eval_clips) == ("synth", 6, 2)
    assert p.transcribe.max_new_tokens == 220


def test_per_language_entry_overrides_only_its_keys():
    data = base()
    data["audio"]["per_language"] = {"de_de": {"calibration_clips": 12},
                                     "en_us": {"source": "local", "eval_clips": None}}
    data["audio"]["local"]["dir"] = "/data"
    p = parse_params(data)
    de = p.audio.for_lang("de_de")
    assert (de.source, de.calibration_clips, de.eval_clips, de.selection) == ("synth", 12, 2, "first")
    en = p.audio.for_lang("en_us")
    assert (en.source, en.calibration_clips, en.eval_clips) == ("local", 6, 2)     # null: the audio default
    assert p.audio.for_lang("ko_kr") == p.audio.model_copy(update={"per_language": {}})
    assert en.per_language == {}


@pytest.mark.parametrize("entry, message", [
    ({"xx_yy": {"calibration_clips": 3}}, r"audio.per_language.xx_yy: unknown language; allowed: ar_eg"),
    ({"de_de": {"source": "radio"}}, r"audio.per_language.de_de.source = 'radio': must be one of synth, fleurs, "
                                     r"local, asterisk$"),
    ({"de_de": {"calibration_clips": 0}}, r"audio.per_language.de_de.calibration_clips = 0: must be >= 1"),
    ({"de_de": {"calibration_clips": "many"}}, r"audio.per_language.de_de.calibration_clips = 'many': must be an "
                                               r"integer"),
    ({"de_de": {"clips": 36, "eval_clips": 30}}, r"audio.per_language.de_de.clips: no longer a key: "
                                                 r"calibration_clips replaced it"),
    ({"de_de": {"speed": 3}}, r"audio.per_language.de_de.speed: unknown key; allowed in audio.per_language.de_de: "
                              r"source, calibration_clips, eval_clips, selection"),
    ({"de_de": 3}, r"audio.per_language.de_de = 3: must be a mapping"),
    ({"de_de": {"calibration_clips": 5}}, r"calibration.samples_per_language = 6: must be <= "
                                          r"audio.per_language.de_de.calibration_clips = 5 \(de_de\)"),
    ({"de_de": {"source": "local"}}, r"audio.local.dir = '': with audio.source = local .*\(de_de\)"),
])
def test_bad_per_language_entry_names_the_key(entry, message):
    data = base()
    data["audio"]["per_language"] = entry
    with pytest.raises(ParamsError, match=message):
        parse_params(data, "params.yaml")


def test_per_language_entry_for_an_unlisted_language_is_not_checked_against_counts():
    data = base()
    data["languages"] = ["de_de"]
    data["audio"]["per_language"] = {"en_us": {"calibration_clips": 2, "eval_clips": 1}}   # unused: en_us not listed
    assert parse_params(data).audio.for_lang("de_de").calibration_clips == 6


@pytest.mark.parametrize("section", ["model", "audio", "labels", "calibration", "compile", "transcribe", "score",
                                     "npu"])
def test_a_stage_reads_its_section_alone_with_the_same_checks(section):
    """What a stage gets from Section.of equals the whole file's section, and a bad value in it fails the same way
    there (the stage checks its sections; the toolchain stage checks the whole file)."""
    from whisper_npu.params.base import as_raw

    whole = load_params(ROOT / "params.yaml")
    cls = type(getattr(whole, section))
    assert cls.of(as_raw(base())) == getattr(whole, section)
    data = base()
    data[section]["no_such_key"] = 1
    with pytest.raises(ParamsError, match=rf"params.yaml: {section}.no_such_key: unknown key; allowed in {section}: "):
        cls.of(as_raw(data))


def test_npu_placement_defaults_are_mobilint_newest_folder():
    """Mobilint's compilation/stt/prepare_model.py (mblt-sdk-tutorial f3f9d540): encoder single 0:0, decoder single
    1:0 on ARIES; on REGULUS the decoder goes to 0:0, accepted once set."""
    npu = load_params(ROOT / "params.yaml").npu
    assert (npu.require_compiled, npu.encoder.model_dump(), npu.decoder.model_dump()) == (
        False, {"dev_no": 0, "core_mode": "single", "cores": "auto"},
        {"dev_no": 0, "core_mode": "single", "cores": "auto"})
    aries = [npu.placement(c, "aries-rb").target_cores() for c in ("encoder", "decoder")]
    assert aries == [["0:0"], ["1:0"]]
    regulus = parse_params(with_value("compile.qbcompiler.target_device", "regulus-rb")).npu
    assert [regulus.placement(c, "regulus-rb").target_cores() for c in ("encoder", "decoder")] == [["0:0"], ["0:0"]]
    data = with_value("npu.encoder", {"dev_no": 0, "core_mode": "global4", "cores": [[1, 0], [1, 1], [1, 2], [1, 3]]})
    assert parse_params(data).npu.placement("encoder", "aries-rb").clusters == (1,)


def test_regulus_refuses_any_core_but_its_one_naming_the_key():
    data = with_value("compile.qbcompiler.target_device", "regulus-rb")
    data["npu"]["decoder"]["cores"] = [[1, 0]]
    with pytest.raises(ParamsError, match=r"params.yaml: npu.decoder: REGULUS \(regulus-rb\) has one core and runs "
                                          r"only single: set npu.decoder.core_mode = single and npu.decoder.cores = "
                                          r"\[\[0, 0\]\] or auto \(now single, \[\[1, 0\]\]\)"):
        parse_params(data)


def test_npu_placement_survives_dvc_rewriting_params_yaml():
    """`dvc exp run -S` rewrites params.yaml with DVC's YAML 1.2 dumper: strings such as '1:0' lose their quotes and
    PyYAML (YAML 1.1) reads 1:0 back as 60. [cluster, core] pairs round-trip."""
    from dvc.utils.serialize import dumps_yaml

    back = yaml.safe_load(dumps_yaml({"npu": base()["npu"], "as_string": ["1:0"]}))
    assert back["as_string"] == [60]
    assert back["npu"] == base()["npu"]
