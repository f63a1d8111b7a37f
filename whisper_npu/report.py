"""Print the evaluate stage's metrics as one short table (what `make demo` shows at the end).

    python -m whisper_npu.report [metrics/evaluate.json]

`dvc metrics show` lists every key as a column; this is the per-language view a person reads first.
"""
from __future__ import annotations

import sys
from pathlib import Path

from whisper_npu.io import StageError, read_json


def _num(x: float | None, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def table(metrics: dict) -> str:
    rows = ["| language | unit | fp32 | compiled | delta | BLEU fp32 | BLEU compiled | agreement | within budget |",
            "|---|---|---|---|---|---|---|---|---|"]
    for lang, m in sorted(metrics["languages"].items()):
        unit = m["unit"]
        rows.append(f"| {lang} | {unit} | {_num(m['fp32'].get(unit))} | {_num(m['compiled'].get(unit))} | "
                    f"{_num(m['delta'].get(unit))} | {_num(m['fp32'].get('bleu'), 1)} | "
                    f"{_num(m['compiled'].get('bleu'), 1)} | {_num(m['agreement'].get('exact_match'), 2)} | "
                    f"{'yes' if m.get('within_budget') else 'no'} |")
    o, b = metrics["overall"], metrics["budget"]
    rows.append(f"| **overall** | error rate | {_num(o['fp32'].get('error_rate'))} | "
                f"{_num(o['compiled'].get('error_rate'))} | {_num(o['delta'].get('error_rate'))} | "
                f"{_num(o['fp32'].get('bleu'), 1)} | {_num(o['compiled'].get('bleu'), 1)} | "
                f"{_num(o['agreement'].get('exact_match'), 2)} | {'pass' if b.get('pass') else 'fail'} |")
    backends = metrics.get("backends", {})
    return "\n".join(rows) + (f"\n\nfp32 = {backends.get('fp32')}, compiled = {backends.get('compiled')}; "
                              f"budget: max increase {b.get('max_wer_increase')} per language")


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
