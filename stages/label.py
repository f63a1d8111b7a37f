"""Stage label@<lang>: transcription and English translation of each clip by the labeler model.

    python -m stages.label --lang ko_kr --audio data/audio/ko_kr --model models/reference \
        --out data/labels/ko_kr.jsonl

Reads the clips the audio stage listed in ``manifest.jsonl`` (never whatever sits in the folder) and
writes one row per clip, sorted by id: ``id``, ``lang``, ``transcription``, ``translation``, ``labeler``.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from tqdm import tqdm

from whisper_npu import languages as langs
from whisper_npu.audio import BadAudio, read_wav
from whisper_npu.io import StageError, atomic_output, read_jsonl, run_stage, write_jsonl
from whisper_npu.labeler import Labeler, check_language, clip_seed, label_clip, load_labeler
from whisper_npu.params import load_params

log = logging.getLogger(__name__)


def label_rows(labeler: Labeler, lang: str, audio_dir: Path, manifest: list[dict], beam_size: int,
               seed: int, logprob_fallback: bool = False, decode_options: dict | None = None) -> list[dict]:
    """Label every manifest row of one language; rows sorted by id."""
    whisper_lang = langs.get(lang).whisper
    check_language(labeler, whisper_lang, lang)
    rows = []
    for m in tqdm(sorted(manifest, key=lambda r: r["id"]), desc=f"label {lang}", unit="clip", leave=False):
        try:
            audio = read_wav(audio_dir / m["file"])
        except (BadAudio, OSError, RuntimeError) as e:
            raise StageError(f"{audio_dir / m['file']}: cannot read ({e}); rerun the audio stage") from None
        text, translation = label_clip(labeler, audio, whisper_lang, beam_size, clip_seed(seed, m["id"]),
                                       logprob_fallback, **(decode_options or {}))
        rows.append({"id": m["id"], "lang": lang, "transcription": text, "translation": translation,
                     "labeler": labeler.name})
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lang", required=True)
    parser.add_argument("--audio", type=Path, required=True, help="the language's audio folder (manifest.jsonl)")
    parser.add_argument("--model", type=Path, required=True, help="the model stage's folder (for labeler: reference)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args(argv)
    p = load_params(args.params)
    if args.lang not in langs.LANGUAGES:
        raise StageError(f"--lang {args.lang!r}: unknown language")
    manifest = read_jsonl(args.audio / "manifest.jsonl")
    for m in manifest:
        if m.get("lang") != args.lang:
            raise StageError(f"{args.audio / 'manifest.jsonl'}: row {m.get('id')} is {m.get('lang')!r}, not {args.lang}")
    labeler = load_labeler(p.labels.labeler, args.model)
    log.info("label@%s: %d clips with %s", args.lang, len(manifest), labeler.name)
    decode_options = {"best_of": p.labels.best_of, "sample_len": p.labels.max_new_tokens,
                      "without_timestamps": p.labels.without_timestamps}
    rows = label_rows(labeler, args.lang, args.audio, manifest, p.labels.beam_size, p.seed,
                      p.labels.logprob_fallback, decode_options)
    with atomic_output(args.out) as tmp:
        write_jsonl(tmp, rows)


if __name__ == "__main__":
    run_stage(main)
