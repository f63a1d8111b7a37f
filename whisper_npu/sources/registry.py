"""The audio sources by name (params ``audio.source``), each a module of this folder, and whether its speech is
recorded (``real``) or synthetic. Adding a source = its module + one line here + its params keys
(whisper_npu/params/audio.py). Data only: the params schema and scoring read it without importing any source;
``whisper_npu.sources.base.get_clips`` loads the one a language uses."""
from __future__ import annotations

# name (= its module in this folder) -> the kind of speech it gives. The order is the order params errors list them in.
SOURCES: dict[str, str] = {
    "synth": "synthetic",     # espeak-ng speaking the parallel corpus
    "fleurs": "real",         # Google FLEURS
    "local": "real",          # the user's folder
    "asterisk": "real",       # Debian's Asterisk prompt recordings
}
NAMES = tuple(SOURCES)
SPEECH = ("real", "synthetic", "unknown")


def speech(source: str) -> str:
    """``real`` or ``synthetic`` for a source name; ``unknown`` for a name no source has."""
    return SOURCES.get(source, "unknown")
