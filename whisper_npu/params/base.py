"""Reading params.yaml and checking one section of it: the part every stage shares.

Each section of params.yaml has its own module here (``audio.py``, ``compile.py``, ...), a pydantic model with
no defaults: params.yaml is the one place where every value is written, and a missing key is an error. A stage
reads only its sections (so editing one section's schema reruns only the stages that read it); the toolchain
stage checks the whole file, cross-section rules included, before any other stage runs (``whisper_npu.params``).

Errors name the file, the key, the value and what is allowed, on one line::

    params.yaml: calibration.translate_ratio = 1.5: must be <= 1
"""
from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from whisper_npu.core import languages as langs
from whisper_npu.core.errors import StageError

S = TypeVar("S", bound="Section")


class ParamsError(StageError):
    """A params.yaml value is missing, unknown, of the wrong type or out of range."""


@dataclass(frozen=True)
class Raw:
    """params.yaml as read (plain data) and where it came from (for error messages)."""
    data: dict
    source: str = "params.yaml"

    def get(self, key: str) -> Any:
        if key not in self.data:
            raise ParamsError(f"{self.source}: {key}: missing; params.yaml must set it")
        return self.data[key]


def _yaml_problem(e: yaml.YAMLError) -> str:
    """PyYAML's multi-line message as one line: where and what (stage errors are one line)."""
    mark, problem = getattr(e, "problem_mark", None), getattr(e, "problem", None)
    if mark is not None and problem:
        context = getattr(e, "context", None)
        return f"line {mark.line + 1}, column {mark.column + 1}: {problem}" + (f" ({context})" if context else "")
    return " ".join(str(e).split())


def read(path: str | Path = "params.yaml") -> Raw:
    """params.yaml as plain data; ParamsError naming the file when it is unreadable, not YAML or not a mapping."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ParamsError(f"{path}: cannot read params file ({e.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ParamsError(f"{path}: not valid YAML: {_yaml_problem(e)}") from None
    return as_raw(data, str(path))


def as_raw(data: Any, source: str = "params.yaml") -> Raw:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ParamsError(f"{source}: params = {data!r}: must be a mapping of keys to values")
    return Raw(data, source)


# ---------------------------------------------------------------------------------------------- sections

_TYPE_WORDS = {"int_type": "an integer", "int_parsing": "an integer", "int_from_float": "an integer",
               "float_type": "a number", "float_parsing": "a number", "bool_type": "true or false",
               "bool_parsing": "true or false", "string_type": "a string", "list_type": "a list",
               "dict_type": "a mapping", "model_type": "a mapping of keys to values",
               "model_attributes_type": "a mapping of keys to values"}
_BOUNDS = {"greater_than_equal": (">=", "ge"), "less_than_equal": ("<=", "le"), "greater_than": (">", "gt")}


def _key(loc: Sequence[Any]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _choices(expected: str) -> str:
    """pydantic's "'a', 'b' or 'c'" as "a, b, c"."""
    return ", ".join(p.strip().strip("'") for p in expected.replace(" or ", ", ").split(", "))


def _number(x: Any) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def _message(err: dict, model: type[BaseModel], prefix: str) -> str:
    """One pydantic error as our one-line message: ``key = value: what is allowed``."""
    loc = tuple(err["loc"])
    key = _key(((prefix,) if prefix else ()) + loc)
    kind, value, ctx = err["type"], err.get("input"), err.get("ctx") or {}
    if kind == "extra_forbidden":
        parent = _key(((prefix,) if prefix else ()) + loc[:-1]) or "params"
        owner = _model_at(model, loc[:-1])
        allowed = ", ".join(owner.model_fields) if owner is not None else ""
        return f"{key}: unknown key; allowed in {parent}: {allowed}"
    if kind == "missing":
        return f"{key}: missing; params.yaml must set it"
    if kind in ("value_error", "assertion_error"):
        text = str(ctx.get("error") or err["msg"]).removeprefix("Value error, ")
        return f"{key}.{text}" if key and not text.startswith(key) else text
    if kind in _TYPE_WORDS:
        return f"{key} = {value!r}: must be {_TYPE_WORDS[kind]}"
    if kind in _BOUNDS:
        word, name = _BOUNDS[kind]
        bound = ctx[name]
        if isinstance(bound, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)   # a float key shows its value as the float it is compared as
        return f"{key} = {value!r}: must be {word} {_number(bound)}"
    if kind == "string_pattern_mismatch" and key == "device":
        return f"{key} = {value!r}: must be auto, cpu, cuda or cuda:N"
    if kind == "literal_error":
        return f"{key} = {value!r}: must be one of {_choices(ctx['expected'])}"
    return f"{key} = {value!r}: {err['msg']}"


def _model_at(model: type[BaseModel], loc: Sequence[Any]) -> type[BaseModel] | None:
    """The section model found at ``loc`` below ``model`` (through nested sections and name -> section maps)."""
    import typing

    current: Any = model
    for part in loc:
        if isinstance(current, type) and issubclass(current, BaseModel) and part in current.model_fields:
            current = current.model_fields[part].annotation
        elif typing.get_origin(current) is dict:
            current = typing.get_args(current)[1]
        else:
            return None
        args = [a for a in typing.get_args(current) if a is not type(None)]
        if typing.get_origin(current) is typing.Union and len(args) == 1:
            current = args[0]
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def validate(model: type[S], data: Any, prefix: str, source: str) -> S:
    """``model`` built from ``data`` (the value of key ``prefix``), or ParamsError with the first problem."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise ParamsError(f"{source}: {_message(e.errors()[0], model, prefix)}") from None


class Section(BaseModel):
    """A params section: frozen, unknown keys refused, strict types (no "0.2" for a number, no true for 1)."""
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)
    KEY: ClassVar[str] = ""

    @classmethod
    def of(cls: type[S], raw: Raw) -> S:
        """The section ``cls.KEY`` of params.yaml, checked."""
        data = raw.get(cls.KEY)
        if not isinstance(data, dict):
            raise ParamsError(f"{raw.source}: {cls.KEY} = {data!r}: must be a mapping of keys to values")
        return validate(cls, data, cls.KEY, raw.source)


def check_list(key: str, values: Sequence[Any], allowed: Collection[str]) -> None:
    """Each entry is one of ``allowed`` (ValueError ``key[i] = value: unknown; allowed: ...``)."""
    for i, v in enumerate(values):
        if v not in allowed:
            raise ValueError(f"{key}[{i}] = {v!r}: unknown; allowed: {', '.join(sorted(allowed))}")


# ---------------------------------------------------------------------------------------------- top-level keys

def seed_of(raw: Raw) -> int:
    """``seed``: one seed for every random choice (an integer >= 0)."""
    value = raw.get("seed")
    if not isinstance(value, int) or isinstance(value, bool):
        raise ParamsError(f"{raw.source}: seed = {value!r}: must be an integer")
    if value < 0:
        raise ParamsError(f"{raw.source}: seed = {value!r}: must be >= 0")
    return value


def languages_of(raw: Raw) -> list[str]:
    """``languages``: FLEURS codes, each known and listed once, at least one."""
    value = raw.get("languages")
    if not isinstance(value, list):
        raise ParamsError(f"{raw.source}: languages = {value!r}: must be a list")
    try:
        for i, v in enumerate(value):
            if not isinstance(v, str):
                raise ValueError(f"languages[{i}] = {v!r}: must be a string")
        check_list("languages", value, langs.LANGUAGES)
    except ValueError as e:
        raise ParamsError(f"{raw.source}: {e}") from None
    if not value:
        raise ParamsError(f"{raw.source}: languages = []: at least one language is needed")
    dup = sorted({x for x in value if value.count(x) > 1})
    if dup:
        raise ParamsError(f"{raw.source}: languages: {dup[0]!r} is listed twice")
    return list(value)


DEVICE = re.compile(r"^(auto|cpu|cuda|cuda:\d+)$")


def device_of(raw: Raw) -> str:
    """``device``: where the label, decoder-calibration and fp32-transcription models run (auto, cpu, cuda, cuda:N)."""
    value = raw.get("device")
    if not isinstance(value, str) or not DEVICE.match(value):
        raise ParamsError(f"{raw.source}: device = {value!r}: must be auto, cpu, cuda or cuda:N")
    return value
