"""Queue the calibration sweep as DVC experiments: the params/sweep.yaml profile as the baseline, one knob
changed per experiment (not the full grid), run by DVC's own queue.

    python -m bench.sweep_queue                     # queues 8 experiments (dvc exp run --queue -n sweep-...)
    nice -n 10 dvc queue start -j 1                 # then: dvc queue status; dvc exp show --json > sweep.json
    python -m bench.sweep_table sweep.json          # the table and the plot (bench/sweep_table.py)

``--only NAME ...`` queues those experiments only, in that order; ``--dry-run`` prints the `dvc exp run` commands
instead of running them (its quick mode: tests/test_bench_quick.py runs it); ``-S key=value`` adds an override to
every experiment (e.g. ``-S audio.asterisk.cache=/abs/debs``: a queued experiment runs in a temporary copy of
the repository, where a relative cache folder is empty).
"""
from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path

from whisper_npu.preset import overrides

# The newest public recipe's decoder-set keys (params/tutorial-latest.yaml), against the seed tutorial's
# (params/sweep.yaml, params.yaml).
LATEST_RECIPE = {"calibration.prefix_fractions": "[0.2,0.4,0.6,0.8,1.0]", "calibration.min_tokens": "8",
                 "calibration.strip_final_eot": "true", "calibration.json_layout": "minimal"}

# experiment name -> the keys it changes from the baseline
KNOBS: dict[str, dict[str, str]] = {
    "sweep-base": {},
    "sweep-spl2": {"calibration.samples_per_language": "2"},
    "sweep-spl32": {"calibration.samples_per_language": "32"},
    "sweep-tr0": {"calibration.translate_ratio": "0.0"},
    "sweep-tr0.5": {"calibration.translate_ratio": "0.5"},
    "sweep-latest": LATEST_RECIPE,
    "sweep-labels": {"calibration.text_source": "labels"},
    # the reference transcripts: with translate ratio 0, as Debian's Asterisk prompts have no English reference
    # translations (the stage refuses the translate task there); compare it with sweep-tr0
    "sweep-reference": {"calibration.text_source": "reference", "calibration.translate_ratio": "0.0"},
}


def experiment_args(base: list[str], changes: dict[str, str], extra: list[str]) -> list[str]:
    """The -S list of one experiment: the baseline's overrides with ``changes`` replacing the same keys (one
    -S per key: Hydra would refuse a key given twice), then ``extra``."""
    out: list[str] = []
    for flag, override in zip(base[::2], base[1::2]):
        key = override.split("=", 1)[0].lstrip("+")
        out += [flag, f"{key}={changes[key]}" if key in changes else override]
    missing = sorted(set(changes) - {o.split("=", 1)[0].lstrip("+") for o in base[1::2]})
    if missing:
        raise SystemExit(f"error: the sweep changes {missing}, which params/sweep.yaml does not set")
    for e in extra:
        out += ["-S", e]
    return out


def commands(preset: Path, params: Path, extra: list[str], only: list[str] | None = None) -> list[list[str]]:
    """The `dvc exp run --queue` command of each experiment (of ``only``, in that order, when given)."""
    unknown = sorted(set(only or []) - set(KNOBS))
    if unknown:
        raise SystemExit(f"error: unknown sweep experiments {unknown}; known: {list(KNOBS)}")
    base = overrides(preset, params)
    return [["dvc", "exp", "run", "--queue", "-n", name, *experiment_args(base, KNOBS[name], extra)]
            for name in (only or KNOBS)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", type=Path, default=Path("params/sweep.yaml"))
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("-S", dest="extra", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="queue these experiments only, in this order")
    args = parser.parse_args(argv)
    for cmd in commands(args.preset, args.params, args.extra, args.only):
        print(shlex.join(cmd), flush=True)
        if not args.dry_run:
            subprocess.run(cmd, check=True)


if __name__ == "__main__":
    sys.exit(main())
