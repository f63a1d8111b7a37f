"""STAND-IN for ``qbcompiler.configs`` (1.1+): only ``LlmConfig`` with the nesting the 1.1 tutorial uses.
NOT the real compiler; see the package docstring."""
from __future__ import annotations

from qbcompiler import __version__, api

if api() != "1.x":
    raise ImportError(f"stand-in qbcompiler {__version__}: qbcompiler.configs is documented from 1.1 on")


class LlmConfig:
    class Attributes:
        class Calibration:
            def __init__(self, *, use_full_seq_length: bool):
                self.use_full_seq_length = use_full_seq_length

        def __init__(self, *, calibration: "LlmConfig.Attributes.Calibration"):
            if not isinstance(calibration, LlmConfig.Attributes.Calibration):
                raise TypeError("stand-in: calibration must be LlmConfig.Attributes.Calibration")
            self.calibration = calibration

    def __init__(self, *, apply: bool, attributes: "LlmConfig.Attributes"):
        if not isinstance(attributes, LlmConfig.Attributes):
            raise TypeError("stand-in: attributes must be LlmConfig.Attributes")
        self.apply, self.attributes = apply, attributes

    def as_dict(self) -> dict:
        return {"factory": "LlmConfig", "apply": self.apply,
                "attributes": {"calibration": {"use_full_seq_length": self.attributes.calibration.use_full_seq_length}}}
