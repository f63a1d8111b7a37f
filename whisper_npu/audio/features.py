"""Log-mel features in the encoder's NPU layout, computed one way for every stage that feeds the encoder
(calibration, transcription) and for the command line."""
from __future__ import annotations

from typing import Any

import numpy as np

from whisper_npu.audio.prepare import SAMPLE_RATE


def npu_features(feature_extractor: Any, audio: np.ndarray) -> np.ndarray:
    """Log-mel in the encoder .mxq's layout: HF features ``[1, mels, frames]`` transposed to
    ``[1, frames, mels]`` float32, C-contiguous (as the tutorial's ``.transpose(1, 2)``)."""
    feats = feature_extractor(audio, sampling_rate=SAMPLE_RATE, return_tensors="np").input_features
    return np.ascontiguousarray(np.asarray(feats, dtype=np.float32).transpose(0, 2, 1))
