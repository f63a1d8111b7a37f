"""Per-group INT8 sensitivity of an exported encoder or decoder: which groups static INT8 breaks.

The pattern of the public tools (ORT's qdq_loss_debug, AIMET QuantAnalyzer, NNCF accuracy control, RKNN and
Axera's per-layer cosine), on the proxy of groups.py:

(a) every group at 8 bits: per group, the SQNR of the tensor it writes in the quantized model against the float
    model (``sqnr_db``: error accumulated from the input up to there) and the SQNR of its own tensors quantized
    alone from float values with the quantized model's scales (``local_sqnr_db``, the worst of its tensors: what
    8 bits cost the group itself, not what it inherits), and the same per channel of the last axis, median over
    channels (``local_channel_sqnr_db``: an outlier channel hides the damage from the whole-tensor SQNR; the
    whole-tensor value where the last axis changes size between samples);
(b) isolation: the ``top_k`` groups with the lowest local channel SQNR (accumulated SQNR falls with depth and
    would pick the last blocks) are restored to 16 bits one at a time, everything else at 8; the model output is scored
    against float: encoder cosine and SQNR of ``encoder_hidden_states``; decoder (teacher-forced: its inputs are
    the float transcript prefix, embedded, as in the calibration set) logit KL(float || quantized), top-1 agreement
    and P(end-of-text) over the first ``eot_steps`` positions;
(c) the ranking by isolation gain (primary metric, positive = better than all 8-bit: encoder output SQNR in dB,
    decoder KL reduction) and per-group range statistics (min, max, |x| percentiles of what it writes);
(d) a range method per group for what stays at 8 bits (``range_methods``): each method's range of every quantized
    tensor, from the first ``ranges.SUMMARY_SAMPLES`` calibration samples, applied alone to the float held-out values
    (``method_sqnr_db``, the worst of the tensors the group writes, else of its tensors; min/max ranges over every
    calibrating sample, as the compile stage computes them); a group gets the best method when it
    beats what the all-8-bit model does (its default method, or ORT's fixed [0, 1] for a Softmax output) by
    ``METHOD_MARGIN_DB``, and the default method unless another beats it by as much (min/max ranges need no
    histograms, which cost the compile stage several times the forward pass where a method needs them). SQNR is a
    mean-square criterion: a range that clips a tensor's rare large values wins only where they carry little of its
    energy (Whisper's outlier channels carry most of it, and are needed).

SQNR = 10 log10(sum x^2 / sum (x - y)^2) over all samples (ORT qdq_loss_debug's 20 log10(|x| / |x - y|)).
Samples are streamed one at a time and only sums are kept (float outputs go to a temporary folder), so peak memory
does not grow with the sample count. Every variant reuses one range collection (ranges.py): no recalibration.
In the QDQ model a quantized tensor T keeps its float value under T; the value consumers see is the
DequantizeLinear output ``T_DequantizeLinear_Output`` (checked on ORT 1.32), which is what is compared.
"""
from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from whisper_npu.compilers.onnxruntime import groups as groups_mod
from whisper_npu.compilers.onnxruntime import proxy as proxy_mod
from whisper_npu.compilers.onnxruntime import quantize, ranges

EOT = 50257   # Whisper's <|endoftext|>
# dB of local SQNR a range method must gain over the all-8-bit model's range to be chosen for a group (ties and
# noise-level differences keep the default)
METHOD_MARGIN_DB = 0.5


def sqnr_db(signal: float, noise: float) -> float:
    if noise <= 0:
        return float("inf")
    return round(float(10 * np.log10(max(signal, 1e-30) / noise)), 4)


def channel_sqnr_db(signal: np.ndarray, noise: np.ndarray) -> float:
    """The median over last-axis channels of the per-channel SQNR. Why: one outlier channel (fc2's output in
    Whisper's encoder) carries most of a tensor's energy, so the whole-tensor SQNR stays high while the int8 scale it
    sets wipes out every other channel; the median channel shows that."""
    with np.errstate(divide="ignore"):
        per = 10 * np.log10(np.maximum(signal, 1e-30) / noise)
    return round(float(np.median(per)), 4)


def _session(path: Path):
    import onnxruntime as ort
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _qparams(path: Path) -> dict[str, tuple[float, int, int, int]]:
    """tensor -> (scale, zero point, qmin, qmax) of its activation QuantizeLinear in the QDQ model."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    out = {}
    for n in graph.node:
        if n.op_type == "QuantizeLinear" and n.input[0] not in inits and len(n.input) > 2:
            scale, zp = inits.get(n.input[1]), inits.get(n.input[2])
            if scale is None or zp is None or scale.size != 1:
                continue
            info = np.iinfo(zp.dtype)
            name = n.input[0].removesuffix("_QuantizeLinear_Input")   # a graph output's producer is renamed so
            out[name] = (float(scale), int(zp), int(info.min), int(info.max))   # that the DQ output keeps the name
    return out


def _dq_names(path: Path, tensors: Sequence[str]) -> dict[str, str]:
    """Where the QDQ model has each float tensor's quantized value (its DQ output, else the tensor itself)."""
    import onnx

    outs = {o for n in onnx.load(str(path), load_external_data=False).graph.node for o in n.output}
    return {t: f"{t}_DequantizeLinear_Output" if f"{t}_DequantizeLinear_Output" in outs else t for t in tensors}


def _summary_tensor(g, calibrated: set[str]) -> str:
    """The tensor whose range statistics a group's row shows: what it writes (its output, else its last produced
    tensor) when that is calibrated, else its first tensor."""
    written = [t for t in (g.output, *reversed(g.produced)) if t in calibrated]
    return written[0] if written else g.tensors[0]


def _range_qparams(lo: float, hi: float, like: tuple[float, int, int, int]) -> tuple[float, int, int, int]:
    """(scale, zero point, qmin, qmax) ORT gives an activation of range [lo, hi] (asymmetric, as its static
    quantizer does by default), in the integer type of ``like`` (the all-8-bit model's parameters)."""
    from onnxruntime.quantization.quant_utils import compute_scale_zp

    zp, scale = compute_scale_zp(np.float32(lo), np.float32(hi), np.int32(like[2]), np.int32(like[3]))
    return float(scale), int(zp), like[2], like[3]


def _fake_quant(x: np.ndarray, q: tuple[float, int, int, int]) -> np.ndarray:
    scale, zp, lo, hi = q
    return ((np.clip(np.rint(x / scale) + zp, lo, hi) - zp) * scale).astype(np.float32)


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z.astype(np.float64)
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


class OutputScore:
    """Streaming agreement of a quantized model output with the float one."""

    def __init__(self, component: str, eot_id: int, eot_steps: int):
        self.component, self.eot_id, self.eot_steps = component, eot_id, eot_steps
        self.sig = self.err = 0.0
        self.cos: list[float] = []
        self.kl: list[float] = []
        self.top1: list[float] = []
        self.eot: list[float] = []
        self.eot_ref: list[float] = []

    def add(self, ref: np.ndarray, out: np.ndarray) -> None:
        r, o = ref.astype(np.float64), out.astype(np.float64)
        self.sig += float((r * r).sum())
        self.err += float(((r - o) ** 2).sum())
        denom = np.linalg.norm(r) * np.linalg.norm(o)
        self.cos.append(float((r.ravel() @ o.ravel()) / denom) if denom > 0 else 0.0)
        if self.component == "decoder":
            lp, lq = _log_softmax(r[0]), _log_softmax(o[0])
            self.kl.append(float((np.exp(lp) * (lp - lq)).sum(-1).mean()))
            self.top1.append(float((r[0].argmax(-1) == o[0].argmax(-1)).mean()))
            k = min(self.eot_steps, r.shape[1])
            self.eot.append(float(np.exp(lq[:k, self.eot_id]).mean()))
            self.eot_ref.append(float(np.exp(lp[:k, self.eot_id]).mean()))

    def result(self) -> dict[str, float]:
        out = {"sqnr_db": sqnr_db(self.sig, self.err), "cosine": round(float(np.mean(self.cos)), 6)}
        if self.component == "decoder":
            out.update(kl=round(float(np.mean(self.kl)), 6), top1_agreement=round(float(np.mean(self.top1)), 6),
                       p_eot_first=round(float(np.mean(self.eot)), 6),
                       p_eot_first_fp32=round(float(np.mean(self.eot_ref)), 6))
        return out


def primary_gain(component: str, alone: dict, all8: dict) -> float:
    """Isolation gain: encoder output SQNR gained (dB); decoder logit KL removed (nats). Positive = better."""
    if component == "decoder":
        return round(all8["kl"] - alone["kl"], 6)
    return round(alone["sqnr_db"] - all8["sqnr_db"], 4)


def study(fp32_path: str | Path, reader: quantize.ListReader, held: quantize.ListReader, *, proxy: str = "npu",
          groups: dict | None = None, calibrate_method: str = "minmax", percentile: float = 99.999,
          per_channel: bool = True, activation_type: str = "int8", op_types: Sequence[str] = ("MatMul", "Conv"),
          top_k: int = 8, eot_id: int = EOT, eot_steps: int = 3, chains: dict[str, list[str]] | None = None,
          skip_empty_chains: bool = False, range_methods: Sequence[str] = ()) -> dict:
    """The sensitivity report of the float ONNX model ``fp32_path`` (see the module docstring): ranges from
    ``reader`` (calibration samples), scores on ``held`` (held-out samples, same input names).

    ``chains``: named sets of groups (names or patterns) also restored to 16 bits TOGETHER and ranked with the
    single groups. Why: damage that lives in the residual stream (fc2's outlier channel, the residual Add after it,
    the next LayerNorm's input) is one Q/DQ chain; restoring one link leaves the others at 8 bits. A chain that
    matches no group is an error, or left out with ``skip_empty_chains`` (role families the proxy does not
    quantize: the matmul proxy has no residual Adds). ``range_methods``: the methods (d) chooses among (fewer than
    two: no choice)."""
    if top_k < 0:
        raise ValueError(f"top_k = {top_k}: must be >= 0")
    if len(held) == 0:
        raise ValueError("sensitivity needs at least one held-out sample")
    with tempfile.TemporaryDirectory(prefix="whisper-npu-sensitivity-") as tmp_name:
        tmp = Path(tmp_name)
        pre = quantize.preprocess(Path(fp32_path), tmp / "pre.onnx")
        p = proxy_mod.plan(pre, proxy, op_types)
        by_group = proxy_mod.check_overrides(groups or {}, p)
        bits, method = proxy_mod.resolve(p, by_group, calibrate_method)
        calibrated = set(p.calibrate)
        summarized = {g.name: _summary_tensor(g, calibrated) for g in p.groups.values()}
        stats = ranges.collect(pre, reader, p.calibrate, {calibrate_method, *method.values()}, percentile,
                               progress=f"ranges {p.component}",
                               summarized=[t for t in summarized.values() if t in calibrated],
                               **proxy_mod.binning(method, calibrate_method))
        cache = ranges.write_cache(stats, tmp / "ranges.json")

        def variant(path: Path, extra16: Sequence[str] = ()) -> Path:
            proxy_mod.quantize_planned(pre, path, p, stats, cache, bits={**bits, **{t: 16 for t in extra16}},
                                       method=method, default_method=calibrate_method, per_channel=per_channel,
                                       activation_type=activation_type)
            return path

        all8 = variant(tmp / "all8.onnx")
        out_name = _session(pre).get_outputs()[0].name
        watched = sorted({g.output for g in p.groups.values()} | {t for g in p.groups.values() for t in g.tensors})
        qp = _qparams(all8)
        dq = _dq_names(all8, [g.output for g in p.groups.values()])
        choose = list(dict.fromkeys(range_methods)) if len(set(range_methods)) > 1 else []
        probe_q: dict[tuple[str, str], tuple] = {}   # (method, tensor) -> its quantization parameters
        if choose:
            tensors = sorted({t for g in p.groups.values() for t in g.tensors if t in qp})
            first = quantize.ListReader(reader.names, reader.load, min(len(reader), ranges.SUMMARY_SAMPLES))
            probe = ranges.collect(pre, first, tensors, choose, percentile, progress=f"range methods {p.component}",
                                   binned={m: tensors for m in choose})
            for m in choose:   # min/max as the compile stage gets it: over every calibrating sample
                found = stats.ranges("minmax") if m == "minmax" else probe.ranges(m)
                probe_q.update({(m, t): _range_qparams(*found[t], qp[t]) for t in tensors})
        fp_sess = _session(ranges.with_outputs(pre, watched, tmp / "fp32_watch.onnx"))
        q_sess = _session(ranges.with_outputs(all8, sorted(set(dq.values())), tmp / "all8_watch.onnx"))
        # name -> [signal, noise, per-channel signal, per-channel noise]; channels = the last axis, dropped (None)
        # when its size changes between samples (the decoder's attention scores: one per key position)
        sums: dict[str, list] = {}

        def acc(key: str, x: np.ndarray, y: np.ndarray) -> None:
            x64 = x.astype(np.float64).reshape(-1, x.shape[-1] if x.ndim else 1)
            d = x64 - y.astype(np.float64).reshape(x64.shape)
            sig, noise = (x64 * x64).sum(0), (d * d).sum(0)
            s = sums.setdefault(key, [0.0, 0.0, np.zeros_like(sig), np.zeros_like(noise)])
            s[0] += float(sig.sum())
            s[1] += float(noise.sum())
            if s[2] is not None and s[2].shape == sig.shape:
                s[2], s[3] = s[2] + sig, s[3] + noise
            else:
                s[2] = s[3] = None

        score8 = OutputScore(p.component, eot_id, eot_steps)
        held.rewind()
        for i in tqdm(range(len(held)), desc=f"all 8-bit {p.component}", unit="sample", leave=False):
            feed = held.get_next()
            fp = dict(zip([out_name, *watched], fp_sess.run([out_name, *watched], feed)))
            qd = sorted(set(dq.values()))
            qo = dict(zip([out_name, *qd], q_sess.run([out_name, *qd], feed)))
            np.save(tmp / f"ref_{i}.npy", fp[out_name])
            score8.add(fp[out_name], qo[out_name])
            for g in p.groups.values():
                acc("out:" + g.name, fp[g.output], qo[dq[g.output]])
            for t in watched:
                if t in qp:
                    acc("local:" + t, fp[t], _fake_quant(fp[t], qp[t]))
            for (m, t), q in probe_q.items():
                acc(f"method:{m}:{t}", fp[t], _fake_quant(fp[t], q))
            del fp, qo
        del fp_sess, q_sess
        all8_metrics = score8.result()

        rows = {}
        for name, g in p.groups.items():
            local = [sums["local:" + t] for t in g.tensors if "local:" + t in sums]
            summary_of = summarized[name]
            rows[name] = {"group": name, "bits": 16 if any(bits.get(t, 8) == 16 for t in g.tensors) else 8,
                          "nodes": g.quantized, "tensors": g.tensors, "sqnr_db": sqnr_db(*sums["out:" + name][:2]),
                          "local_sqnr_db": min((sqnr_db(v[0], v[1]) for v in local), default=float("inf")),
                          "local_channel_sqnr_db": min((channel_sqnr_db(v[2], v[3]) if v[2] is not None
                                                        else sqnr_db(v[0], v[1]) for v in local), default=float("inf")),
                          "range": stats.summary(summary_of)}
        probed = {t for _, t in probe_q}
        for name, g in p.groups.items():
            # judged on what the group writes: proxy.resolve gives a tensor its writer's method (its readers' only
            # when no group writes it: a graph input, a GELU output)
            quantized = [t for t in g.produced if t in probed] or [t for t in g.tensors if t in probed]
            if not quantized:
                continue
            base = min(sqnr_db(*sums["local:" + t][:2]) for t in quantized)
            by_method = {m: min(sqnr_db(*sums[f"method:{m}:{t}"][:2]) for t in quantized) for m in choose}
            best = max(choose, key=lambda m: (by_method[m], m == calibrate_method))
            plain = calibrate_method if calibrate_method in choose else "minmax"
            if plain in choose and by_method[plain] >= by_method[best] - METHOD_MARGIN_DB:
                best = plain   # within the margin: the default's ranges (min/max needs no histograms in compile)
            rows[name]["method_sqnr_db"] = {"all_8bit": base, **by_method}
            rows[name]["range_method"] = best if by_method[best] >= base + METHOD_MARGIN_DB else None
        candidates = sorted((n for n in rows if rows[n]["bits"] == 8),
                            key=lambda n: (rows[n]["local_channel_sqnr_db"], rows[n]["local_sqnr_db"]))[:top_k]

        def score_variant(tensors: Sequence[str]) -> dict:
            sess = _session(variant(tmp / "alone.onnx", tensors))
            score = OutputScore(p.component, eot_id, eot_steps)
            held.rewind()
            for i in range(len(held)):
                score.add(np.load(tmp / f"ref_{i}.npy"), sess.run([out_name], held.get_next())[0])
            return score.result()

        for name in tqdm(candidates, desc=f"isolation {p.component}", unit="group"):
            alone = score_variant(p.groups[name].tensors)
            rows[name]["alone_16bit"] = alone
            rows[name]["isolation_gain"] = primary_gain(p.component, alone, all8_metrics)
        for label, members in (chains or {}).items():
            names = [n for m in members for n in groups_mod.select(p.groups, m)]
            if not names and skip_empty_chains:
                continue
            if not names:
                raise ValueError(f"chains.{label}: {members} match no {p.component} group")
            tensors = sorted({t for n in names for t in p.groups[n].tensors})
            alone = score_variant(tensors)
            rows[label] = {"group": label, "chain": names, "bits": 8, "tensors": tensors, "alone_16bit": alone,
                           "isolation_gain": primary_gain(p.component, alone, all8_metrics)}
            candidates.append(label)
        ranking = sorted(candidates, key=lambda n: -rows[n]["isolation_gain"])
    return {"component": p.component, "proxy": proxy, "calibrate_method": calibrate_method,
            "calibration_samples": stats.samples, "held_out_samples": len(held), "top_k": top_k,
            "range_methods": choose,
            "primary_metric": "kl" if p.component == "decoder" else "sqnr_db", "all_8bit": all8_metrics,
            "ranking": ranking, "groups": list(rows.values())}


def table(report: dict) -> str:
    """The report as a Markdown table, ranked groups first (what a person reads)."""
    metric = report["primary_metric"]
    head = (f"{report['component']} ({report['proxy']} proxy, {report['calibrate_method']}, "
            f"{report['calibration_samples']} calibration / {report['held_out_samples']} held-out samples); "
            "all 8-bit: " + ", ".join(f"{k} {v}" for k, v in report["all_8bit"].items()))
    methods = report.get("range_methods") or []
    method_column = f" range method (local SQNR dB: all 8-bit / {' / '.join(methods)}) |" if methods else ""
    columns = (f"| group | bits | SQNR all 8-bit dB | local SQNR dB | local channel SQNR dB | {metric} alone 16-bit "
               "| isolation gain | min | max | abs p99.99 |" + method_column)
    lines = [head, "", columns, "|---" * (10 + bool(methods)) + "|"]
    rows = {r["group"]: r for r in report["groups"]}
    for name in [*report["ranking"], *(n for n in rows if n not in report["ranking"])]:
        r = rows[name]
        alone = r.get("alone_16bit", {}).get(metric, "")
        if "chain" in r:
            members = " + ".join(r["chain"]) if len(r["chain"]) <= 4 else f"{len(r['chain'])} groups together"
            lines.append(f"| {name} ({members}) | 8 | | | | {alone} | {r['isolation_gain']} | | | |"
                         + (" |" if methods else ""))
            continue
        method = ""
        if "method_sqnr_db" in r:
            method = f" {r['range_method'] or 'default'} ({' / '.join(str(v) for v in r['method_sqnr_db'].values())})"
        lines.append(f"| {name} | {r['bits']} | {r['sqnr_db']} | {r['local_sqnr_db']} | {r['local_channel_sqnr_db']} "
                     f"| {alone} | "
                     f"{r.get('isolation_gain', '')} | {r['range']['min']} | {r['range']['max']} | "
                     f"{r['range']['abs_p99.99']} |" + (f"{method} |" if methods else ""))
    return "\n".join(lines) + "\n"
