"""Print the score stage's metrics as tables (what `make demo` shows at the end).

    python -m whisper_npu.eval.report [metrics/evaluate.json]              # every column, per language
    python -m whisper_npu.eval.report metrics/evaluate.json --headline      # the README's table
    python -m whisper_npu.eval.report metrics/evaluate.json --update README.md   # rewrite the README's table

`dvc metrics show` lists every key as a column; these are the per-language views a person reads first.
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
    out = ["\n".join(rows), "", "\n".join(_summary(metrics))]
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


def _summary(metrics: dict) -> list[str]:
    lines = ["| unit | speech | languages | clips | fp32 mean | compiled mean | delta | verdicts |",
             "|---|---|---|---|---|---|---|---|"]
    for u, groups in metrics.get("summary", {}).items():
        for speech, g in groups.items():
            verdicts = ", ".join(f"{k} {v}" for k, v in sorted(g["verdicts"].items()))
            lines.append(f"| {u} | {speech} | {len(g['languages'].split(','))} | {g['clips']} | {_num(g['fp32'])} | "
                         f"{_num(g.get('compiled'))} | {_num(g.get('delta'))} | {verdicts} |")
    return lines


def headline(metrics: dict) -> str:
    """The README's table: per language the error rates, the delta with its interval and the verdict; then the
    summaries (WER and CER apart, real and synthetic apart) and which systems were compared."""
    rows = ["| language | speech | clips | unit | fp32 | compiled | delta [95 % CI] | verdict |",
            "|---|---|---|---|---|---|---|---|"]
    for lang, m in sorted(metrics["languages"].items()):
        u, fp, co = m["unit"], m["fp32"], m.get("compiled") or {}
        delta = _num(m["delta"].get(u))
        ci = m["ci95"].get("transcribe")
        rows.append(f"| {lang} | {m['speech']} | {m['scored_clips']} | {u} | {_num(fp.get(u))} | {_num(co.get(u))} | "
                    f"{delta}{f' [{_ci(ci)}]' if ci else ''} | {m['verdict']} |")
    backends = metrics.get("backends", {})
    b = metrics["budget"]
    return "\n".join(rows + [""] + _summary(metrics) + [
        "", f"fp32 = {backends.get('fp32')}, compiled = {backends.get('compiled')}; budget: compiled minus fp32 <= "
            f"{b['max_wer_increase']} per language (95 % paired bootstrap interval), verdict {b['verdict']}"])


BEGIN, END = "<!-- results: python -m whisper_npu.eval.report metrics/evaluate.json --update README.md -->", \
    "<!-- /results -->"


def update(path: Path, metrics: dict) -> None:
    """Rewrite the block between the markers in ``path`` with :func:`headline`."""
    text = path.read_text(encoding="utf-8")
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    path.write_text(text[:start] + "\n" + headline(metrics) + "\n" + text[end:], encoding="utf-8")


def block(path: Path) -> str:
    """The table block of ``path`` as :func:`update` writes it (for the test that keeps it current)."""
    text = path.read_text(encoding="utf-8")
    return text[text.index(BEGIN) + len(BEGIN):text.index(END)].strip("\n")


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("metrics", type=Path, nargs="?", default=Path("metrics/evaluate.json"))
    parser.add_argument("--headline", action="store_true", help="the README's compact table")
    parser.add_argument("--update", type=Path, help="rewrite the results block of this Markdown file")
    args = parser.parse_args(argv)
    try:
        metrics = read_json(args.metrics)
        if args.update:
            update(args.update, metrics)
        else:
            print(headline(metrics) if args.headline else table(metrics))
    except StageError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
