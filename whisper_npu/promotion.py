"""Greedy promotion checked by WER: the sensitivity stage's proof that a recipe holds on real speech.

The study (whisper_npu/compilers/onnxruntime/sensitivity.py) ranks role FAMILIES (one role over every block of a
component: the residual Adds, the LayerNorms, fc2, ...; compilers/onnxruntime/groups.py) by what restoring each
alone to 16 bits gains. Step k promotes, in each component, its k best-ranked families (all of the others stay 8
bit; a family that gains nothing alone is still ranked, last), compiles both components with exactly that recipe
(the compile stage's own code: the recipe file applied with ``dvc exp run`` builds the same models) and decodes the
evaluation clips of ``sensitivity.wer_languages`` (transcribe task, the ``transcribe`` decode options) against the
fp32 transcripts the pipeline already has. The smallest step where no language's WER rose more than
``sensitivity.max_wer_increase`` is the recipe: found by bisection of 1..max_steps (``sensitivity.search: bisect``:
3 decoded steps of 7, the smallest passing one if a passing step stays passing with more families at 16 bits, as
measured on whisper-base) or by trying step 1, 2, ... in turn (``linear``). A step stops at its first failing
language (a broken model decodes to the token cap, slowly); the next step decodes that language first. Every step's
per-language delta carries its paired-bootstrap 95 % interval.
"""
from __future__ import annotations

import dataclasses
import logging
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from whisper_npu.core.errors import StageError
from whisper_npu.core.languages import TRANSCRIBE

log = logging.getLogger(__name__)


def ranked_families(report: dict) -> list[str]:
    """The families of one component's report, best isolation gain first. Those that gain nothing alone come last
    but stay in: on whisper-base the encoder's fc2 loses alone and is what the others need
    (docs/onnxruntime-int8.md)."""
    return [n for n in report["ranking"] if n.startswith("family:")]


def step_groups(reports: dict[str, dict], step: int) -> dict[str, list[str]]:
    """component -> the group names promoted at ``step`` (its ``step`` best families, expanded)."""
    out = {}
    for component, report in reports.items():
        rows = {r["group"]: r for r in report["groups"]}
        out[component] = sorted({g for fam in ranked_families(report)[:step] for g in rows[fam]["chain"]})
    return out


def steps_available(reports: dict[str, dict]) -> int:
    return max((len(ranked_families(r)) for r in reports.values()), default=0)


def range_methods(reports: dict[str, dict]) -> dict[str, str]:
    """group -> the range method the study chose for it (only groups where one beat the default)."""
    return {r["group"]: r["range_method"] for report in reports.values() for r in report["groups"]
            if r.get("range_method")}


def recipe_groups(promoted: dict[str, list[str]], methods: dict[str, str]) -> dict[str, dict]:
    """``compile.onnxruntime.groups`` of a recipe: the promoted groups at 16 bits, and each group that stays at 8
    bits with the range method the study chose for it (chosen for 8 bits: a clipping range only costs a 16-bit
    tensor; on whisper-base every group at 16 bits with the methods applied lost en_us +2.0 points, +0.0 without)."""
    out: dict[str, dict] = {name: {"bits": 16} for names in promoted.values() for name in names}
    out.update({name: {"method": method} for name, method in methods.items() if name not in out})
    return out


def candidate_params(cp: Any, proxy: str, promoted: dict[str, list[str]], methods: dict[str, str] | None = None) -> Any:
    """``compile`` params with the recipe applied, as ``sensitivity/onnxruntime.overrides`` applies it."""
    from whisper_npu.params.compile import GroupSetting

    groups = {name: GroupSetting(**setting) for name, setting in recipe_groups(promoted, methods or {}).items()}
    o = cp.onnxruntime.model_copy(update={"mode": "static", "proxy": proxy, "keep_float": [], "high_precision": [],
                                          "groups": groups})
    return cp.model_copy(update={"backend": "onnxruntime", "onnxruntime": o})


def fp32_rows(fp32_dir: Path, lang: str) -> dict[str, dict]:
    """clip id -> the fp32 transcript row (transcribe task) of ``<fp32_dir>/<lang>.jsonl``."""
    from whisper_npu.core.files import read_jsonl

    path = fp32_dir / f"{lang}.jsonl"
    if not path.is_file():
        raise StageError(f"{path}: no fp32 transcripts for sensitivity.wer_languages entry {lang!r} "
                         "(run `dvc repro transcribe_fp32`)")
    return {r["id"]: r for r in read_jsonl(path) if r["task"] == TRANSCRIBE}


def language_delta(lang: str, clips: Sequence[Any], fp32: dict[str, dict], hyps: dict[str, str], samples: int,
                   rng: np.random.Generator) -> dict[str, Any]:
    """WER of fp32 and of the candidate on the same clips, the delta and its paired-bootstrap 95 % interval."""
    from whisper_npu.eval import metrics

    scored = [c for c in clips if c.text]
    base = [metrics.clip_errors(c.text, fp32[c.id]["text"], lang, c.diacritics) for c in scored]
    cand = [metrics.clip_errors(c.text, hyps[c.id], lang, c.diacritics) for c in scored]
    b, o = sum(base, metrics.ZERO), sum(cand, metrics.ZERO)
    delta = None if b.rate is None or o.rate is None else round(o.rate - b.rate, 6)
    ci = metrics.bootstrap_rate_delta(base, cand, samples, rng)
    return {"clips": len(scored), "reference_units": b.ref_units,
            "fp32_wer": None if b.rate is None else round(b.rate, 6),
            "wer": None if o.rate is None else round(o.rate, 6), "delta": delta,
            "ci95": None if ci is None else {k: round(v, 6) for k, v in ci.items()}}


def promote(reports: dict[str, dict], compile_fn: Callable[[str, Any, Path], Any], *, model_dir: Path, cp: Any,
            sp: Any, tp: Any, audio_root: Path, fp32_dir: Path, bootstrap_samples: int, seed: int) -> dict[str, Any]:
    """Run the steps (module docstring) until one passes; ``compile_fn(component, compile params, out_dir)`` builds
    one component as the compile stage does. Returns ``{"steps": [...], "chosen": step or None, "promoted":
    component -> groups of the chosen step (of the last step tried when none passed)}``."""
    from whisper_npu.audio.clips import read_clips
    from whisper_npu.audio.features import npu_features
    from whisper_npu.audio.prepare import read_wav
    from whisper_npu.decoding.greedy import DecodeConfig, tokenizer_text
    from whisper_npu.decoding.run import run_clips
    from whisper_npu.model import store
    from whisper_npu.runtimes.onnxruntime import load_ort_backend

    config, generation = store.load_configs(model_dir)
    processor = store.load_processor(model_dir)
    cfg = DecodeConfig.from_params(generation, config, tp)
    to_text = tokenizer_text(processor.tokenizer)
    clips = {lang: [dataclasses.replace(c, text_en=None)   # transcribe only: WER is the goal
                    for c in read_clips(audio_root, [lang], "evaluation", sp.wer_clips)]
             for lang in sp.wer_languages}
    fp32 = {lang: fp32_rows(fp32_dir, lang) for lang in sp.wer_languages}
    for lang, cs in clips.items():
        missing = [c.id for c in cs if c.id not in fp32[lang]]
        if missing:
            raise StageError(f"{fp32_dir / (lang + '.jsonl')}: no fp32 transcript for evaluation clips {missing[:3]} "
                             "(rerun `dvc repro transcribe_fp32`)")
    order = list(sp.wer_languages)
    steps: list[dict] = []

    def step(k: int) -> dict[str, Any]:
        nonlocal order
        promoted = step_groups(reports, k)
        start = time.perf_counter()
        row: dict[str, Any] = {"step": k, "families": {c: ranked_families(r)[:k] for c, r in reports.items()},
                               "groups": sum(len(v) for v in promoted.values()), "languages": {}}
        with tempfile.TemporaryDirectory(prefix="whisper-npu-promotion-") as tmp:
            dirs = {c: Path(tmp) / c for c in ("encoder", "decoder")}
            cand = candidate_params(cp, sp.proxy, promoted, range_methods(reports))
            for component, out in dirs.items():
                out.mkdir()
                compile_fn(component, cand, out)
            row["compiled_bytes"] = sum(p.stat().st_size for d in dirs.values() for p in d.glob("*.onnx"))
            backend = load_ort_backend(dirs["encoder"], dirs["decoder"])
            for lang in order:
                records = run_clips(f"step {k} {lang}", backend, clips[lang],
                                    lambda c: npu_features(processor.feature_extractor, read_wav(c.audio)), cfg,
                                    to_text, tp.batch_size)
                hyps = {r["id"]: r["text"] for r in records}
                seconds = sum(r["seconds"] for r in records)
                rng = np.random.default_rng([seed, k, sorted(order).index(lang)])
                res = language_delta(lang, clips[lang], fp32[lang], hyps, bootstrap_samples, rng)
                audio_seconds = sum(c.duration for c in clips[lang])
                res["rtf"] = round(seconds / audio_seconds, 4) if audio_seconds > 0 else None   # this machine's CPU
                res["passed"] = res["delta"] is not None and res["delta"] <= sp.max_wer_increase
                row["languages"][lang] = res
                log.info("step %d (%d groups) %s: WER %s -> %s, delta %s, 95 %% CI %s: %s", k, row["groups"], lang,
                         res["fp32_wer"], res["wer"], res["delta"], res["ci95"], "pass" if res["passed"] else "FAIL")
                if not res["passed"]:
                    order = [lang] + [x for x in order if x != lang]   # the next step decodes it first
                    break
        row["passed"] = len(row["languages"]) == len(order) and all(r["passed"] for r in row["languages"].values())
        row["seconds"] = round(time.perf_counter() - start, 1)
        steps.append(row)
        return row

    chosen, lo, hi = None, 1, min(steps_available(reports), sp.max_steps)
    while lo <= hi:   # every step below lo failed; bisect: every step above hi that was tried passed
        k = (lo + hi) // 2 if sp.search == "bisect" else lo
        if step(k)["passed"]:
            chosen, hi = k, (k - 1 if sp.search == "bisect" else 0)
        else:
            lo = k + 1
    steps.sort(key=lambda r: r["step"])
    shown = chosen or (steps[-1]["step"] if steps else 0)   # none passed: the most promoted step tried
    return {"languages": list(sp.wer_languages), "clips_per_language": sp.wer_clips,
            "max_wer_increase": sp.max_wer_increase, "search": sp.search, "steps": steps, "chosen": chosen,
            "promoted": step_groups(reports, shown) if shown else {c: [] for c in reports}}


def curve_rows(promotion: dict) -> list[dict]:
    """Plot rows of the WER-vs-promoted-groups curve: one per (step, decoded language), with the interval."""
    return [{"step": s["step"], "groups": s["groups"], "lang": lang, "delta_wer": r["delta"],
             "ci_low": (r["ci95"] or {}).get("low"), "ci_high": (r["ci95"] or {}).get("high")}
            for s in promotion["steps"] for lang, r in sorted(s["languages"].items())]


def markdown(promotion: dict) -> str:
    """The steps as a table a person reads (delta in WER points, interval in brackets)."""
    langs = promotion["languages"]
    lines = [f"## Promotion checked by WER ({promotion['clips_per_language']} evaluation clips per language at most, "
             f"goal: delta <= {100 * promotion['max_wer_increase']:+.1f} points per language)", "",
             "| step | families (encoder; decoder) | groups at 16 bits | " + " | ".join(langs)
             + " | passed | seconds |",
             "|---" * (len(langs) + 5) + "|"]
    for s in promotion["steps"]:
        fams = "; ".join(", ".join(f.removeprefix("family:") for f in v) or "-" for v in s["families"].values())
        cells = []
        for lang in langs:
            r = s["languages"].get(lang)
            if r is None or r["delta"] is None:
                cells.append("not decoded" if r is None else "no reference")
            else:
                ci = r["ci95"] or {}
                cells.append(f"{100 * r['delta']:+.1f} [{100 * ci.get('low', float('nan')):+.1f}, "
                             f"{100 * ci.get('high', float('nan')):+.1f}] ({r['clips']} clips)")
        lines.append(f"| {s['step']} | {fams} | {s['groups']} | " + " | ".join(cells)
                     + f" | {'yes' if s['passed'] else 'no'} | {s['seconds']} |")
    chosen = promotion["chosen"]
    if promotion.get("search") == "bisect":
        lines += ["", "Steps chosen by bisection (`sensitivity.search: bisect`): steps not listed were not decoded."]
    lines += ["", f"Recipe: step {chosen}." if chosen else
              "No step reached the goal: the recipe files hold the most promoted step tried, which did not pass."]
    return "\n".join(lines) + "\n"
