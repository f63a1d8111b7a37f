"""Print the evaluate stage's metrics as one short table (what `make demo` shows at the end).

    python -m whisper_npu.report [metrics/evaluate.json]

`dvc metrics show` lists every key as a column; this is the per-language view a person reads first.
"""
from __future__ import annotations

import sys
from pathlib import Path

from whisper_npu.core.errors import StageError
from whisper_npu.core.files import read_json


def _num(x: float | None, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _ci(ci: dict | None) -> str:
    return "-" if not ci else f"{ci['low']:+.3f}..{ci['high']:+.3f}"


def _stops(m: dict | None) -> str:
    """repetition-guard stops / clips cut by the token cap."""
    return "-" if not m else f"{m['stops'].get('repetition', 0)} / {m['cut_by_cap']}"


def table(metrics: dict) -> str:
    """Per-language rows, then the summaries (WER and CER apart, real and synthetic apart) and the verdicts."""
    rows = ["| language | speech | clips | unit | fp32 | compiled | delta | 95 % CI of delta | verdict | "
            "S/D/I fp32 | S/D/I compiled | rep. / cap fp32 | rep. / cap compiled | BLEU fp32 | BLEU compiled |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for lang, m in sorted(metrics["languages"].items()):
        u, fp, co = m["unit"], m["fp32"], m.get("compiled") or {}

        def sdi(e: dict) -> str:
            return "-" if not e else f"{e['substitutions']}/{e['deletions']}/{e['insertions']}"
        rows.append(f"| {lang} | {m['speech']} | {m['scored_clips']} | {u} | {_num(fp.get(u))} | {_num(co.get(u))} | "
                    f"{_num(m['delta'].get(u))} | {_ci(m['ci95'].get('transcribe'))} | {m['verdict']} | "
                    f"{sdi(fp)} | {sdi(co)} | {_stops(fp)} | {_stops(co or None)} | "
                    f"{_num(fp.get('bleu'), 1)} | {_num(co.get('bleu'), 1)} |")
    out = ["\n".join(rows), ""]
    lines = ["| unit | speech | languages | clips | fp32 mean | compiled mean | delta | verdicts |",
             "|---|---|---|---|---|---|---|---|"]
    for u, groups in metrics.get("summary", {}).items():
        for speech, g in groups.items():
            verdicts = ", ".join(f"{k} {v}" for k, v in sorted(g["verdicts"].items()))
            lines.append(f"| {u} | {speech} | {len(g['languages'].split(','))} | {g['clips']} | {_num(g['fp32'])} | "
                         f"{_num(g.get('compiled'))} | {_num(g.get('delta'))} | {verdicts} |")
    out.append("\n".join(lines))
    b = metrics["budget"]
    counts = "; ".join(f"{speech}: " + ", ".join(f"{n} {v}" for v, n in c.items() if n)
                       for speech, c in b["counts"].items() if any(c.values()))
    backends = metrics.get("backends", {})
    run = metrics.get("compiled_run") or {"status": "run"}
    out.append(f"\nverdict {b['verdict']} (budget: compiled minus fp32 <= {b['max_wer_increase']} per language, "
               f"95 % paired bootstrap interval); {counts}")
    out.append(f"fp32 = {backends.get('fp32')}, compiled = {backends.get('compiled')}"
               + ("" if run["status"] == "run" else f" (not run: {run['reason']})"))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    path = Path(args[0] if args else "metrics/evaluate.json")
    try:
        print(table(read_json(path)))
    except StageError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
