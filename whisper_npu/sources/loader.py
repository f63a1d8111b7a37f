"""Asking the source a language uses for its clips (by name, from the registry; no source imports this module)."""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from whisper_npu.core import languages as langs
from whisper_npu.core.errors import StageError

if TYPE_CHECKING:
    from whisper_npu.params.audio import AudioParams
    from whisper_npu.sources.base import Selection


def get_clips(lang: str, params: AudioParams, seed: int) -> Selection:
    """The selected clips of one language from the source ``params.source`` names (``params`` = its audio
    params, ``audio.per_language`` applied)."""
    if lang not in langs.LANGUAGES:
        raise StageError(f"--lang {lang!r}: unknown language; known: {', '.join(sorted(langs.LANGUAGES))}")
    module = importlib.import_module(f"whisper_npu.sources.{params.source}")
    return module.clips(lang, params, seed)


