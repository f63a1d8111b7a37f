"""Mobilint's NPUs as data, the one home for what both the compiler and the runtime must agree on: the target
devices, the inference schemes an ``.mxq`` can be compiled for, and the cores each scheme runs on.

Placement (which cores run a compiled component) follows the tutorial's v0.12 runtime: the encoder in
``global4`` mode on cluster 1, the decoder single-core on cluster 0 / core 3, so both stay resident. ``all``
(qbcompiler >= 1.0.2) holds every mode and needs an explicit one at run time: single cores, the encoder on
cluster 0 / core 0 and the decoder on cluster 0 / core 3. REGULUS has one core (cluster 0 / core 0) and runs only
``single``. Sources: docs/mobilint.md.
"""
from __future__ import annotations

from dataclasses import dataclass

TARGETS = ("aries-rb", "regulus-rb", "regulus-rb-usb", "regulus-ra")
REGULUS = ("regulus-rb", "regulus-rb-usb", "regulus-ra")
SCHEMES = ("single", "multi", "global", "global4", "global8", "all")


def is_regulus(target: str) -> bool:
    return target.startswith("regulus")


@dataclass(frozen=True)
class Placement:
    """Where a compiled component runs: transformers-mblt's ``core_mode`` and either single ``cores``
    (``"cluster:core"``) or ``clusters``."""
    core_mode: str                       # single | multi | global4 | global8
    cores: tuple[str, ...] = ()
    clusters: tuple[int, ...] = ()


def placement(scheme: str, component: str, target: str = "aries-rb") -> Placement:
    """The placement of ``component`` (encoder | decoder) compiled with inference ``scheme`` for ``target``."""
    regulus = is_regulus(target)
    if regulus and scheme not in ("single", "all"):
        raise ValueError(f"inference scheme {scheme!r} on {target}: REGULUS runs only single")
    if scheme in ("single", "all"):
        return Placement("single", cores=("0:3" if component == "decoder" and not regulus else "0:0",))
    if scheme in ("global", "global4"):
        return Placement("global4", clusters=(1,))
    if scheme in ("multi", "global8"):
        return Placement(scheme, clusters=(0, 1))
    raise ValueError(f"inference scheme {scheme!r}: no core mode known for it (known: {', '.join(SCHEMES)})")
