"""Run every benchmark and print the tables (markdown), with the machine line and the command of each table.

    python -m bench.run_all            # default sizes (make bench): about 30-40 min on two cores
    python -m bench.run_all --quick    # tiny model and sizes: checks the code paths, figures meaningless
    python -m bench.run_all --only calibration_throughput memory

``--out FILE`` also writes the markdown to FILE. Each benchmark's own flags (full sizes and so on) are in its
module's ``--help``; BENCHMARKS.md lists them.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from bench.common import machine, machine_line

BENCHES = ("calibration_throughput", "label_speed", "evaluate_speed", "incremental", "memory", "compiled_models")


def run(argv: Sequence[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny model and sizes (code paths only)")
    p.add_argument("--only", nargs="+", choices=BENCHES, default=list(BENCHES))
    p.add_argument("--out", type=Path, default=None, help="also write the markdown here")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)

    m = machine()
    sections = []
    started = time.perf_counter()
    for name in args.only:
        module = importlib.import_module(f"bench.{name}")
        t0 = time.perf_counter()
        tables = module.run(["--quick"] if args.quick else [])
        logging.getLogger(__name__).info("%s: %.0f s", name, time.perf_counter() - t0)
        sections += [t.markdown() for t in tables]
        # printed as they come, so a long run shows its progress
        for t in tables:
            print(t.markdown(), file=sys.stderr, flush=True)
    load_after = os.getloadavg()[0]
    header = ["## Measured run", "", f"Machine: {machine_line(m, load_after)}", "",
              f"Total wall time: {(time.perf_counter() - started) / 60:.1f} min"
              + (" (`--quick`: tiny model and sizes, figures are not meaningful)" if args.quick else ""), ""]
    text = "\n".join(header) + "\n" + "\n".join(sections)
    if args.out:
        args.out.write_text(text, encoding="utf-8")
    return text


def main(argv: Sequence[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    text = run(argv)
    print("\n" + text)


if __name__ == "__main__":
    main()
