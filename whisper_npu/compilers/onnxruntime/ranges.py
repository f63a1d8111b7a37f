"""Activation ranges for every calibration method from ONE pass over the calibration samples.

Why: a per-group range method (minmax for one group, percentile for another) and the sensitivity study's
many model variants all need ranges; ORT's calibrators give one method per run and recalibrate every time.
Here the graph's tensors become extra outputs, each sample is run once (``reader`` hands them out one at a
time, so memory is one sample's intermediates whatever the set size) and per tensor we keep the min/max
(ORT's MinMax), the |x| histogram of ORT's Percentile calibrator (2048 bins, symmetric) and the real-value
histogram of its Entropy calibrator (128 bins): ORT's own ``HistogramCollector`` does the merging, so the
thresholds are the ones its calibrators compute for the same samples. Histograms are kept only where something
reads them: for percentile / entropy the tensors ``binned`` names for that method (those whose range method it is,
over the first ``binned_samples`` samples; every tensor and sample when the default method is), else only the
``summarized`` tensors (the study's range columns), over the first ``SUMMARY_SAMPLES`` samples. Minmax alone keeps
none: binning every activation of every sample cost the whisper-base encoder about 15 s a sample, several times the
forward pass, and min/max ranges do not depend on it. ``write_cache`` writes the min/max ranges as ORT's calibration
cache (``quantize_static(calibration_cache_path=...)``), so quantizing a variant
needs no calibration pass. ``collect`` remembers its last few results in the process, keyed by the model's bytes,
the inputs' bytes and its arguments: the sensitivity stage's promotion steps compile the same export on the same
samples with other bit widths, and the same bytes in give the same statistics out.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

METHODS = ("minmax", "percentile", "entropy")
# samples whose |x| histogram feeds the summary-only percentiles (binning the encoder's attention tensors costs
# several seconds a sample: 94 samples took 12 min where the min/max pass takes about one)
SUMMARY_SAMPLES = 16


def with_outputs(model_path: str | Path, tensors: Iterable[str], out_path: str | Path) -> Path:
    """A copy of the graph at ``model_path`` with ``tensors`` added as graph outputs (types from value_info, which
    ``quantize.preprocess``'s shape inference wrote; DQ outputs of a QDQ model get their float type)."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(model_path))
    graph = model.graph
    have = {o.name for o in graph.output}
    infos = {v.name: v for v in (*graph.value_info, *graph.input)}
    for t in tensors:
        if t in have:
            continue
        graph.output.append(infos[t] if t in infos else helper.make_tensor_value_info(t, TensorProto.FLOAT, None))
        have.add(t)
    onnx.save(model, str(out_path))
    return Path(out_path)


class Stats:
    """Streaming per-tensor statistics; ``add`` one sample's tensors at a time."""

    def __init__(self, methods: Iterable[str] = METHODS, percentile: float = 99.999, summarized: Iterable[str] = (),
                 binned: dict[str, Iterable[str]] | None = None, binned_samples: int | None = None):
        from onnxruntime.quantization.calibrate import HistogramCollector

        self.methods, self.percentile = set(methods), percentile
        # per histogram method, the tensors binned for its ranges (None: every tensor), over the first
        # ``binned_samples`` samples (None: every sample)
        self.every = {m: None if binned is None else set(binned.get(m, ())) for m in ("percentile", "entropy")}
        self.binned_samples = binned_samples
        if "percentile" not in self.methods:
            self.every["percentile"] = set()
        # tensors whose |x| histogram is kept (None: all): percentile ranges need theirs, summary() its own
        pct = self.every["percentile"]
        self.histogrammed = None if pct is None else pct | set(summarized)
        self.summarized = set(summarized)
        self.lo: dict[str, float] = {}
        self.hi: dict[str, float] = {}
        # the absolute histogram also gives the range statistics (|x| percentiles) the report shows
        self.absolute = HistogramCollector("percentile", True, 2048, 128, percentile, "same")
        self.real = HistogramCollector("entropy", False, 128, 128, percentile, "same") \
            if "entropy" in self.methods else None
        self.samples = 0

    def add(self, arrays: dict[str, np.ndarray]) -> None:
        for t, a in arrays.items():
            a = np.asarray(a, dtype=np.float32)
            if a.size == 0:
                continue
            lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
            if not (np.isfinite(lo) and np.isfinite(hi)):
                raise ValueError(f"tensor {t!r} has non-finite values ({lo}, {hi}): it cannot get a static range")
            self.lo[t] = min(lo, self.lo.get(t, lo))
            self.hi[t] = max(hi, self.hi.get(t, hi))
        if self.histogrammed is None:
            self.absolute.collect_absolute_value(arrays)
        else:
            binning = self.binned_samples is None or self.samples < self.binned_samples
            every = self.every["percentile"] if binning else set()
            early = self.summarized if self.samples < SUMMARY_SAMPLES else set()
            if kept := {t: a for t, a in arrays.items() if t in every or t in early}:
                self.absolute.collect_absolute_value(kept)
        if self.real is not None and (self.binned_samples is None or self.samples < self.binned_samples):
            every = self.every["entropy"]
            if kept := (arrays if every is None else {t: a for t, a in arrays.items() if t in every}):
                self.real.collect_value(kept)
        self.samples += 1

    def ranges(self, method: str) -> dict[str, tuple[float, float]]:
        """(rmin, rmax) per tensor as ORT's ``method`` calibrator would set them."""
        if method == "minmax":
            return {t: (self.lo[t], self.hi[t]) for t in self.lo}
        if method not in self.methods:
            raise ValueError(f"range method {method!r} was not collected (collected: {sorted(self.methods)})")
        collector = self.real if method == "entropy" else self.absolute
        with contextlib.redirect_stdout(io.StringIO()):   # ORT prints progress lines
            found = collector.compute_collection_result()
        # only the tensors binned for this method saw every sample (the summarized ones only the first few)
        every = self.every[method]
        return {t: (float(v[0]), float(v[1])) for t, v in found.items() if every is None or t in every}

    def summary(self, tensor: str, percentiles=(99.0, 99.9, 99.99)) -> dict[str, float]:
        """min, max (every sample) and |x| percentiles (from the 2048-bin histogram: bin upper edges; the first
        ``SUMMARY_SAMPLES`` samples unless percentile ranges were collected) of one tensor (one of the ``summarized``
        tensors, or any with percentile collected)."""
        if self.histogrammed is not None and tensor not in self.histogrammed:
            raise ValueError(f"no histogram of {tensor!r}: pass it in summarized")
        hist, edges = self.absolute.histogram_dict[tensor][:2]
        cdf = np.cumsum(hist) / max(hist.sum(), 1)
        out = {"min": self.lo[tensor], "max": self.hi[tensor]}
        for p in percentiles:
            out[f"abs_p{p:g}"] = float(edges[min(np.searchsorted(cdf, p / 100.0) + 1, len(edges) - 1)])
        return {k: round(v, 6) for k, v in out.items()}


def collect(model_path: str | Path, reader, tensors: Iterable[str], methods: Iterable[str] = METHODS,
            percentile: float = 99.999, progress: str | None = None, summarized: Iterable[str] = (),
            binned: dict[str, Iterable[str]] | None = None, binned_samples: int | None = None) -> Stats:
    """Statistics of ``tensors`` of the float graph at ``model_path`` over every sample of ``reader``
    (a ``quantize.ListReader``), one sample at a time; ``summarized``: tensors :meth:`Stats.summary` is asked for;
    ``binned``: method (percentile, entropy) -> the tensors whose ranges by it are asked for (None: all), binned over
    the first ``binned_samples`` samples (None: every sample)."""
    import onnxruntime as ort
    from tqdm import tqdm

    tensors, summarized = sorted(set(tensors)), sorted(set(summarized))
    binned = None if binned is None else {m: sorted(set(ts)) for m, ts in sorted(binned.items())}
    key = _fingerprint(model_path, reader, tensors, methods, percentile, summarized, (binned, binned_samples))
    if key in _MEMO:
        return _MEMO[key]
    stats = Stats(methods, percentile, summarized, binned, binned_samples)
    with tempfile.TemporaryDirectory(prefix="whisper-npu-ranges-") as tmp:
        path = with_outputs(model_path, tensors, Path(tmp) / "augmented.onnx")
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        reader.rewind()
        for _ in tqdm(range(len(reader)), desc=progress or "ranges", unit="sample", leave=False,
                      disable=progress is None):
            feed = reader.get_next()
            if feed is None:
                break
            stats.add(dict(zip(tensors, session.run(tensors, feed))))
    if stats.samples == 0:
        raise ValueError("range collection needs at least one calibration sample")
    _MEMO[key] = stats
    while len(_MEMO) > MEMO_SIZE:
        del _MEMO[next(iter(_MEMO))]
    return stats


MEMO_SIZE = 4   # results kept (the promotion compiles two components)
_MEMO: dict[str, Stats] = {}


def _fingerprint(model_path: str | Path, reader, tensors: list[str], methods: Iterable[str], percentile: float,
                 summarized: list[str], binned: tuple) -> str:
    """sha256 of the model file, every input array of ``reader`` (name, dtype, shape, bytes) and the arguments."""
    h = hashlib.sha256(Path(model_path).read_bytes())
    h.update(repr((tensors, sorted(set(methods)), float(percentile), summarized, binned)).encode())
    reader.rewind()
    while (feed := reader.get_next()) is not None:
        for name in sorted(feed):
            a = np.ascontiguousarray(feed[name])
            h.update(f"{name}|{a.dtype}|{a.shape}".encode())
            h.update(a.tobytes())
    return h.hexdigest()


def write_cache(stats: Stats, path: str | Path) -> Path:
    """The min/max ranges as ORT's calibration cache (``quantize_static(calibration_cache_path=path)``)."""
    from onnxruntime.quantization.calibrate import CalibrationMethod, TensorData, TensorsData, save_tensors_data

    data = {t: TensorData(lowest=np.float32(lo), highest=np.float32(hi))
            for t, (lo, hi) in stats.ranges("minmax").items()}
    save_tensors_data(TensorsData(CalibrationMethod.MinMax, data), path)
    return Path(path)
