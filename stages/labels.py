"""Stage labels: the per-language labels merged into the tutorial's two files, and the decoder set's text.

    python -m stages.labels --labels data/labels --transcriptions data/transcriptions.json \
        --translations data/translations.json --decoder-text data/decoder_text.jsonl

``transcriptions.json`` is ``{file_name: text}`` and ``translations.json`` is ``{file_name:
{source_language_fleurs, source_language_whisper, target_language: "en", translation}}``, as the
tutorial's download_data.py writes them. Exactly the languages in params ``languages`` are read, so
removing a language removes its clips here even though its label file stays on disk.

``decoder_text.jsonl`` is what the decoder calibration set reads of the labels: every label row when
``calibration.text_source`` is ``labels``, nothing otherwise. calibrate_decoder depends on this file, not on the
labels, so a labeler change reruns it only when it takes its text from the labels.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from whisper_npu.core import languages as langs
from whisper_npu.core.errors import StageError
from whisper_npu.core.files import atomic_output, read_jsonl, write_json, write_jsonl
from whisper_npu.core.stage import run_stage
from whisper_npu.params.base import languages_of, read
from whisper_npu.params.calibration import CalibrationParams


def merge(labels: dict[str, list[dict]]) -> tuple[dict, dict]:
    """language -> label rows  =>  (transcriptions, translations) keyed by the tutorial's file names."""
    transcriptions: dict[str, str] = {}
    translations: dict[str, dict] = {}
    for lang in sorted(labels):
        whisper_lang = langs.get(lang).whisper
        for row in labels[lang]:
            if row.get("lang") != lang:
                raise StageError(f"labels of {lang}: row {row.get('id')} is labelled {row.get('lang')!r}")
            name = f"{row['id']}.wav"
            transcriptions[name] = row["transcription"]
            translations[name] = {"source_language_fleurs": lang, "source_language_whisper": whisper_lang,
                                  "target_language": "en", "translation": row["translation"]}
    return transcriptions, translations


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--labels", type=Path, required=True, help="folder of <lang>.jsonl label files")
    parser.add_argument("--transcriptions", type=Path, required=True)
    parser.add_argument("--translations", type=Path, required=True)
    parser.add_argument("--decoder-text", type=Path, help="the rows calibrate_decoder reads (data/decoder_text.jsonl)")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args(argv)
    raw = read(args.params)
    labels = {lang: read_jsonl(args.labels / f"{lang}.jsonl") for lang in languages_of(raw)}
    transcriptions, translations = merge(labels)
    with atomic_output(args.transcriptions) as tmp:
        write_json(tmp, transcriptions)
    with atomic_output(args.translations) as tmp:
        write_json(tmp, translations)
    if args.decoder_text is not None:
        read_by_decoder = CalibrationParams.of(raw).text_source == "labels"
        with atomic_output(args.decoder_text) as tmp:
            write_jsonl(tmp, [row for lang in sorted(labels) for row in labels[lang]] if read_by_decoder else [])


if __name__ == "__main__":
    run_stage(main)
