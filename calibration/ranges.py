"""Activation ranges of a float graph, collected once and shared by every quantized form.

Streaming: each feed runs alone through the graph with every float activation exposed as an output, so crops
of any size mix freely and memory is one feed's activations plus fixed-size histograms (ONNX Runtime's own
Entropy / Percentile calibrators stack all feeds and fail on varied sizes). ``minmax`` needs one pass; the
histogram methods a second pass over the same feeds (bins spanning the first pass's exact extremes).

* ``minmax``: the observed minimum and maximum;
* ``percentile``: the ``percentile`` and ``100 - percentile`` quantiles of the values (each tail clipped);
* ``entropy``: TensorRT's KL-divergence threshold on the histogram of ``|x|`` (128 levels), range
  ``(max(min, -t), min(max, t))``.

A range is a real-valued ``(lo, hi)``; each form turns it into scales and zero points (symmetric int8 uses
``max(|lo|, |hi|)``, uint8 the whole ``[min(lo, 0), max(hi, 0)]``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnxruntime as ort

from metasr.progress import Progress

__all__ = ["METHODS", "TensorRanges", "activation_tensors", "collect_ranges"]

METHODS = ("minmax", "entropy", "percentile")
BINS = 4096


@dataclass(frozen=True)
class TensorRanges:
    """Per activation tensor, the calibrated ``(lo, hi)`` float range; how it was computed."""

    method: str
    ranges: Mapping[str, tuple[float, float]]
    options: Mapping[str, float] = field(default_factory=dict)
    feeds: int = 0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"calibration method must be one of {METHODS}, got {self.method!r}")
        for name, (lo, hi) in self.ranges.items():
            if not (np.isfinite(lo) and np.isfinite(hi) and lo <= hi):
                raise ValueError(f"bad range for {name}: ({lo}, {hi})")

    def to_json(self) -> str:
        data = {"method": self.method, "options": dict(self.options), "feeds": self.feeds}
        data["ranges"] = {k: [float(lo), float(hi)] for k, (lo, hi) in sorted(self.ranges.items())}
        return json.dumps(data, indent=1)

    @classmethod
    def from_json(cls, text: str) -> TensorRanges:
        d = json.loads(text)
        return cls(d["method"], {k: (v[0], v[1]) for k, v in d["ranges"].items()}, d["options"], d["feeds"])


def activation_tensors(model: onnx.ModelProto) -> list[str]:
    """Names of the float32 activations: graph inputs and node outputs (no initializers), in graph order."""
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type for v in (*inferred.graph.value_info, *inferred.graph.output)}
    init = {i.name for i in model.graph.initializer}
    names = [i.name for i in model.graph.input if i.name not in init]
    names += [o for n in model.graph.node for o in n.output if types.get(o) == onnx.TensorProto.FLOAT]
    return names


def _exposing_session(model: onnx.ModelProto, names: list[str]) -> ort.InferenceSession:
    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    present = {o.name for o in exposed.graph.output}
    exposed.graph.output.extend(
        onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in names if n not in present
    )
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(exposed.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def _quantile(hist: np.ndarray, edges: np.ndarray, q: float) -> float:
    """The value below which a fraction ``q`` of the histogram's mass lies (linear within a bin)."""
    cdf = np.cumsum(hist, dtype=np.float64)
    target = q * cdf[-1]
    i = int(np.searchsorted(cdf, target))
    i = min(i, hist.size - 1)
    before = cdf[i - 1] if i else 0.0
    frac = 0.0 if hist[i] == 0 else (target - before) / hist[i]
    return float(edges[i] + frac * (edges[i + 1] - edges[i]))


def _entropy_threshold(hist: np.ndarray, edges: np.ndarray, levels: int = 128) -> float:
    """TensorRT's entropy calibration on a histogram of ``|x|``: the clip threshold whose 128-level
    quantization of the clipped distribution is closest (KL divergence) to it."""
    hist = hist.astype(np.float64)
    best, best_i = np.inf, hist.size
    for i in range(levels, hist.size + 1, max(1, (hist.size - levels) // 256)):
        p = hist[:i].copy()
        p[-1] += hist[i:].sum()  # outliers clipped into the last bin
        group = np.arange(i) * levels // i  # each of the i bins' quantization level
        nonzero = hist[:i] > 0
        sums = np.bincount(group, weights=hist[:i], minlength=levels)
        counts = np.bincount(group, weights=nonzero, minlength=levels)
        q = np.where(nonzero, sums[group] / np.maximum(counts[group], 1), 0.0)  # spread over the nonzero bins
        mask = p > 0
        if not (q[mask] > 0).all():
            continue
        pn, qn = p[mask] / p.sum(), q[mask] / q.sum()
        kl = float(np.sum(pn * np.log(pn / qn)))
        if kl < best:
            best, best_i = kl, i
    return float(edges[best_i])


def collect_ranges(
    model: onnx.ModelProto,
    feeds: Iterable[dict[str, np.ndarray]],
    method: str = "percentile",
    percentile: float = 99.999,
    progress: bool = False,
) -> TensorRanges:
    """Ranges of every float activation of ``model`` over ``feeds`` (a re-iterable of feed dicts)."""
    if method not in METHODS:
        raise ValueError(f"calibration method must be one of {METHODS}, got {method!r}")
    if not 50.0 < percentile <= 100.0:
        raise ValueError(f"percentile must be in (50, 100], got {percentile}")
    names = activation_tensors(model)
    session = _exposing_session(model, names)
    lo = {n: np.inf for n in names}
    hi = {n: -np.inf for n in names}
    count = 0
    for feed in Progress(feeds, "ranges", unit="crop", enabled=progress):
        for n, a in zip(names, session.run(names, feed), strict=True):
            lo[n], hi[n] = min(lo[n], float(a.min())), max(hi[n], float(a.max()))
        count += 1
    if not count:
        raise ValueError("no calibration feeds")
    if method == "minmax":
        return TensorRanges(method, {n: (lo[n], hi[n]) for n in names}, {}, count)
    # second pass: fixed histograms over the exact extremes (of x for percentile, of |x| for entropy)
    spans = {n: (lo[n], hi[n]) if method == "percentile" else (0.0, max(-lo[n], hi[n])) for n in names}
    edges = {n: np.linspace(a, max(b, a + 1e-12), BINS + 1) for n, (a, b) in spans.items()}
    hists = {n: np.zeros(BINS, dtype=np.int64) for n in names}
    for feed in Progress(feeds, "histograms", unit="crop", enabled=progress):
        for n, a in zip(names, session.run(names, feed), strict=True):
            values = a if method == "percentile" else np.abs(a)
            hists[n] += np.histogram(values, bins=edges[n])[0]
    ranges = {}
    for n in names:
        if method == "percentile":
            tail = 1.0 - percentile / 100.0
            ranges[n] = (_quantile(hists[n], edges[n], tail), _quantile(hists[n], edges[n], 1.0 - tail))
        else:
            t = _entropy_threshold(hists[n], edges[n])
            ranges[n] = (max(lo[n], -t), min(hi[n], t))
    options = {"percentile": percentile} if method == "percentile" else {}
    return TensorRanges(method, ranges, {**options, "bins": BINS}, count)
