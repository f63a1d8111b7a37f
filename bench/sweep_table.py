"""The calibration sweep's table and plot from `dvc exp show --json` (experiments queued by bench/sweep_queue.py).

    dvc exp show --json > bench/sweep-exp-show.json
    python -m bench.sweep_table bench/sweep-exp-show.json --svg bench/sweep.svg
    python -m bench.sweep_table first.json second.json     # runs in several sessions: merged, later files win

It reads JSON only, so it has no separate quick mode: tests/test_bench_quick.py runs it on the recorded sweep
(bench/sweep-exp-show.json and bench/sweep-exp-show-2.json).

Per experiment (named ``--prefix``*): the knob it changes from the baseline (``sweep-base``), and per language
fp32 WER, compiled WER, compiled-minus-fp32 delta with the score stage's 95 % paired-bootstrap interval, in
WER points, plus the compile stages' held-out numerics (encoder / decoder cosine, min over the held-out
entries). The SVG has one panel per knob: the delta per language with its interval against the knob's value.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from bench.sweep_queue import KNOBS

BASELINE = "sweep-base"
EVALUATE = "metrics/evaluate.json"
# knob label -> the params key whose value is shown (the recipe changes four keys: prefix_fractions names it)
KNOB_KEYS = {"samples per language": "calibration.samples_per_language",
             "translate ratio": "calibration.translate_ratio",
             "recipe": "calibration.prefix_fractions",
             "text source": "calibration.text_source"}


def experiments(show: list[dict], prefix: str = "sweep-") -> dict[str, dict]:
    """name -> the ``data`` record (params, metrics) of every FINISHED experiment whose name starts with prefix.

    `dvc exp show --json`: a list of commits, each with ``experiments``: [{executor: {state}, name, revs:
    [{name, data}]}]; queued, running and failed experiments (executor state other than success) are left out,
    as their ``data`` holds the baseline commit's metrics, not theirs.
    """
    out: dict[str, dict] = {}
    for commit in show:
        for group in commit.get("experiments") or []:
            state = (group.get("executor") or {}).get("state", "success")
            for rec in group.get("revs") or []:
                name = rec.get("name") or ""
                data = rec.get("data") or {}
                if state == "success" and name.startswith(prefix) and EVALUATE in (data.get("metrics") or {}):
                    out[name] = data
    return out


def _flat(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def params_of(data: dict) -> dict[str, Any]:
    return _flat(data["params"]["params.yaml"]["data"])


def _metric(data: dict, path: str) -> dict:
    return (data["metrics"].get(path) or {}).get("data") or {}


def knob_of(name: str) -> tuple[str, str]:
    """(knob label, the key it shows) of a sweep experiment, from bench/sweep_queue.py's KNOBS: the last of
    KNOB_KEYS it changes (sweep-reference changes the text source and, as it needs, the translate ratio)."""
    changed = KNOBS.get(name)
    if changed is None:
        raise SystemExit(f"error: experiment {name} is not one of bench/sweep_queue.py's KNOBS")
    for label, key in reversed(KNOB_KEYS.items()):
        if key in changed:
            return label, key
    return "baseline", ""


def rows(exps: dict[str, dict]) -> list[dict]:
    """One row per (experiment, language), the baseline first, then KNOBS' order."""
    out = []
    for name in [n for n in KNOBS if n in exps]:
        data = exps[name]
        p = params_of(data)
        label, key = knob_of(name)
        ev = _metric(data, EVALUATE)
        enc = _metric(data, "metrics/compile_encoder.json").get("compiled", {})
        dec = _metric(data, "metrics/compile_decoder.json").get("compiled", {})
        for lang in p["languages"]:
            m = ev["languages"][lang]
            unit = m["unit"]
            ci = m["ci95"]["transcribe"]
            out.append({
                "experiment": name, "knob": label, "value": _show(p[key]) if key else "",
                "samples_per_language": p["calibration.samples_per_language"],
                "translate_ratio": p["calibration.translate_ratio"],
                "recipe": "newest" if len(p["calibration.prefix_fractions"]) > 1 else "seed",
                "text_source": p["calibration.text_source"],
                "language": lang, "clips": m["scored_clips"], "unit": unit,
                "fp32": m["fp32"][unit], "compiled": m["compiled"][unit], "delta": m["delta"][unit],
                "low": ci["low"], "high": ci["high"], "verdict": m["verdict"],
                "encoder_cosine": next(iter(enc.values()), {}).get("cosine_min"),
                "decoder_cosine": next(iter(dec.values()), {}).get("cosine_min"),
            })
    return out


def _show(v: Any) -> str:
    if isinstance(v, list):
        return "newest" if len(v) > 1 else "seed"
    return str(v)


def markdown(table: list[dict]) -> str:
    head = ("| experiment | knob = value | language | clips | fp32 WER | compiled WER | delta, points [95 % CI] "
            "| encoder / decoder cosine (min) |")
    lines = [head, "|" + "---|" * 8]
    for r in table:
        knob = f"{r['knob']} = {r['value']}" if r["value"] else "baseline (8, 0.2, seed, generated)"
        cos = " / ".join("-" if c is None else f"{c:.4f}" for c in (r["encoder_cosine"], r["decoder_cosine"]))
        lines.append(f"| {r['experiment']} | {knob} | {r['language']} | {r['clips']} | {r['fp32']:.3f} "
                     f"| {r['compiled']:.3f} | {100 * r['delta']:+.1f} [{100 * r['low']:+.1f}, {100 * r['high']:+.1f}] "
                     f"| {cos} |")
    return "\n".join(lines) + "\n"


COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"]


def svg(table: list[dict]) -> str:
    """One panel per knob (the baseline's point in each): delta in WER points with its 95 % interval."""
    langs = sorted({r["language"] for r in table})
    base = [r for r in table if r["knob"] == "baseline"]
    panels = []
    for label, key in KNOB_KEYS.items():
        field = "recipe" if label == "recipe" else key.split(".")[1]   # the row's column of that knob
        pts = [dict(r, value=str(r[field])) for r in base + [r for r in table if r["knob"] == label]]
        values = sorted({p["value"] for p in pts}, key=_order)
        panels.append((label, values, pts))
    lo = min([r["low"] for r in table] + [0.0]) * 100
    hi = max([r["high"] for r in table] + [0.02]) * 100
    lo, hi = lo - 0.5, hi + 0.5
    W, H, top, bottom, left = 230, 260, 30, 40, 45
    y = lambda v: top + (hi - v) / (hi - lo) * (H - top - bottom)   # noqa: E731
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W * len(panels) + 20}" height="{H + 30}" '
             f'font-family="sans-serif" font-size="11">']
    for k, (label, values, pts) in enumerate(panels):
        x0 = k * W + left
        width = W - left - 10
        parts.append(f'<text x="{x0 + width / 2}" y="15" text-anchor="middle" font-weight="bold">{label}</text>')
        parts.append(f'<rect x="{x0}" y="{top}" width="{width}" height="{H - top - bottom}" '
                     'fill="none" stroke="#888"/>')
        for ref, dash in ((0.0, ""), (1.0, ' stroke-dasharray="4 3"')):
            parts.append(f'<line x1="{x0}" x2="{x0 + width}" y1="{y(ref):.1f}" y2="{y(ref):.1f}" stroke="#444"{dash}/>')
        for tick in range(int(lo) + 1, int(hi) + 1, max(1, int((hi - lo) / 6))):
            parts.append(f'<text x="{x0 - 4}" y="{y(tick) + 4:.1f}" text-anchor="end">{tick:+d}</text>')
        for i, v in enumerate(values):
            xv = x0 + (i + 0.5) * width / len(values)
            parts.append(f'<text x="{xv:.1f}" y="{H - bottom + 15}" text-anchor="middle">{v}</text>')
            for j, lang in enumerate(langs):
                for p in (p for p in pts if p["value"] == v and p["language"] == lang):
                    xp = xv + (j - (len(langs) - 1) / 2) * 10
                    c = COLOURS[j % len(COLOURS)]
                    parts.append(f'<line x1="{xp:.1f}" x2="{xp:.1f}" y1="{y(100 * p["low"]):.1f}" '
                                 f'y2="{y(100 * p["high"]):.1f}" stroke="{c}" stroke-width="2"/>')
                    parts.append(f'<circle cx="{xp:.1f}" cy="{y(100 * p["delta"]):.1f}" r="3.5" fill="{c}"/>')
        if k == 0:
            parts.append(f'<text x="12" y="{(top + H - bottom) / 2}" '
                         f'transform="rotate(-90 12 {(top + H - bottom) / 2})" '
                         f'text-anchor="middle">compiled - fp32 WER, points (95 % CI)</text>')
    for j, lang in enumerate(langs):
        parts.append(f'<circle cx="{left + 90 * j}" cy="{H + 12}" r="4" fill="{COLOURS[j % len(COLOURS)]}"/>'
                     f'<text x="{left + 90 * j + 8}" y="{H + 16}">{lang}</text>')
    parts.append(f'<text x="{left + 90 * len(langs)}" y="{H + 16}">dashed: +1 point (the goal)</text></svg>')
    return "\n".join(parts) + "\n"


def _order(v: str) -> tuple[int, float | str]:
    try:
        return (0, float(v))
    except ValueError:
        return (1, {"seed": "0", "newest": "1", "generated": "0", "labels": "1", "reference": "2"}.get(v, v))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("show_json", type=Path, nargs="+",
                        help="the output of `dvc exp show --json` (several: merged by experiment name, later wins)")
    parser.add_argument("--prefix", default="sweep-")
    parser.add_argument("--svg", type=Path, help="write the plot here")
    args = parser.parse_args(argv)
    exps: dict[str, dict] = {}
    for path in args.show_json:
        try:
            exps |= experiments(json.loads(path.read_text(encoding="utf-8")), args.prefix)
        except (OSError, ValueError) as e:
            raise SystemExit(f"error: {path}: {e}") from None
    if BASELINE not in exps:
        names = ", ".join(str(p) for p in args.show_json)
        raise SystemExit(f"error: {names}: no finished experiment {BASELINE} (found {sorted(exps)})")
    table = rows(exps)
    print(markdown(table), end="")
    if args.svg:
        args.svg.write_text(svg(table), encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
