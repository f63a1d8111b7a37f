"""Which SETS of groups, restored to 16 bits together, rescue static INT8 under the npu proxy.

The sensitivity stage (stages/sensitivity.py) restores one group at a time; on whisper-base no single group gains
much, because the damage is spread over the residual stream and the attention of every block. This runs the same
study (whisper_npu/compilers/onnxruntime/sensitivity.py) on a workspace that has run (its reference model and
calibration sets, params.yaml's sensitivity and compile keys, as the stage reads them; this checkout's code) with
``chains``: families
of groups named by role over all blocks, each restored to 16 bits together, everything else at 8 bits. Encoder:
output SQNR and cosine against fp32; decoder (teacher-forced): logit cosine, KL and top-1 agreement.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from bench.common import Table, command, print_tables

MODULE = "bench.sensitivity_chains"
# role patterns (fnmatch over group names, see groups.py); "{c}" is the component
FAMILIES = {
    "residual Adds": ["{c}.*.residual.*"],
    "LayerNorms": ["{c}.*layer_norm"],
    "softmax + AV": ["{c}.*.softmax", "{c}.*.av"],
    "Adds + LayerNorms": ["{c}.*.residual.*", "{c}.*layer_norm"],
    "Adds + LayerNorms + fc2": ["{c}.*.residual.*", "{c}.*layer_norm", "{c}.*.fc2"],
    "Adds + LayerNorms + softmax + AV": ["{c}.*.residual.*", "{c}.*layer_norm", "{c}.*.softmax", "{c}.*.av"],
    "Adds + LayerNorms + fc2 + softmax + AV": ["{c}.*.residual.*", "{c}.*layer_norm", "{c}.*.fc2",
                                               "{c}.*.softmax", "{c}.*.av"],
}
METRICS = {"encoder": ("sqnr_db", "cosine"), "decoder": ("sqnr_db", "cosine", "kl", "top1_agreement")}


def study(workspace: Path, component: str, samples: int | None = None) -> dict:
    """The stage's study of ``component`` in ``workspace`` with the FAMILIES as chains and no single isolation
    (``samples``: held-out entries, default params.yaml's ``sensitivity.samples``)."""
    from stages import sensitivity as stage
    from whisper_npu.model import store
    from whisper_npu.params.base import read
    from whisper_npu.params.compile import CompileParams
    from whisper_npu.params.sensitivity import SensitivityParams
    from whisper_npu.specs import DECODER_JSON, ENCODER_LIST

    raw = read(workspace / "params.yaml")
    sp = SensitivityParams.of(raw)
    sp = sp.model_copy(update={"top_k": 0, "samples": samples or sp.samples})
    chains = {name: [p.format(c=component) for p in pats] for name, pats in FAMILIES.items()}
    calibration = workspace / "calibration" / component / {"encoder": ENCODER_LIST, "decoder": DECODER_JSON}[component]
    model, _ = store.load_hf(workspace / "models" / "reference")
    return stage.study_component(component, model, calibration, sp, CompileParams.of(raw), chains)


def table(component: str, report: dict, cmd: str) -> Table:
    names = METRICS[component]
    t = Table(f"{component}: families of groups at 16 bits, everything else at 8 ({report['proxy']} proxy)",
              ["groups at 16 bits", *names], command=cmd, digits=4)
    t.add("none (all 8-bit)", *(report["all_8bit"][m] for m in names))
    rows = {g["group"]: g for g in report["groups"] if "chain" in g}
    for name in FAMILIES:
        t.add(f"{name} ({len(rows[name]['chain'])} groups)", *(rows[name]["alone_16bit"][m] for m in names))
    t.notes += [f"{report['calibration_samples']} calibration / {report['held_out_samples']} held-out calibration "
                "entries; the same ranges for every row (one calibration pass), so rows differ only in bits",
                "decoder rows are teacher-forced on the calibration set's text: cosine, KL(fp32 || int8) in nats "
                "and top-1 agreement of the logits" if component == "decoder" else
                "encoder rows: SQNR (dB) and cosine of encoder_hidden_states against fp32"]
    return t


def run(argv: Sequence[str] | None = None) -> list[Table]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workspace", type=Path, required=True,
                   help="a pipeline workspace that has run (models/reference, calibration/, params.yaml)")
    p.add_argument("--components", nargs="+", choices=("encoder", "decoder"), default=["encoder", "decoder"])
    p.add_argument("--samples", type=int, default=None,
                   help="held-out calibration entries scored (default: the workspace's sensitivity.samples)")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = p.parse_args(argv)
    return [table(c, study(args.workspace, c, args.samples), command(MODULE, argv)) for c in args.components]


def main(argv: Sequence[str] | None = None) -> None:
    print_tables(run, argv)


if __name__ == "__main__":
    main()
