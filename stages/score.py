"""Stage score: what compilation did to accuracy, per language, from the two transcription stages' outputs.

    python -m stages.score --fp32 data/transcripts/fp32 --compiled data/transcripts/compiled \
        --compiled-timing data/transcripts/compiled.timing.json --metrics metrics/evaluate.json \
        --wer-plot plots/wer.json --bleu-plot plots/bleu.json --transcripts metrics/transcripts.jsonl

Per language (whisper_npu/eval/score.py): WER (CER for zh/ja/th) with substitutions, deletions and insertions,
BLEU of the translations, a paired bootstrap 95 % interval of compiled minus fp32 (seeded from ``seed``) and a
verdict against ``score.max_wer_increase``: pass (interval within the budget), fail (above it) or inconclusive
(straddles it, or fewer than ``score.min_verdict_clips`` scored clips); stop reasons, agreement, real-time factors,
sizes. A fail verdict fails the stage only with ``score.strict`` (and leaves no outputs). It reads transcripts and
the ``score`` keys only, so a budget change reruns this stage alone, in seconds. ``not_checked`` everywhere when the
compiled model could not run where it was transcribed (``compiled_run`` says why).
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from whisper_npu.core.errors import StageError
from whisper_npu.core.files import atomic_output, read_json, write_json, write_jsonl
from whisper_npu.core.languages import TRANSCRIBE
from whisper_npu.core.stage import run_stage
from whisper_npu.eval import transcripts
from whisper_npu.eval.score import COMPILED, FP32, score
from whisper_npu.params.base import languages_of, read, seed_of
from whisper_npu.params.score import ScoreParams

log = logging.getLogger(__name__)


def plot_rows(metrics: dict[str, Any]) -> tuple[list[dict], list[dict]]:
    """Rows for `dvc plots`: {language, unit, fp32, compiled} for WER/CER and for BLEU (compiled is null
    when the compiled model did not run)."""
    wer_rows, bleu_rows = [], []
    for lang, e in sorted(metrics["languages"].items()):
        u = e["unit"]
        comp = e[COMPILED] or {}
        if e[FP32][u] is not None:
            wer_rows.append({"language": lang, "unit": u, FP32: e[FP32][u], COMPILED: comp.get(u)})
        if e[FP32]["bleu"] is not None:
            bleu_rows.append({"language": lang, FP32: e[FP32]["bleu"], COMPILED: comp.get("bleu")})
    return wer_rows, bleu_rows


def budget_failure(metrics: dict[str, Any]) -> str | None:
    """The strict-mode error message, or None when no language's verdict is fail."""
    b = metrics["budget"]
    if not b["fail"]:
        return None
    parts = []
    for lang in b["fail"].split(","):
        e = metrics["languages"][lang]
        ci = e["ci95"][TRANSCRIBE]
        parts.append(f"{lang} +{e['delta'][e['unit']]:.3f} (95 % CI {ci['low']:+.3f}..{ci['high']:+.3f})")
    return (f"score.max_wer_increase = {b['max_wer_increase']}: exceeded by {', '.join(parts)} (compiled minus fp32 "
            "WER/CER); improve calibration or compile options, or set score.strict = false to report only")


def read_transcripts(fp32_dir: Path, compiled_dir: Path, compiled_timing: Path, langs: list[str]
                     ) -> tuple[list[dict], list, dict]:
    """(every record of both systems with its seconds, the clips, compiled run.json with ``machines``: where each
    system ran, from the timing files)."""
    run = read_json(compiled_dir / "run.json")
    records, clips = [], []
    machines: dict[str, dict] = {}
    for lang in sorted(langs):
        recs, cl = transcripts.read(fp32_dir / f"{lang}.jsonl", fp32_dir / f"{lang}.timing.json")
        records += recs
        clips += cl
        timing = read_json(fp32_dir / f"{lang}.timing.json")
        machines.setdefault(FP32, {"device": timing.get("device"), "cpu": timing.get("cpu")})
        if run["compiled_run"]["status"] == "run":
            path = compiled_dir / f"{lang}.jsonl"
            if not path.is_file():
                raise StageError(f"{path}: missing; the compiled transcripts lack {lang} (rerun "
                                 "`dvc repro transcribe_compiled`)")
            records += transcripts.read(path, compiled_timing)[0]
    if run["compiled_run"]["status"] == "run":
        timing = read_json(compiled_timing)
        machines[COMPILED] = {"device": timing.get("device"), "cpu": timing.get("cpu")}
    return records, clips, {**run, "machines": machines}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--fp32", type=Path, required=True, help="folder of <lang>.jsonl (+ .timing.json) fp32")
    parser.add_argument("--compiled", type=Path, required=True, help="the compiled transcription's folder")
    parser.add_argument("--compiled-timing", type=Path, required=True)
    parser.add_argument("--metrics", type=Path, required=True)
    parser.add_argument("--wer-plot", type=Path, required=True)
    parser.add_argument("--bleu-plot", type=Path, required=True)
    parser.add_argument("--transcripts", type=Path, required=True, help="every hypothesis of both systems (JSONL)")
    args = parser.parse_args(argv)
    raw = read(args.params)
    seed, langs, p = seed_of(raw), languages_of(raw), ScoreParams.of(raw)
    records, clips, run = read_transcripts(args.fp32, args.compiled, args.compiled_timing, langs)
    compiled_ran = run["compiled_run"]["status"] == "run"
    metrics = score(records, clips, p, seed, compiled_run=compiled_ran)
    metrics["compiled_run"] = run["compiled_run"]
    metrics["backends"] = {FP32: "torch", COMPILED: run["backend"]}
    metrics["compiled_device"] = run.get("device")   # runtime, target, dev_no / core mode / cores per component
    metrics["sizes"] = run["sizes"]
    metrics["machines"] = run["machines"]   # the CPU (and its kernel-picking ISA) each system ran on
    for lang, e in metrics["languages"].items():
        u, ci = e["unit"], e["ci95"][TRANSCRIBE]
        log.info("%s %s fp32 %s compiled %s delta %s 95%% CI %s verdict %s", lang, u, e[FP32][u],
                 (e[COMPILED] or {}).get(u), e["delta"][u], ci and f"{ci['low']:+.3f}..{ci['high']:+.3f}", e["verdict"])
    failure = budget_failure(metrics)
    if failure:
        log.warning("accuracy budget exceeded: %s", metrics["budget"]["fail"])
        if p.strict:
            for path in (args.metrics, args.wer_plot, args.bleu_plot, args.transcripts):
                path.unlink(missing_ok=True)   # a failed stage leaves no outputs (DVC also removes them first)
            raise StageError(failure)
    wer_rows, bleu_rows = plot_rows(metrics)
    with atomic_output(args.transcripts) as tmp:
        write_jsonl(tmp, transcripts.merged(records, clips))
    with atomic_output(args.wer_plot) as tmp:
        write_json(tmp, wer_rows)
    with atomic_output(args.bleu_plot) as tmp:
        write_json(tmp, bleu_rows)
    with atomic_output(args.metrics) as tmp:
        write_json(tmp, metrics)


if __name__ == "__main__":
    run_stage(main)
