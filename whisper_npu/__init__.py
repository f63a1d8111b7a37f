"""Shared code for the Whisper -> Mobilint NPU DVC pipeline (params, specs, audio, models, backends)."""

__version__ = "0.1.0"
