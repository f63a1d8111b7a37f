"""Turn a params preset file into `dvc exp run -S` overrides.

    eval "dvc exp run $(python -m whisper_npu.preset params/tutorial.yaml)"

prints ``-S model.source=hub -S model.id=openai/whisper-small ...`` (Hydra override syntax), so a preset
is applied as an experiment on top of params.yaml and `dvc exp show` compares it with the baseline.
The preset is checked against the params schema first.
"""
from __future__ import annotations

import argparse
import copy
import re
import shlex
import sys
from pathlib import Path
from typing import Any

import yaml

from whisper_npu.params.base import ParamsError
from whisper_npu.params.full import parse_params

_PLAIN = re.compile(r"^[A-Za-z0-9_./:+-]+$")


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, list):
        return "[" + ",".join(_value(x) for x in v) + "]"
    s = str(v)
    return s if _PLAIN.match(s) else "'" + s.replace("'", "\\'") + "'"


def flatten(data: dict, prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for key, value in data.items():
        if isinstance(value, dict):
            out += flatten(value, f"{prefix}{key}.")
        else:
            out.append((f"{prefix}{key}", value))
    return out


def merge(base: dict, preset: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in flatten(preset):
        node = merged
        *parents, last = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return merged


def overrides(preset_path: Path, params_path: Path = Path("params.yaml")) -> list[str]:
    preset = yaml.safe_load(preset_path.read_text(encoding="utf-8")) or {}
    base = yaml.safe_load(params_path.read_text(encoding="utf-8")) if params_path.exists() else {}
    parse_params(merge(base, preset), str(preset_path))  # fail early on a bad preset
    args: list[str] = []
    present = {k for k, _ in flatten(base)}
    for key, value in flatten(preset):
        # Hydra (dvc -S) adds a key absent from params.yaml only with "+" (e.g. a nested config object field)
        args += ["-S", f"{'' if key in present else '+'}{key}={_value(value)}"]
    return args


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("preset", type=Path)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args(argv)
    try:
        # shell words: `eval "dvc exp run $(python -m whisper_npu.preset ...)"` keeps a value with spaces or
        # quotes in one argument (plain $(...) would split it at the spaces)
        print(shlex.join(overrides(args.preset, args.params)))
    except (ParamsError, OSError, yaml.YAMLError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
