"""ONNX Runtime's per-channel weight quantization (dynamic INT8, the default compile mode): its own loop against
``per_channel_weights_at_once`` (whisper_npu/compilers/onnxruntime/quantize.py), side by side.

ORT computes each output channel's scale with one Python call; the decoder's lm_head has one channel per vocabulary
entry (51,865 in multilingual Whisper, whatever the model size). Both ways quantize the same exported fp32 ONNX with
the compile stage's own ``quantize`` and the params.yaml options, alternating, ``--repeats`` times each; the bytes
must be identical (the script stops otherwise). Figures: median wall time per component and the ratio.

    python -m bench.weight_quantization               # whisper-base (PyPI wheel, cached)
    python -m bench.weight_quantization --quick       # tiny random model (same 51,865-channel lm_head)
"""
from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from bench.common import ROOT, Table, command, median, print_tables, reference_model

MODULE = "bench.weight_quantization"


def run(argv: Sequence[str] | None = None) -> list[Table]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny random model, one repeat")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--components", nargs="+", choices=("encoder", "decoder"), default=["encoder", "decoder"])
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    repeats = 1 if args.quick else args.repeats

    from whisper_npu.compilers.onnxruntime import export, quantize
    from whisper_npu.model import store
    from whisper_npu.params.base import read
    from whisper_npu.params.compile import CompileParams
    from whisper_npu.specs import component_spec

    cp = CompileParams.of(read(ROOT / "params.yaml"))
    o = cp.onnxruntime
    table = Table(f"Dynamic INT8 weight quantization, ORT's per-channel loop vs at once (median of {repeats})",
                  ["component", "ORT loop s", "at once s", "ratio", "identical bytes"],
                  command=command(MODULE, ["--quick"] if args.quick else []))
    with tempfile.TemporaryDirectory(prefix="bench-wq-") as tmp:
        tmp = Path(tmp)
        model, _ = store.load_hf(reference_model("tiny" if args.quick else "base", tmp))
        for component in args.components:
            spec = component_spec(component, model.config)
            fp32 = export.export_onnx(export.npu_module(model, component), spec, tmp / f"{component}.onnx", cp.opset)
            times: dict[str, list[float]] = {"loop": [], "at once": []}
            outs = {}
            for r in range(repeats):
                for way in (("loop", "at once") if r % 2 == 0 else ("at once", "loop")):
                    outs[way] = tmp / f"{component}.{way.replace(' ', '_')}.int8.onnx"
                    patch = contextlib.nullcontext() if way == "at once" else _orts_loop(quantize)
                    t0 = time.perf_counter()
                    with patch:
                        quantize.quantize(fp32, outs[way], mode="dynamic", per_channel=o.per_channel,
                                          op_types=o.op_types, nodes_to_exclude=o.nodes_to_exclude,
                                          keep_float=o.keep_float)
                    times[way].append(time.perf_counter() - t0)
            same = outs["loop"].read_bytes() == outs["at once"].read_bytes()
            if not same:
                raise SystemExit(f"{component}: the two ways wrote different bytes")
            loop, once = median(times["loop"]), median(times["at once"])
            table.add(component, loop, once, once / loop, "yes")
    return [table]


@contextlib.contextmanager
def _orts_loop(quantize):
    """Make quantize.quantize run ORT's own loop: per_channel_weights_at_once replaced by a no-op."""
    at_once = quantize.per_channel_weights_at_once
    quantize.per_channel_weights_at_once = contextlib.nullcontext
    try:
        yield
    finally:
        quantize.per_channel_weights_at_once = at_once


if __name__ == "__main__":
    print_tables(run)
