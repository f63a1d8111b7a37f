"""``whisper-npu transcribe FILE...``: your own audio through the fp32 reference or the compiled model (ONNX Runtime
INT8 here, the ``.mxq`` files on an NPU host), whatever the pipeline built.

    whisper-npu transcribe talk.mp3                        # the compiled model, text on stdout
    whisper-npu transcribe a.wav b.flac --output-format srt --output-dir subs
    whisper-npu transcribe talk.mp3 --compare              # fp32 and compiled side by side, their WER
    python -m whisper_npu transcribe ...                   # the same

Audio of any format the audio stage reads (wav, flac, ogg, mp3; any rate, any channel count) is decoded and
resampled to 16 kHz mono by the same code; files longer than 30 s are transcribed window after window with segment
timestamps (whisper_npu/decoding/longform.py). Progress goes to stderr, the text to stdout, the real-time factor
at the end. A file that cannot be used gets one line naming it and the others are still done; the exit code is
non-zero when nothing could be transcribed. A compiled model that cannot run here (``.mxq`` files without an NPU)
is one line and a non-zero exit, never a silent fall-back to another system.
"""
from __future__ import annotations

import argparse
import difflib
import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from whisper_npu.core.errors import StageError

log = logging.getLogger("whisper_npu.cli")
FORMATS = ("txt", "json", "srt", "vtt")


class InputError(StageError):
    """One input file cannot be transcribed (missing, unreadable, empty, silent, not audio)."""


@dataclass
class System:
    """A loaded backend and what the CLI needs around it."""
    name: str               # fp32 | compiled
    label: str              # torch | onnxruntime-dynamic | mxq ...
    backend: Any
    processor: Any
    cfg: Any

    def close(self) -> None:
        self.backend.close()


# ---------------------------------------------------------------------------------------------- loading

def load_system(name: str, model_dir: Path, compiled_dir: Path, params: Path = Path("params.yaml")) -> System:
    """``fp32`` (the reference model folder) or ``compiled`` (the compile stage's folders, run by the runtime of
    the backend that built them; ``.mxq`` files placed on the NPU as ``params``' ``npu`` section says)."""
    from whisper_npu.decoding.greedy import DecodeConfig
    from whisper_npu.model.store import load_configs, load_processor

    if name == "fp32":
        from whisper_npu.runtimes.torch_ref import load_torch_backend

        backend, processor = load_torch_backend(model_dir)
        label = "torch"
    else:
        from whisper_npu.artifacts import compiled_backend_name
        from whisper_npu.params.base import read
        from whisper_npu.params.npu import NpuParams
        from whisper_npu.runtimes.registry import load_compiled

        for part in ("encoder", "decoder"):
            if not (compiled_dir / part / "provenance.json").is_file():
                raise StageError(f"{compiled_dir / part}: no compiled {part} here (provenance.json missing); run the "
                                 "pipeline (`make demo` or `dvc repro compile@encoder compile@decoder`) "
                                 "or pass --compiled")
        config, _ = load_configs(model_dir)
        enc, dec = compiled_dir / "encoder", compiled_dir / "decoder"
        npu = NpuParams.of(read(params)) if compiled_backend_name(enc, dec) == "qbcompiler" else None
        backend = load_compiled(enc, dec, config, npu)   # may raise NotRunnable
        processor = load_processor(model_dir)
        label = getattr(backend, "name", "compiled")
    config, generation = load_configs(model_dir)
    cfg = DecodeConfig.from_model(generation, config, max_new_tokens=224, suppress_timestamps=False)
    return System(name, label, backend, processor, cfg)


def read_audio(path: Path) -> np.ndarray:
    """16 kHz mono float32 of any file the audio stage reads, or InputError naming the file and the reason."""
    from whisper_npu.audio.prepare import MIN_SECONDS, SAMPLE_RATE, BadAudio, check_silence, decode, to_mono_16k

    if not path.exists():
        raise InputError(f"{path}: no such file")
    if not path.is_file():
        raise InputError(f"{path}: not a file")
    try:
        samples, rate = decode(path)
        if samples.shape[0] == 0:
            raise BadAudio("empty: no samples")
        if not np.isfinite(samples).all():
            raise BadAudio("non-finite samples")
        y = to_mono_16k(samples, rate)
        if len(y) < MIN_SECONDS * SAMPLE_RATE:
            raise BadAudio(f"empty: {len(y) / SAMPLE_RATE:.3f} s of audio")
        check_silence(y, "file")
    except BadAudio as e:
        raise InputError(f"{path}: {e}") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror or e})") from None
    return y


# ---------------------------------------------------------------------------------------------- running

def run_file(system: System, audio: np.ndarray, task: str, language: str | None, label: str,
             max_tokens: int = 224) -> dict[str, Any]:
    """One file through one system: the transcript as a JSON-able dict with its real-time factor."""
    from tqdm import tqdm

    from whisper_npu.audio.features import npu_features
    from whisper_npu.decoding import longform
    from whisper_npu.decoding.greedy import tokenizer_text

    seconds = len(audio) / longform.SAMPLE_RATE
    start = time.perf_counter()
    with tqdm(total=round(seconds, 1), desc=f"{label} ({system.name})", unit="s audio", file=sys.stderr,
              leave=False) as bar:
        def progress(done: float) -> None:
            bar.update(round(done, 1) - bar.n)

        result = longform.transcribe(system.backend, audio,
                                     lambda chunk: npu_features(system.processor.feature_extractor, chunk),
                                     system.cfg, tokenizer_text(system.processor.tokenizer), task, language, progress,
                                     max_tokens)
    elapsed = time.perf_counter() - start
    return {"system": system.name, "backend": system.label, "language": result.language, "task": task,
            "text": result.text, "duration": round(seconds, 3), "seconds": round(elapsed, 3),
            "rtf": round(elapsed / seconds, 4) if seconds else None,
            "segments": [{"start": round(s.start, 2), "end": round(s.end, 2), "text": s.text} for s in result.segments]}


def _stamp(t: float, sep: str) -> str:
    ms = int(round(t * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def render(result: dict[str, Any], fmt: str) -> str:
    """The transcript in txt, json, srt or vtt."""
    if fmt == "txt":
        return result["text"] + "\n"
    if fmt == "json":
        return json.dumps(result, ensure_ascii=False, indent=2) + "\n"
    cues = []
    for i, s in enumerate(result["segments"], 1):
        sep = "," if fmt == "srt" else "."
        head = f"{i}\n" if fmt == "srt" else ""
        cues.append(f"{head}{_stamp(s['start'], sep)} --> {_stamp(s['end'], sep)}\n{s['text']}\n")
    return ("WEBVTT\n\n" if fmt == "vtt" else "") + "\n".join(cues)


def compare(fp32: dict[str, Any], compiled: dict[str, Any], fleurs_lang: str) -> str:
    """Both texts, the word-level differences, WER of compiled against fp32, each system's real-time factor."""
    from whisper_npu.eval.metrics import error_rate, unit

    a, b = fp32["text"].split(), compiled["text"].split()
    diff = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if op != "equal":
            diff.append(f"  {op:7s} fp32: {' '.join(a[i1:i2]) or '-'}  |  compiled: {' '.join(b[j1:j2]) or '-'}")
    rate = error_rate([fp32["text"]], [compiled["text"]], fleurs_lang)
    u = unit(fleurs_lang).upper()
    return "\n".join([f"fp32     ({fp32['backend']}, RTF {fp32['rtf']}): {fp32['text']}",
                      f"compiled ({compiled['backend']}, RTF {compiled['rtf']}): {compiled['text']}",
                      "word differences:" if diff else "word differences: none", *diff,
                      f"{u} of compiled against fp32: {'-' if rate is None else f'{rate:.3f}'}"]) + "\n"


def _fleurs_code(whisper_lang: str) -> str:
    from whisper_npu.core.languages import LANGUAGES

    return next((c for c, lang in LANGUAGES.items() if lang.whisper == whisper_lang), "de_de")


def _language(arg: str | None) -> str | None:
    """--language as a Whisper code ("en"), from a Whisper or a FLEURS code ("en_us")."""
    from whisper_npu.core.languages import LANGUAGES

    if arg is None:
        return None
    if arg in LANGUAGES:
        return LANGUAGES[arg].whisper
    return arg


def transcribe_main(args: argparse.Namespace) -> int:
    systems_wanted = ["fp32", "compiled"] if args.compare else [args.system]
    try:
        systems = [load_system(s, args.model, args.compiled, args.params) for s in systems_wanted]
    except StageError as e:
        say(f"error: {e}")
        return 2
    done = 0
    try:
        for path in args.files:
            try:
                audio = read_audio(Path(path))
            except InputError as e:
                say(f"error: {e}")
                continue
            results = []
            for system in systems:
                try:
                    results.append(run_file(system, audio, args.task, _language(args.language), Path(path).name,
                                            args.max_new_tokens))
                except StageError as e:
                    say(f"error: {path}: {e}")
                    break
            if len(results) != len(systems):
                continue
            done += 1
            if args.compare:
                text = compare(results[0], results[1], _fleurs_code(results[0]["language"]))
            else:
                text = render(results[0], args.output_format)
            if args.output_dir:
                args.output_dir.mkdir(parents=True, exist_ok=True)
                ext = "txt" if args.compare else args.output_format
                out = args.output_dir / f"{Path(path).stem}.{ext}"
                out.write_text(text, encoding="utf-8")
                say(f"{path}: wrote {out}")
            else:
                sys.stdout.write(text)
                sys.stdout.flush()
            for r in results:
                say(f"{path}: {r['system']} ({r['backend']}), language {r['language']}, {r['duration']:.1f} s of "
                    f"audio in {r['seconds']:.1f} s, real-time factor {r['rtf']}")
    finally:
        for system in systems:
            system.close()
    if done == 0:
        say(f"error: none of the {len(args.files)} files could be transcribed")
        return 1
    return 0


def say(message: str) -> None:
    from tqdm import tqdm

    tqdm.write(message, file=sys.stderr)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="whisper-npu", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("transcribe", help="transcribe audio files with the fp32 or the compiled model",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    t.add_argument("files", nargs="+", help="audio files (wav, flac, ogg, mp3; any rate and channel count)")
    t.add_argument("--system", choices=("fp32", "compiled"), default="compiled")
    t.add_argument("--model", type=Path, default=Path("models/reference"),
                   help="the reference model folder (default: the pipeline's models/reference)")
    t.add_argument("--compiled", type=Path, default=Path("compiled"),
                   help="folder with the compile stage's encoder/ and decoder/ (default: compiled)")
    t.add_argument("--params", type=Path, default=Path("params.yaml"),
                   help="params file whose npu section places .mxq files on the NPU (default: params.yaml)")
    t.add_argument("--language", help="Whisper or FLEURS code (en, en_us, ...); default: detected per file")
    t.add_argument("--task", choices=("transcribe", "translate"), default="transcribe")
    t.add_argument("--output-format", choices=FORMATS, default="txt")
    t.add_argument("--output-dir", type=Path, help="write <file stem>.<format> there instead of printing")
    t.add_argument("--compare", action="store_true", help="fp32 and compiled side by side, WER of compiled vs fp32")
    t.add_argument("--max-new-tokens", type=int, default=224, help="tokens per 30 s window (openai-whisper: 224)")
    return p


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    args = parser().parse_args(argv)
    sys.exit(transcribe_main(args))


if __name__ == "__main__":
    main()
