"""The whole of params.yaml, checked at once: every section, every top-level key and the rules that span
sections. The toolchain stage runs this before any other stage; ``whisper_npu.preset`` checks presets with it.
A stage reads only its own sections (``whisper_npu/params/<section>.py`` through ``Section.of``)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ConfigDict, Field, field_validator, model_validator

from whisper_npu.core import languages as langs
from whisper_npu.params.audio import AudioParams
from whisper_npu.params.base import DEVICE, ParamsError, Raw, Section, as_raw, check_list, read, validate
from whisper_npu.params.calibration import CalibrationParams
from whisper_npu.params.compile import CompileParams
from whisper_npu.params.labels import LabelsParams
from whisper_npu.params.model import ModelParams
from whisper_npu.params.npu import COMPONENTS, NpuParams
from whisper_npu.params.score import ScoreParams
from whisper_npu.params.sensitivity import SensitivityParams
from whisper_npu.params.transcribe import TranscribeParams


class Params(Section):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)
    seed: int = Field(ge=0)
    languages: list[str]
    device: str = Field(pattern=DEVICE.pattern)
    model: ModelParams
    audio: AudioParams
    labels: LabelsParams
    calibration: CalibrationParams
    compile: CompileParams
    transcribe: TranscribeParams
    score: ScoreParams
    npu: NpuParams
    sensitivity: SensitivityParams

    @field_validator("languages")
    @classmethod
    def _languages(cls, value: list[str]) -> list[str]:
        check_list("languages", value, langs.LANGUAGES)
        if not value:
            raise ValueError("languages = []: at least one language is needed")
        dup = sorted({x for x in value if value.count(x) > 1})
        if dup:
            raise ValueError(f"languages: {dup[0]!r} is listed twice")
        return value

    @model_validator(mode="after")
    def _across_sections(self) -> "Params":
        for lang in self.languages:
            la, where = self.audio.for_lang(lang), self.audio.where(lang)
            n = self.calibration.samples_per_language
            if n > la.calibration_clips:
                raise ValueError(f"calibration.samples_per_language = {n}: must be <= {where}.calibration_clips = "
                                 f"{la.calibration_clips} ({lang})")
        if self.calibration.text_source == "labels" and not self.labels.enabled:
            raise ValueError("labels.enabled = false: calibration.text_source = labels reads the labels; enable them "
                             "or set calibration.text_source: generated")
        if self.calibration.text_source == "labels" and "calibration" not in self.labels.splits:
            raise ValueError(f"labels.splits = {self.labels.splits!r}: calibration.text_source = labels reads the "
                             "calibration clips' labels; add calibration")
        qb = self.compile.qbcompiler
        for component in COMPONENTS:   # the placement against the target, and against an explicit scheme
            scheme = getattr(qb, f"{component}_scheme")
            self.npu.placement(component, qb.target_device, None if scheme == "auto" else scheme)
        return self


def parse_params(data: Any, source: str = "params.yaml") -> Params:
    """Build and check :class:`Params` from parsed YAML (errors name ``source`` and the key)."""
    raw = as_raw(data, source)
    return validate(Params, raw.data, "", raw.source)


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and check a whole params file."""
    raw = read(path)
    return validate(Params, raw.data, "", raw.source)


__all__ = ["Params", "ParamsError", "Raw", "read", "parse_params", "load_params"]
