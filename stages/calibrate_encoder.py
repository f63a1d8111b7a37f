"""Encoder calibration set: the tutorial's ``whisper_encoder_cali.txt`` and one log-mel ``.npy`` per clip.

Per calibration clip (the first ``calibration.samples_per_language`` of each language in params, sorted by
id) the HF log-mel features transposed to ``[1, 3000, 80]`` float32 (frames x bins; whisper_npu/audio/features.py's
``npu_features``, the same features the evaluate stage feeds the encoder), saved as
``encoder_calib_<clip id>.npy`` (named by clip id, not by a running index, so adding a language does not
rename the others' files). The list holds paths relative to itself (the tutorial wrote absolute paths);
the compile stage resolves them (whisper_npu/calibration/lists.py).

Needs only the feature extractor's settings and the model config (for the spec check), never the weights,
so it depends on ``hf/preprocessor_config.json`` and ``hf/config.json`` of the model store, not on the
whole store, and it does not rerun when the task mix or the text source changes.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from whisper_npu import specs
from whisper_npu.audio.clips import Clip, read_clips
from whisper_npu.audio.features import npu_features
from whisper_npu.audio.prepare import read_wav
from whisper_npu.calibration import lists
from whisper_npu.core.errors import StageError
from whisper_npu.core.files import atomic_output
from whisper_npu.core.stage import run_stage
from whisper_npu.params.base import languages_of, read
from whisper_npu.params.calibration import CalibrationParams

log = logging.getLogger(__name__)


def file_name(clip: Clip) -> str:
    return f"encoder_calib_{clip.id}.npy"


def build_encoder_set(clips: list[Clip], feature_extractor: Any, config: Any, out_dir: Path) -> list[str]:
    """Write one features ``.npy`` per clip and the list file into ``out_dir``; return the file names."""
    out_dir.mkdir(parents=True, exist_ok=True)
    spec = specs.encoder_spec(config).inputs[0]
    names = []
    for clip in tqdm(clips, desc="encoder calibration", unit="clip"):
        feats = npu_features(feature_extractor, read_wav(clip.audio))
        try:
            spec.check(feats, where=clip.id)
        except specs.SpecError as e:
            raise StageError(f"{clip.audio}: {e}; does the feature extractor match the model?") from None
        name = file_name(clip)
        np.save(out_dir / name, feats)
        names.append(name)
    lists.write_encoder_list(out_dir / specs.ENCODER_LIST, names)
    return names


def load_feature_extractor(path: Path) -> Any:
    from transformers import WhisperFeatureExtractor

    if not path.is_file():
        raise StageError(f"{path}: missing (run `dvc repro model`)")
    return WhisperFeatureExtractor.from_json_file(str(path))


def load_config(path: Path) -> Any:
    from transformers import WhisperConfig

    if not path.is_file():
        raise StageError(f"{path}: missing (run `dvc repro model`)")
    return WhisperConfig.from_json_file(str(path))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--audio", type=Path, required=True,
                        help="audio stage root (data/audio): reads calibration/<lang>/")
    parser.add_argument("--feature-config", type=Path, required=True, help="hf/preprocessor_config.json")
    parser.add_argument("--model-config", type=Path, required=True, help="hf/config.json")
    parser.add_argument("--out", type=Path, required=True, help="output folder (calibration/encoder)")
    args = parser.parse_args(argv)

    raw = read(args.params)
    langs, cp = languages_of(raw), CalibrationParams.of(raw)
    clips = read_clips(args.audio, langs, "calibration", cp.samples_per_language)
    fe = load_feature_extractor(args.feature_config)
    config = load_config(args.model_config)
    log.info("encoder set: %d clips from %d languages", len(clips), len(langs))
    with atomic_output(args.out) as tmp:
        build_encoder_set(clips, fe, config, tmp)
        n = lists.validate_encoder_set(tmp / specs.ENCODER_LIST, config)
    log.info("wrote %d encoder calibration files to %s", n, args.out)


if __name__ == "__main__":
    run_stage(main)
