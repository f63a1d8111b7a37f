"""Mobilint's NPUs as data, the one home for what the compiler, the runtime and the model folder must agree on: the
target devices, the inference schemes an ``.mxq`` can be compiled for, the core modes each scheme holds, and the cores
a placement names.

A placement (params ``npu.encoder`` / ``npu.decoder``) is a device number, a core mode and cores as ``[cluster, core]``
pairs (Mobilint's model folders write them ``"cluster:core"`` in ``target_cores``; params.yaml cannot: PyYAML reads
an unquoted ``1:0`` as the base-60 integer 60, and DVC's ``-S`` rewrite drops the quotes), or ``auto``: the cores of
Mobilint's newest model folder for the target (:data:`MOBILINT_CORES`), single-core. ``single`` runs on the
listed cores; ``multi`` and ``global4`` on whole clusters (the listed cores must cover each of their clusters);
``global8`` on both clusters of the device. ARIES has 2 clusters x 4 cores; REGULUS has one core, ``0:0``, and runs
only ``single``. An MXQ holds the core modes of the scheme it was compiled with (:data:`SCHEME_MODES`; ``all`` holds
every one and needs an explicit mode at run time). The .mxq runner and the model folder writer both take their
placement from :func:`placement`. Sources: docs/mobilint.md.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

TARGETS = ("aries-rb", "regulus-rb", "regulus-rb-usb", "regulus-ra")
REGULUS = ("regulus-rb", "regulus-rb-usb", "regulus-ra")
SCHEMES = ("single", "multi", "global", "global4", "global8", "all")
CORE_MODES = ("single", "multi", "global4", "global8")
CLUSTERS, CORES = 2, 4   # ARIES: clusters per device, cores per cluster

# the core modes an MXQ compiled with an inference scheme can run in (compiler docs, inferenceScheme)
SCHEME_MODES = {"single": ("single",), "multi": ("multi",), "global": ("global4",), "global4": ("global4",),
                "global8": ("global8",), "all": CORE_MODES}

# cores: auto, single-core as Mobilint's newest model folder places them (mblt-sdk-tutorial f3f9d540,
# compilation/stt/prepare_model.py: encoder "0:0"; decoder "1:0" on aries-rb, "0:0" on regulus-rb)
MOBILINT_CORES = {("encoder", "aries"): ((0, 0),), ("encoder", "regulus"): ((0, 0),),
                  ("decoder", "aries"): ((1, 0),), ("decoder", "regulus"): ((0, 0),)}


def is_regulus(target: str) -> bool:
    return target.startswith("regulus")


def core_pair(entry: object) -> tuple[int, int]:
    """A ``[cluster, core]`` pair as two integers; ValueError when it is not one or lies outside ARIES's 2 x 4 cores."""
    if not (isinstance(entry, (list, tuple)) and len(entry) == 2
            and all(isinstance(x, int) and not isinstance(x, bool) for x in entry)):
        raise ValueError(f"{entry!r} is not a [cluster, core] pair of integers (e.g. [0, 0])")
    cluster, core = entry
    if not (0 <= cluster < CLUSTERS and 0 <= core < CORES):
        raise ValueError(f"{list(entry)!r}: cluster must be 0-{CLUSTERS - 1} and core 0-{CORES - 1}")
    return cluster, core


@dataclass(frozen=True)
class Placement:
    """Where a compiled component runs: device ``dev_no``, transformers-mblt's ``core_mode``, ``cores`` as
    ``(cluster, core)`` (single) and the ``clusters`` they cover (multi, global4, global8)."""
    dev_no: int
    core_mode: str
    cores: tuple[tuple[int, int], ...]

    @property
    def clusters(self) -> tuple[int, ...]:
        return tuple(sorted({c for c, _ in self.cores}))

    def target_cores(self) -> list[str]:
        """The cores as Mobilint's model folders write them: ``"cluster:core"``."""
        return [f"{c}:{k}" for c, k in self.cores]

    def record(self) -> dict:
        return {"dev_no": self.dev_no, "core_mode": self.core_mode, "cores": [list(c) for c in self.cores]}


def placement(key: str, component: str, dev_no: int, core_mode: str, cores: Sequence | str, target: str,
              scheme: str | None = None) -> Placement:
    """The checked placement of ``component`` (``key``: its params key, e.g. ``npu.decoder``) on ``target``, and
    when ``scheme`` is given, for an MXQ compiled with it. ValueError naming the key otherwise."""
    if core_mode not in CORE_MODES:
        raise ValueError(f"{key}.core_mode = {core_mode!r}: must be one of {', '.join(CORE_MODES)}")
    if cores == "auto":
        if core_mode != "single":
            raise ValueError(f"{key}.cores = auto: Mobilint's placement is single-core; with {key}.core_mode = "
                             f"{core_mode} list the cores")
        cores = MOBILINT_CORES[component, "regulus" if is_regulus(target) else "aries"]
    if not isinstance(cores, (list, tuple)):
        raise ValueError(f"{key}.cores = {cores!r}: must be auto or a list of [cluster, core] pairs")
    if not cores:
        raise ValueError(f"{key}.cores = []: name at least one [cluster, core]")
    parsed = []
    for i, entry in enumerate(cores):
        try:
            parsed.append(core_pair(entry))
        except ValueError as e:
            raise ValueError(f"{key}.cores[{i}] = {e}") from None
    shown = [list(c) for c in parsed]
    if len(set(parsed)) != len(parsed):
        raise ValueError(f"{key}.cores = {shown}: a core is listed twice")
    if is_regulus(target) and (core_mode != "single" or parsed != [(0, 0)]):
        raise ValueError(f"{key}: REGULUS ({target}) has one core and runs only single: set {key}.core_mode = "
                         f"single and {key}.cores = [[0, 0]] or auto (now {core_mode}, {shown})")
    clusters = {c for c, _ in parsed}
    if core_mode in ("multi", "global4") and any(sum(c == x for c, _ in parsed) != CORES for x in clusters):
        raise ValueError(f"{key}.cores = {shown}: core_mode {core_mode} runs on whole clusters; list all {CORES} "
                         f"cores of each cluster (e.g. [[1, 0], [1, 1], [1, 2], [1, 3]])")
    if core_mode == "global8" and len(parsed) != CLUSTERS * CORES:
        raise ValueError(f"{key}.cores = {shown}: core_mode global8 runs on both clusters; list all "
                         f"{CLUSTERS * CORES} cores")
    if scheme is not None and core_mode not in SCHEME_MODES.get(scheme, ()):
        modes = SCHEME_MODES.get(scheme, ())
        raise ValueError(f"{key}.core_mode = {core_mode}: an MXQ compiled with inference scheme {scheme!r} runs in "
                         f"{' or '.join(modes) or 'no known core mode'}; set {key}.core_mode (and its cores) to match, "
                         f"or compile with scheme all")
    return Placement(int(dev_no), core_mode, tuple(parsed))
