"""ONNX Runtime INT8 variants of whisper-base on real speech: what each option does to accuracy.

Real speech: Debian's Asterisk prompt recordings (docs/offline-data.md; ``apt-get download
asterisk-core-sounds-<l>-wav=1.6.1-1 asterisk-core-sounds-<l>=1.6.1-1`` and ``dpkg-deb -x`` every .deb into
one folder, passed as ``--asterisk``). Per language the clips of 2-30 s with a transcript, sorted by name,
are split into ``--eval`` evaluation clips (evenly spaced) and ``--calib`` calibration clips (evenly spaced
over the rest: disjoint from the evaluation clips), resampled 8 -> 16 kHz by the audio stage's resampler.

Everything else is the project's own code: calibration sets by the calibrate stages' cores (generated
text), each variant compiled by the compile stage's ``run`` (export, smoothing, ORT quantization, numerics
on held-out calibration entries), run by whisper_npu/runtimes/onnxruntime.py, decoded by whisper_npu/decoding/
(the transcription stages' ``run_clips``), scored by whisper_npu/eval/metrics.py. fp32 is the transcribe_fp32
stage's reference (torch, HF model).

Per variant: encoder cosine and decoder logits cosine / top-1 vs torch fp32 (held-out calibration entries),
the share of linear layers (MatMul/Gemm/Conv with a weight) left in float, encoder + decoder size, and per
language WER fp32 and compiled with the compiled-minus-fp32 delta and its 95 % paired bootstrap interval
(clips resampled with replacement, 2000 draws, seed 0). Spanish transcripts carry no accents, so Spanish is
scored with diacritics removed from both sides (both systems alike).

The work folder caches audio, calibration sets, fp32 decodes and each compiled variant (keyed by its
options), so adding a variant does not redo the others.

``--quick`` checks the code path in a minute: the tiny random Whisper, synthetic speech (espeak-ng through the
audio stage) instead of the Asterisk prompts (no ``--asterisk`` folder, no apt), 1 evaluation + 3 calibration clips,
8 tokens, a temporary work folder; figures meaningless.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import logging
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import ROOT, Table, command, default_params, print_tables, reference_model, synth_audio, write_params

log = logging.getLogger(__name__)

MODULE = "bench.static_int8"
# Asterisk package suffix -> (FLEURS code, voice folder)
ASTERISK = {"en": ("en_us", "en_US_f_Allison"), "es": ("es_419", "es_MX_f_Allison"),
            "fr": ("fr_fr", "fr_CA_f_June"), "it": ("it_it", "it_IT_m_Carlo"), "ru": ("ru_ru", "ru_RU_f_IvrvoiceRU")}
# name -> compile.onnxruntime overrides
VARIANTS: dict[str, dict] = {
    "dynamic": {"mode": "dynamic", "keep_float": [], "smooth_quant": False},
    "dynamic, fc2 float": {"mode": "dynamic", "keep_float": ["fc2"], "smooth_quant": False},
    "static minmax": {"mode": "static", "keep_float": [], "smooth_quant": False, "high_precision": []},
    "static minmax, fc2 float": {"mode": "static", "keep_float": ["fc2"], "smooth_quant": False,
                                 "high_precision": []},
    "static minmax+smooth": {"mode": "static", "keep_float": [], "smooth_quant": True, "high_precision": []},
    "static minmax+smooth, fc2 a16": {"mode": "static", "keep_float": [], "smooth_quant": True,
                                      "high_precision": ["fc2"]},
    # the params.yaml default
    "static minmax+smooth, fc2+attention a16": {"mode": "static", "keep_float": [], "smooth_quant": True,
                                                "high_precision": ["fc2", "attention_matmuls"]},
    "static pct+smooth, fc2+attention a16": {"mode": "static", "keep_float": [], "smooth_quant": True,
                                             "high_precision": ["fc2", "attention_matmuls"],
                                             "calibrate_method": "percentile"},
}
DEFAULT_VARIANTS = ("static minmax+smooth, fc2+attention a16", "dynamic, fc2 float")


# ---------------------------------------------------------------------------------------------- data

def asterisk_clips(root: Path, suffix: str) -> list[tuple[str, Path, str]]:
    """(name, wav, transcript) of the prompts with a transcript, sorted by name."""
    fleurs, voice = ASTERISK[suffix]
    doc = root / f"usr/share/doc/asterisk-core-sounds-{suffix}/core-sounds-{suffix}.txt.gz"
    folder = root / "usr/share/asterisk/sounds" / voice
    if not doc.is_file() or not folder.is_dir():
        sys.exit(f"{root}: no Asterisk {suffix} prompts ({doc.name} / {voice}); unpack "
                 f"asterisk-core-sounds-{suffix}-wav and asterisk-core-sounds-{suffix} 1.6.1-1 there")
    out = []
    for line in gzip.open(doc, "rt", encoding="utf-8", errors="replace"):
        if line.startswith(";") or ":" not in line:
            continue
        name, text = (x.strip() for x in line.split(":", 1))
        wav = folder / f"{name}.wav"
        if name and text and wav.is_file():
            out.append((name, wav, text))
    return sorted(out)


def prepare_audio(root: Path, suffixes: Sequence[str], n_eval: int, n_calib: int, dest: Path) -> Path:
    """``dest/calibration/<fleurs>/`` and ``dest/evaluation/<fleurs>/``: 16 kHz wavs and a manifest each, in the
    audio stage's layout."""
    import soundfile as sf

    from whisper_npu.audio.prepare import to_mono_16k

    for suffix in suffixes:
        lang = ASTERISK[suffix][0]
        if all((dest / split / lang / "manifest.jsonl").is_file() for split in ("calibration", "evaluation")):
            continue
        usable = []
        for name, wav, text in asterisk_clips(root, suffix):
            info = sf.info(str(wav))
            if 2.0 <= info.duration <= 30.0:
                usable.append((name, wav, text))
        if len(usable) < n_eval + n_calib:
            sys.exit(f"{suffix}: {len(usable)} usable clips, fewer than --eval {n_eval} + --calib {n_calib}")
        ev = sorted({int((k + 0.5) * len(usable) / n_eval) for k in range(n_eval)})
        rest = [i for i in range(len(usable)) if i not in set(ev)]
        ca = [rest[int((k + 0.5) * len(rest) / n_calib)] for k in range(n_calib)]
        for split, idx in (("evaluation", ev), ("calibration", ca)):
            folder = dest / split / lang
            folder.mkdir(parents=True, exist_ok=True)
            rows = []
            for i in idx:
                name, wav, text = usable[i]
                samples, rate = sf.read(str(wav), dtype="float32", always_2d=False)
                y = to_mono_16k(samples, rate)
                cid = f"{lang}-{name.replace('/', '_')}"
                sf.write(str(folder / f"{cid}.wav"), y, 16000, subtype="PCM_16")
                rows.append({"id": cid, "lang": lang, "file": f"{cid}.wav", "text": text, "split": split,
                             "duration": round(len(y) / 16000, 3)})
            manifest = folder / "manifest.jsonl"
            tmp = manifest.with_suffix(".tmp")
            tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
            tmp.rename(manifest)
    return dest


# ---------------------------------------------------------------------------------------------- scoring

def clip_errors(refs: Sequence[str], hyps: Sequence[str], lang: str) -> tuple[np.ndarray, np.ndarray]:
    """Per clip (edits, reference words) with the project's normalizers (accents dropped for es_419: its
    Asterisk transcripts carry none, as the score stage compares them)."""
    from whisper_npu.eval import metrics as M

    diacritics = lang != "es_419"
    counts = [M.clip_errors(r, h, lang, diacritics) for r, h in zip(refs, hyps)]
    return np.array([c.edits for c in counts]), np.array([c.ref_units for c in counts])


def paired_bootstrap(e_ref: np.ndarray, e_new: np.ndarray, n: np.ndarray, draws: int = 2000,
                     seed: int = 0) -> tuple[float, float, float]:
    """(delta, low, high): corpus WER(new) - WER(ref) and its 95 % interval, clips resampled in pairs."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(n), size=(draws, len(n)))
    deltas = (e_new[idx].sum(1) - e_ref[idx].sum(1)) / np.maximum(n[idx].sum(1), 1)
    lo, hi = np.percentile(deltas, [2.5, 97.5])
    return float((e_new.sum() - e_ref.sum()) / n.sum()), float(lo), float(hi)


# ---------------------------------------------------------------------------------------------- running

def _key(overrides: dict) -> str:
    return hashlib.sha256(json.dumps(overrides, sort_keys=True).encode()).hexdigest()[:10]


def decode_all(backend: Any, clips: Sequence[Any], features: dict, cfg: Any, to_text: Any, cache: Path,
               batch_size: int) -> list[str]:
    """The transcription of every clip, in ``clips``' order, through the transcription stages' loop
    (``batch_size`` clips at a time, as ``transcribe.batch_size``); cached in ``cache``."""
    from whisper_npu.core.languages import TRANSCRIBE
    from whisper_npu.decoding.run import run_clips

    if cache.is_file():
        return json.loads(cache.read_text(encoding="utf-8"))
    records = run_clips(cache.stem, backend, clips, lambda c: features[c.id], cfg, to_text, batch_size)
    text = {r["id"]: r["text"] for r in records if r["task"] == TRANSCRIBE}
    texts = [text[c.id] for c in clips]
    cache.write_text(json.dumps(texts, ensure_ascii=False), encoding="utf-8")
    return texts


def memory(args: Any, argv: Sequence[str], work: Path, audio: Path, langs: list[str], base: dict, store: Path) -> Table:
    """Peak RSS of the compile stage (static, every calibration clip fed to the quantizer) per component."""
    import copy

    from bench.memory import peak_rss
    from stages import calibrate_decoder as dec_stage
    from stages import calibrate_encoder as enc_stage
    from stages import toolchain
    from whisper_npu.audio.clips import read_clips
    from whisper_npu.calibration import sequences as cal
    from whisper_npu.model.store import load_hf
    from whisper_npu.params.full import load_params

    params = copy.deepcopy(base)
    params["calibration"].update(text_source="reference", translate_ratio=0.0)   # no English references here
    params["compile"]["backend"] = "onnxruntime"
    params["compile"]["onnxruntime"].update(VARIANTS[args.variants[0]])
    params["compile"]["onnxruntime"]["calibration_samples"] = args.quantizer_samples or len(langs) * args.calib
    pp = load_params(write_params(work / "params-memory.yaml", params))
    clips = read_clips(audio, langs, "calibration", args.calib)
    calib = work / "calibration" / f"memory-{len(langs)}x{args.calib}"
    if not (calib / "done").is_file():
        model, processor = load_hf(store)
        enc_stage.build_encoder_set(clips, processor.feature_extractor, model.config, calib / "encoder")
        samples = dec_stage.plan_samples(clips, cal.task_mix(clips, pp.calibration.translate_ratio, pp.seed),
                                         "reference")
        (calib / "decoder").mkdir(parents=True, exist_ok=True)
        dec_stage.write_decoder_set(model, processor, samples, calib / "decoder", pp.calibration, pp.seed)
        (calib / "done").write_text("")
        del model, processor
    if not (work / "toolchain.json").is_file():
        toolchain.main(["--params", str(work / "params-memory.yaml"), "--out", str(work / "toolchain.json")])
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    t = Table(f"Peak RSS of the compile stage, static INT8 ({args.variants[0]}), {model_name(args)}, "
              f"calibration set of {args.calib} clips x {len(langs)} languages", ["component", "calibration samples",
              "peak RSS MB", "wall s"], command=command(MODULE, argv), digits=0)
    files = {"encoder": "encoder/whisper_encoder_cali.txt", "decoder": "decoder/whisper_decoder_calib.json"}
    mem = work / f"memory-{pp.compile.onnxruntime.calibration_samples}"
    mem.mkdir(exist_ok=True)
    for comp in ("encoder", "decoder"):
        out = mem / comp
        argv_c = [sys.executable, "-m", "stages.compile", "--component", comp, "--params",
                  str(work / "params-memory.yaml"), "--toolchain", str(work / "toolchain.json"), "--model", str(store),
                  "--calibration", str(calib / files[comp]), "--out", str(out),
                  "--metrics", str(mem / f"metrics_{comp}.json")]
        mb, seconds, code = peak_rss(argv_c, work, env, mem / f"{comp}.log")
        if code != 0:
            sys.exit(f"compile {comp} failed; see {mem / f'{comp}.log'}")
        prov = json.loads((out / "provenance.json").read_text())
        t.add(comp, prov["quantization"]["calibration_samples"], f"{mb:.0f}", f"{seconds:.0f}")
    t.notes += ["the quantizer and the smoothing read the samples one at a time (streamed), so what they hold "
                "is one sample's working set",
                "decoder calibration text: the clips' shipped transcripts (calibration.text_source = reference, "
                "translate_ratio 0: the prompts have no English references), so building the set needs no "
                "generation; the quantizer's memory does not depend on the text",
                "peak RSS: ru_maxrss of the compile stage process (bench/memory.py's launcher)"]
    return t


def model_name(args: Any) -> str:
    return "whisper-base" if args.model == "base" else "tiny random Whisper"


def run(argv: Sequence[str] | None = None) -> list[Table]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--asterisk", type=Path, default=None,
                   help="folder the Asterisk .debs were unpacked into (required unless --quick)")
    p.add_argument("--languages", nargs="+", default=["en"], choices=list(ASTERISK))
    p.add_argument("--eval", type=int, default=30, help="evaluation clips per language")
    p.add_argument("--calib", type=int, default=16, help="calibration clips per language (disjoint)")
    p.add_argument("--variants", nargs="+", default=list(DEFAULT_VARIANTS), choices=list(VARIANTS), metavar="V")
    p.add_argument("--workdir", type=Path, default=None,
                   help="cache folder (audio, calibration, compiled); required unless --quick (a temp dir)")
    p.add_argument("--model", choices=("base", "tiny"), default="base",
                   help="base: real whisper-base (PyPI wheels); tiny: random tiny Whisper (code path only)")
    p.add_argument("--max-new-tokens", type=int, default=None, help="decode cap (default: transcribe.max_new_tokens)")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--no-wer", action="store_true", help="compile and report numerics only (no decoding)")
    p.add_argument("--quantizer-samples", type=int, default=None,
                   help="--memory: calibration samples fed to the quantizer (default: all)")
    p.add_argument("--memory", action="store_true", help="only the compile stage's peak RSS (static, the first "
                   "--variants entry), every --calib clip of every language fed to the quantizer")
    p.add_argument("--quick", action="store_true", help="tiny model, synthetic speech (no --asterisk), 1 evaluation + "
                   "3 calibration clips, 8 tokens, a temporary work folder (code path only)")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = p.parse_args(argv)
    if args.quick:
        args.model, args.eval, args.calib = "tiny", 1, 3
        args.max_new_tokens = args.max_new_tokens or 8
    elif args.asterisk is None or args.workdir is None:
        p.error("--asterisk and --workdir are required (unless --quick)")
    if args.workdir is None:
        with tempfile.TemporaryDirectory(prefix="bench-static-int8-") as tmp:
            return _run(args, argv, Path(tmp))
    return _run(args, argv, args.workdir)


def _run(args: Any, argv: Sequence[str], workdir: Path) -> list[Table]:
    import torch

    from bench.compiled_models import calibration_sets, compile_mode
    from stages import toolchain
    from whisper_npu.artifacts import artifact
    from whisper_npu.audio.clips import Clip
    from whisper_npu.audio.features import npu_features
    from whisper_npu.audio.prepare import read_wav
    from whisper_npu.core.files import read_json, read_jsonl
    from whisper_npu.decoding.greedy import DecodeConfig, tokenizer_text
    from whisper_npu.model.store import load_hf
    from whisper_npu.params.full import load_params
    from whisper_npu.runtimes.onnxruntime import load_ort_backend
    from whisper_npu.runtimes.torch_ref import TorchBackend

    torch.set_num_threads(args.threads)
    work = workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    langs = [ASTERISK[s][0] for s in args.languages]
    tag = f"{'-'.join(sorted(args.languages))}-e{args.eval}-c{args.calib}" + ("-quick" if args.quick else "")
    if args.quick:   # synthetic speech with reference text, as the audio stage makes it
        audio = synth_audio(work, langs, args.calib, args.eval)
    else:
        audio = prepare_audio(args.asterisk, args.languages, args.eval, args.calib,
                              work / "audio" / f"e{args.eval}-c{args.calib}")
    store = reference_model(args.model, work)
    base = default_params()
    base["languages"] = langs
    base["compile"]["numerics_samples"] = 1 if args.quick else 4
    base["compile"]["onnxruntime"]["calibration_samples"] = len(langs) * args.calib
    if args.quick:
        base["calibration"]["max_new_tokens"] = 8
    if args.max_new_tokens:
        base["transcribe"]["max_new_tokens"] = args.max_new_tokens
    if args.memory:
        return [memory(args, argv, work, audio, langs, base, store)]
    params = load_params(write_params(work / f"params-{tag}.yaml", base))
    model, processor = load_hf(store)

    calib_clips, eval_clips = [], []
    for lang in sorted(langs):
        for r in read_jsonl(audio / "calibration" / lang / "manifest.jsonl"):
            calib_clips.append(Clip(r["id"], lang, audio / "calibration" / lang / r["file"], r["duration"], r["text"]))
        for r in read_jsonl(audio / "evaluation" / lang / "manifest.jsonl"):
            eval_clips.append(Clip(r["id"], lang, audio / "evaluation" / lang / r["file"], r["duration"], r["text"],
                                   None))
    calib_dir = work / "calibration" / tag
    if not (calib_dir / "done").is_file():
        calibration_sets(model, processor, calib_clips, calib_dir, params)
        (calib_dir / "done").write_text("")
    calib = (calib_dir / "encoder" / "whisper_encoder_cali.txt", calib_dir / "decoder" / "whisper_decoder_calib.json")
    if not (work / "toolchain.json").is_file():
        toolchain.main(["--params", str(work / f"params-{tag}.yaml"), "--out", str(work / "toolchain.json")])

    features = {c.id: npu_features(processor.feature_extractor, read_wav(c.audio)) for c in eval_clips}
    cfg = DecodeConfig.from_params(model.generation_config, model.config, params.transcribe)
    to_text = tokenizer_text(processor.tokenizer)
    batch = params.transcribe.batch_size
    (work / "decodes").mkdir(exist_ok=True)
    fp32 = None if args.no_wer else decode_all(TorchBackend(model), eval_clips, features, cfg, to_text,
                                               work / "decodes" / f"fp32-{tag}.json", batch)

    by_lang = {lang: [i for i, c in enumerate(eval_clips) if c.lang == lang] for lang in sorted(langs)}
    speech = "synthetic speech (espeak-ng" if args.quick else "real speech (Asterisk prompts"
    t = Table(f"ONNX Runtime INT8 variants of {model_name(args)} on {speech}, "
              f"{args.eval} evaluation clips per language, {args.calib} calibration clips per language)"
              + (", code path only" if args.quick else ""),
              ["variant", "encoder cosine", "decoder cosine (top-1)", "linear layers in float", "size MB (enc + dec)",
               *[f"{lang} WER fp32 → compiled, delta [95 % CI]" for lang in by_lang]],
              command=command(MODULE, argv), digits=3)
    for name in args.variants:
        overrides = VARIANTS[name]
        out = work / "compiled" / f"{tag}-{_key(overrides)}"
        if not (out / "done").is_file():
            compile_mode(overrides, base, store, work / "toolchain.json", calib, out)
            (out / "done").write_text(name)
        enc_dir, dec_dir = out / "encoder", out / "decoder"
        m_enc, m_dec = read_json(out / "metrics_encoder.json"), read_json(out / "metrics_decoder.json")
        log.info("%s: encoder %s, decoder %s", name, m_enc["compiled"], m_dec["compiled"])
        if fp32 is None:
            texts = None
        else:
            backend = load_ort_backend(enc_dir, dec_dir, threads=args.threads)
            texts = decode_all(backend, eval_clips, features, cfg, to_text,
                               work / "decodes" / f"{tag}-{_key(overrides)}.json", batch)
        q = [read_json(d / "provenance.json")["quantization"] for d in (enc_dir, dec_dir)]
        n_lin, n_float = sum(x["linear_layers"] for x in q), sum(x["linear_layers_float"] for x in q)
        cells = []
        for lang, idx in by_lang.items():
            if texts is None:
                cells.append(None)
                continue
            refs = [eval_clips[i].text for i in idx]
            e_f, n = clip_errors(refs, [fp32[i] for i in idx], lang)
            e_c, _ = clip_errors(refs, [texts[i] for i in idx], lang)
            d, lo, hi = paired_bootstrap(e_f, e_c, n)
            cells.append(f"{e_f.sum() / n.sum():.3f} → {e_c.sum() / n.sum():.3f}, {d:+.3f} [{lo:+.3f}, {hi:+.3f}]")
        enc = m_enc["compiled"]["encoder_hidden_states"]
        dec = m_dec["compiled"]["logits"]
        size = [artifact(d).stat().st_size / 1e6 for d in (enc_dir, dec_dir)]
        t.add(name, f"{enc['cosine_mean']:.4f}", f"{dec['cosine_mean']:.4f} ({dec['top1_agreement']:.2f})",
              f"{n_float}/{n_lin} ({100 * n_float / n_lin:.0f} %)", f"{size[0]:.1f} + {size[1]:.1f}", *cells)
        log.info("%s: %s", name, t.rows[-1])
    t.notes += [f"fp32: torch (HF {model_name(args)}), the transcribe_fp32 stage's reference; greedy, max_new_tokens "
                f"{params.transcribe.max_new_tokens}",
                f"cosine: vs torch fp32 on {params.compile.numerics_samples} held-out calibration entries (compile "
                "stage numerics); decoder under "
                "teacher forcing, top-1 = share of positions with the fp32 argmax",
                "a16: the named layers' input and output activations are 16-bit (weights int8), as Mobilint's "
                "mixed precision; "
                "every other quantized activation int8 with a static per-tensor scale",
                "WER delta in absolute points x 0.01 (0.010 = 1.0 point); CI: paired bootstrap over clips"]
    return [t]


def main(argv: Sequence[str] | None = None) -> None:
    print_tables(run, argv)


if __name__ == "__main__":
    main()
