"""The per-group INT8 sensitivity study on the calibration sets, and the mixed-precision recipe it writes.

Reads what the compile stage reads (the reference model, each component's calibration set, params
``compile.opset`` and the range options of ``compile.onnxruntime``) and runs
whisper_npu/compilers/onnxruntime/sensitivity.py ``study`` per component in ``sensitivity.components``:
``sensitivity.samples`` held-out calibration entries (spread evenly over the set) are scored, the rest calibrate (at
most ``compile.onnxruntime.calibration_samples``, picked as the compile stage picks them). Outputs, in ``--out``:

* ``report.json``: the study's report per component, the promoted groups and the thresholds (a DVC metric);
* ``groups.md``: the per-group table (bits, SQNR all 8-bit, local SQNR, metric alone at 16 bits, isolation gain,
  range statistics) with the decision per group;
* ``sqnr.json``: plot rows (component, depth = block index, -1 before the blocks and the block count after them,
  group, sqnr_db of what the group writes with everything at 8 bits);
* ``promotion.json``: plot rows of the WER-vs-promoted-groups curve (step, groups at 16 bits, language, WER delta
  and its 95 % interval); empty without the WER check;
* ``onnxruntime.overrides`` / ``qbcompiler.overrides``: the recipe, one DVC ``-S`` override a line, the promoted
  groups at 16 bits. With ``sensitivity.wer_languages`` listed, the groups of the smallest promotion step that holds
  every listed language within ``sensitivity.max_wer_increase`` (whisper_npu/promotion.py: role families in rank
  order, steps found by bisection or in turn (``sensitivity.search``), each step compiled by the compile stage's
  own code and decoded on ``--audio``'s evaluation clips against the fp32 transcripts in ``--fp32``); with none
  listed, the single groups whose isolation gain reaches
  ``sensitivity.min_gain_db`` (encoder, dB) or ``sensitivity.min_kl_reduction`` (decoder, nats). Apply with
  ``dvc exp run $(grep -v '^#' sensitivity/onnxruntime.overrides | sed 's/^/-S /')``. The qbcompiler file starts
  with comment lines saying which part of its mapping is verified.

With ``sensitivity.enabled: false`` every output says the study did not run (no model is loaded: seconds), and both
recipe files hold one comment line.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import math
import re
import tempfile
from pathlib import Path
from typing import Any

from whisper_npu.core.errors import StageError
from whisper_npu.core.files import atomic_output, write_json
from whisper_npu.core.stage import run_stage
from whisper_npu.params.base import read, seed_of
from whisper_npu.params.compile import CompileParams
from whisper_npu.params.score import ScoreParams
from whisper_npu.params.sensitivity import SensitivityParams
from whisper_npu.params.transcribe import TranscribeParams

log = logging.getLogger(__name__)

OUTPUTS = ("report.json", "groups.md", "sqnr.json", "promotion.json", "onnxruntime.overrides", "qbcompiler.overrides")
NOT_RUN = "sensitivity.enabled = false: the study did not run (run it: dvc exp run -S sensitivity.enabled=true)"
# our group roles that are a torch module of WhisperForConditionalGeneration (a layer name can be derived from them);
# the others (qk, av, softmax, residual.*, embed_positions) are single ops with no module name
MODULE_ROLES = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2", "self_attn_layer_norm",
                "encoder_attn_layer_norm", "final_layer_norm", "conv1", "conv2", "layer_norm", "lm_head")
QB_NOTE = ("# qbcompiler recipe of the sensitivity study (docs/onnxruntime-int8.md, 'Per-group precision'). VERIFIED "
           "against Mobilint's docs and public code: the config path bit.layerOverrides.activation16Bits (Python "
           "BitConfig.LayerOverrides(activation_16bits=[...]): mobilint/mblt-sdk-tutorial compilation/vlm/"
           "compile_config.py; docs.mobilint.com/compiler/v1.3/en/model_quantization.html 'Layer-Level Overrides'). "
           "NOT VERIFIED: the layer names. They are guessed from the torch module path (dots as underscores); the "
           "compiler's own layer names cannot be seen without the compiler, and Mobilint's tutorial says the "
           "quantizer silently ignores names that match no layer: compare them with the layer names of the .mblt "
           "the compile stage keeps before trusting the recipe.")
NAME = re.compile(r"^(encoder|decoder)\.(\d+)\.(.+)$")


# ------------------------------------------------------------------------------------------- pure parts

def finite(obj: Any) -> Any:
    """``obj`` with every non-finite float as None (JSON has no Infinity)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite(v) for v in obj]
    return obj


def depth(group: str, blocks: int) -> int:
    """The block index of a group; -1 before the blocks (convs, position Add), ``blocks`` after them."""
    m = NAME.match(group)
    if m:
        return int(m.group(2))
    return blocks if group.endswith((".layer_norm", ".lm_head")) else -1


def threshold(component: str, sp: SensitivityParams) -> float:
    return sp.min_kl_reduction if component == "decoder" else sp.min_gain_db


def promoted(report: dict, sp: SensitivityParams) -> list[str]:
    """The ranked groups whose isolation gain reaches the component's threshold (and is positive), in rank order."""
    rows = {r["group"]: r for r in report["groups"]}
    limit = threshold(report["component"], sp)
    return [n for n in report["ranking"] if "chain" not in rows[n]
            and rows[n]["isolation_gain"] > 0 and rows[n]["isolation_gain"] >= limit]


def decision(row: dict, chosen: list[str], limit: float | None) -> str:
    if "chain" in row:
        return "16 bit" if row["chain"] and set(row["chain"]) <= set(chosen) else "8 bit"
    if row["group"] in chosen:
        return "16 bit"
    if limit is None:
        return "8 bit"
    if "isolation_gain" not in row:
        return "8 bit (not isolated)"
    return f"8 bit (gain < {limit:g})"


def groups_markdown(reports: dict[str, dict], chosen: dict[str, list[str]], sp: SensitivityParams,
                    promotion: dict | None = None) -> str:
    """sensitivity.table per component with a decision column, and the promotion steps when they ran."""
    from whisper_npu import promotion as promotion_mod
    from whisper_npu.compilers.onnxruntime import sensitivity

    parts = ["# Per-group INT8 sensitivity (stage sensitivity)", ""]
    for component, report in reports.items():
        rows = {r["group"]: r for r in report["groups"]}
        limit = None if promotion else threshold(component, sp)
        unit = "nats of KL removed" if component == "decoder" else "dB of output SQNR"
        rule = ("Promoted: the role families of the WER-checked step below." if promotion else
                f"Promotion threshold: isolation gain >= {limit:g} ({unit}).")
        parts += [f"## {component}", "", rule, ""]
        for line in sensitivity.table(report).splitlines():
            if line.startswith("|---"):
                line += "---|"
            elif line.startswith("| group |"):
                line += " decision |"
            elif line.startswith("| "):
                name = line.split("|")[1].strip().split(" (")[0]   # a chain's row: "family:fc2 (4 groups together)"
                line += f" {decision(rows[name], chosen[component], limit)} |"
            parts.append(line)
        parts.append("")
    if promotion:
        parts.append(promotion_mod.markdown(promotion))
    return "\n".join(parts)


def sqnr_rows(reports: dict[str, dict], blocks: dict[str, int]) -> list[dict]:
    return [{"component": c, "depth": depth(r["group"], blocks[c]), "group": r["group"], "sqnr_db": r["sqnr_db"]}
            for c, report in reports.items() for r in report["groups"]
            if "chain" not in r and math.isfinite(r["sqnr_db"])]


def _flow(mapping: dict) -> str:
    """A Hydra override value (what ``dvc exp run -S`` parses) with no spaces, so that ``$(sed ...)`` keeps each
    line one shell word: ``{encoder.1.fc2:{bits:16}}``, ``[a,b]``."""
    if isinstance(mapping, dict):
        return "{" + ",".join(f"{k}:{_flow(v)}" for k, v in mapping.items()) + "}"
    if isinstance(mapping, list):
        return "[" + ",".join(_flow(v) for v in mapping) + "]"
    return str(mapping)


def onnxruntime_overrides(chosen: dict[str, list[str]], proxy: str, methods: dict[str, str] | None = None) -> str:
    """The ONNX Runtime recipe: static mode with the study's proxy, nothing else at 16 bits or in float (as the study
    measured it), the promoted groups at 16 bits, the chosen range methods. ``++`` because groups is an empty mapping
    in params.yaml: Hydra refuses new keys under an existing one without it (and merges them into what is set)."""
    from whisper_npu.promotion import recipe_groups

    groups = recipe_groups(chosen, methods or {})
    lines = ["compile.onnxruntime.mode=static", f"compile.onnxruntime.proxy={proxy}",
             "compile.onnxruntime.keep_float=[]", "compile.onnxruntime.high_precision=[]",
             f"++compile.onnxruntime.groups={_flow(groups)}"]
    return "\n".join(lines) + "\n"


def layer_name(group: str) -> str | None:
    """The guessed qbcompiler layer name of a group (NOT verified: see QB_NOTE), or None for an op group."""
    component, rest = group.split(".", 1)
    m = re.match(r"^(\d+)\.(.+)$", rest)
    role = m.group(2) if m else rest
    if role.split(".")[-1] not in MODULE_ROLES:
        return None
    if role == "lm_head":
        return "proj_out"
    path = f"model.{component}." + (f"layers.{m.group(1)}.{role}" if m else role)
    return path.replace(".", "_")


# ONNX Runtime's range methods and the calibration mode of Mobilint's CalibrationConfig they correspond to (mode 0
# Max, 1 MaxPercentile, 2 Histogram (KL divergence): mobilint/mblt-sdk-tutorial compilation/_guides/
# 01_about_quantization_config.md @ e63ceb97); how
# calibration.layerOverrides.method spells a method is not documented
QB_METHODS = {"minmax": "Max", "percentile": "MaxPercentile", "entropy": "Histogram"}


def qbcompiler_overrides(chosen: dict[str, list[str]], methods: dict[str, str] | None = None) -> str:
    lines = [QB_NOTE]
    if methods:
        named = [f"{layer_name(g) or g}={QB_METHODS[m]}" for g, m in sorted(methods.items())]
        lines.append("# range methods chosen by the study, NOT applied: Mobilint's docs (v1.3) name "
                     "calibration.layerOverrides.method but not its value format; layer (guessed, as below) = the "
                     "matching CalibrationConfig mode: " + ", ".join(named))
    body, unmapped = [], []
    for component, names in chosen.items():
        layers = [layer_name(n) for n in names]
        unmapped += [n for n, layer in zip(names, layers) if layer is None]
        found = [layer for layer in layers if layer]
        if found:
            section = {"bit": {"layer_overrides": {"activation_16bits": found}}}
            body.append(f"++compile.qbcompiler.{component}_configs={_flow(section)}")
    if unmapped:
        lines.append("# not mapped (single ops with no module name to derive a layer name from): "
                     + ", ".join(unmapped))
    if not body:
        lines.append("# no promoted group maps to a layer name: nothing to override" if unmapped
                     else "# no group promoted: nothing to override")
    return "\n".join(lines + body) + "\n"


# ------------------------------------------------------------------------------------------- the study

def study_component(component: str, model: Any, calibration: Path, sp: SensitivityParams, cp: CompileParams,
                    chains: dict[str, list[str]] | None = None) -> dict:
    """The sensitivity report of one component on its calibration set (held-out entries scored); ``chains``: sets of
    groups also restored to 16 bits together (default: the role families of groups.py, those the proxy has)."""
    from whisper_npu.calibration import sets as calib_sets
    from whisper_npu.compilers.onnxruntime import build, export, groups, quantize, sensitivity
    from whisper_npu.specs import component_spec

    spec = component_spec(component, model.config)
    cs = calib_sets.read_calib_set(component, calibration)
    if sp.samples >= len(cs):
        raise StageError(f"sensitivity.samples = {sp.samples}: {cs.source} has {len(cs)} entries and at least one "
                         "must remain to calibrate; lower sensitivity.samples or calibrate on more clips")
    calib_idx, held_idx = calib_sets.split_holdout(len(cs), sp.samples, str(cs.source))
    o = cp.onnxruntime
    picked = calib_sets.pick_evenly(calib_idx, o.calibration_samples)
    load = build._checked_loader(cs, spec)
    names = [t.name for t in spec.inputs]
    reader = quantize.ListReader(names, lambda j: load(picked[j]), len(picked))
    held = quantize.ListReader(names, lambda j: load(held_idx[j]), len(held_idx))
    log.info("sensitivity %s: %d calibration / %d held-out entries, %s proxy, top %d", component, len(picked),
             len(held_idx), sp.proxy, sp.top_k)
    with tempfile.TemporaryDirectory(prefix="whisper-npu-sensitivity-export-") as tmp:
        fp32 = export.export_onnx(export.npu_module(model, component), spec, Path(tmp) / f"{component}.fp32.onnx",
                                  cp.opset)
        report = sensitivity.study(fp32, reader, held, proxy=sp.proxy, calibrate_method=o.calibrate_method,
                                   percentile=o.percentile, per_channel=o.per_channel,
                                   activation_type=o.activation_type, op_types=o.op_types, top_k=sp.top_k,
                                   eot_id=int(model.config.eos_token_id),
                                   chains=groups.family_chains(component) if chains is None else chains,
                                   skip_empty_chains=chains is None, range_methods=sp.range_methods)
    report["calibrated_on"], report["held_out"] = picked, held_idx
    return report


def outputs(sp: SensitivityParams, cp: CompileParams, tp: TranscribeParams, bootstrap_samples: int, seed: int,
            model_dir: Path, calibration: dict[str, Path], audio: Path, fp32: Path) -> dict[str, str | Any]:
    """File name -> content (text, or data for JSON) of every output."""
    if not sp.enabled:
        line = f"# {NOT_RUN}\n"
        return {"report.json": {"enabled": False, "ran": False, "reason": NOT_RUN}, "groups.md": f"{NOT_RUN}\n",
                "sqnr.json": [], "promotion.json": [], "onnxruntime.overrides": line, "qbcompiler.overrides": line}
    from stages.compile import compile_component
    from whisper_npu import promotion as promotion_mod
    from whisper_npu.calibration import sets as calib_sets
    from whisper_npu.model import store as model_store

    model, _ = model_store.load_hf(model_dir)
    blocks = {"encoder": model.config.encoder_layers, "decoder": model.config.decoder_layers}
    reports = {c: study_component(c, model, calibration[c], sp, cp) for c in sp.components}
    promotion = None
    if sp.wer_languages:
        info = model_store.model_info(model_dir)
        sets = {c: calib_sets.read_calib_set(c, calibration[c]) for c in ("encoder", "decoder")}

        def compile_fn(component: str, candidate: CompileParams, out_dir: Path) -> None:
            compile_component(component, "onnxruntime", candidate, model, model_dir, info, {}, sets[component],
                              out_dir)

        promotion = promotion_mod.promote(reports, compile_fn, model_dir=model_dir, cp=cp, sp=sp,
                                          tp=tp, audio_root=audio, fp32_dir=fp32,
                                          bootstrap_samples=bootstrap_samples, seed=seed)
        chosen = {c: promotion["promoted"].get(c, []) for c in reports}
    else:
        chosen = {c: promoted(r, sp) for c, r in reports.items()}
    methods = promotion_mod.range_methods(reports)
    report = {"enabled": True, "ran": True, "proxy": sp.proxy, "top_k": sp.top_k, "samples": sp.samples,
              "rule": "wer" if promotion else "thresholds",
              "thresholds": {"encoder_min_gain_db": sp.min_gain_db, "decoder_min_kl_reduction": sp.min_kl_reduction},
              "promoted": chosen, "promoted_count": sum(len(v) for v in chosen.values()), "range_methods": methods,
              "promotion": promotion, "components": reports}
    return {"report.json": finite(report), "groups.md": groups_markdown(reports, chosen, sp, promotion),
            "sqnr.json": sqnr_rows(reports, blocks),
            "promotion.json": promotion_mod.curve_rows(promotion) if promotion else [],
            "onnxruntime.overrides": onnxruntime_overrides(chosen, sp.proxy, methods),
            "qbcompiler.overrides": qbcompiler_overrides(chosen, methods)}


def run(params_path: Path, model_dir: Path, encoder_calibration: Path, decoder_calibration: Path, audio: Path,
        fp32: Path, out: Path) -> None:
    raw = read(params_path)
    # every section it reads is checked before any work, also when the study is off
    sp, cp, tp = SensitivityParams.of(raw), CompileParams.of(raw), TranscribeParams.of(raw)
    bootstrap_samples, seed = ScoreParams.of(raw).bootstrap_samples, seed_of(raw)
    files = outputs(sp, cp, tp, bootstrap_samples, seed, model_dir,
                    {"encoder": encoder_calibration, "decoder": decoder_calibration}, audio, fp32)
    with contextlib.ExitStack() as stack:   # all or none: a failure leaves no output behind
        for name in OUTPUTS:
            tmp = stack.enter_context(atomic_output(out / name))
            if isinstance(files[name], str):
                tmp.write_text(files[name], encoding="utf-8")
            else:
                write_json(tmp, files[name])
    log.info("sensitivity -> %s (%s)", out, "study run" if sp.enabled else "not run: sensitivity.enabled = false")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--params", type=Path, default=Path("params.yaml"))
    p.add_argument("--model", type=Path, required=True, help="the reference model store (models/reference)")
    p.add_argument("--encoder-calibration", type=Path, required=True, help="the encoder's calibration list")
    p.add_argument("--decoder-calibration", type=Path, required=True, help="the decoder's calibration JSON")
    p.add_argument("--audio", type=Path, required=True, help="audio root (data/audio): the evaluation clips decoded")
    p.add_argument("--fp32", type=Path, required=True, help="the fp32 transcripts (data/transcripts/fp32)")
    p.add_argument("--out", type=Path, required=True, help="sensitivity/")
    a = p.parse_args(argv)
    run(a.params, a.model, a.encoder_calibration, a.decoder_calibration, a.audio, a.fp32, a.out)


if __name__ == "__main__":
    run_stage(main)
