"""Accuracy of a reduced-precision feature graph on held-apart crops, and the pass that keeps tensors in float.

A :class:`Scorer` runs a candidate feature graph and the float upscale graph (ONNX Runtime CPU) on each
held-apart crop at its own scale, clamps and rounds the output (the project's conventions,
:mod:`metasr.metrics`) and compares it with the FP32 pipeline's output and with the HR crop: Y-channel MSE with
``ceil(r)`` shaved, pooled per scale bin ``(1, 2], (2, 3], ...``.

A bin's *loss* is what its deviation from FP32 costs a sharp image, not only the held-apart crops. A deviation
of MSE ``d`` (uncorrelated with the FP32 error) costs an image whose FP32 output has error ``e``
``10 log10(1 + d / e)`` dB: the same deviation costs more the better the image is reconstructed. The crops of
training photos reconstruct at ~32 dB in the (1, 2] bin, a test set such as Set5 at x1.5 at 39.5 dB, so on the
crops alone the gate under-stated the test sets' loss 3-6x (the bundled model, 0.037 dB on the crops,
0.21 dB on Set5 x1.5). So the reference error of a bin is the smaller of the crops' own FP32 error and that of
an image reconstructed at ``reference_psnr_db`` (default 40 dB) in the smallest-scale bin and, in the other
bins, as much better than the crops as there (``reference_psnr_db - PSNR_fp32(first bin)`` dB). The loss is
``max(PSNR_fp32 - PSNR, 10 log10(1 + MSE_vs_fp32 / reference error))``: never less than the measured drop
against ground truth, and a lucky cancellation on a few crops cannot hide a real deviation.

:func:`choose_float_tensors` measures the fully quantized graph; while the worst bin is over budget it
ranks every candidate (quantized activations and weights) by leave-one-out (how much of the deviation from
FP32 disappears when only that tensor stays float), then keeps candidates in float in that order,
re-measuring after each and skipping one that does not lower the loss on top of those already kept, until
the budget holds, ``max_kept`` is reached or no candidate helps. Given each candidate's *cost* (how many INT8
kernels keeping it in float turns into float ones: a convolution reading or, on ONNX Runtime CPU, writing it)
it first tries the free candidates alone, and only when they cannot meet the budget all of them, in
leave-one-out order (the result with the lower loss is kept when neither meets the budget). Once the budget
holds, a pruning pass drops every kept tensor but the last (the costliest first, then the latest) without
which the budget still holds.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import onnx
import onnxruntime as ort
from metasr.calibration.data import CalibrationCrop
from metasr.runtime.feeds import plan_feeds
from metasr.runtime.projection import project

from metasr.metrics import psnr_y, quantize
from metasr.progress import Progress

__all__ = [
    "DEFAULT_REFERENCE_PSNR_DB",
    "BinScore",
    "KeptTensor",
    "Score",
    "Scorer",
    "Sensitivity",
    "choose_float_tensors",
]

# the sharpest reconstruction the budget protects: the targets' sharpest cell, Set5 at x1.5, is 39.5 dB (FP32)
DEFAULT_REFERENCE_PSNR_DB = 40.0


def _y_mse(a: np.ndarray, b: np.ndarray, scale: float) -> float:
    """Y-channel MSE on [0, 1] values with the project's PSNR conventions (shave ceil(r), common region)."""
    p = psnr_y(a, b, scale)
    return 0.0 if math.isinf(p) else 10.0 ** (-p / 10.0)


def _psnr(mse: float) -> float:
    return math.inf if mse == 0 else -10.0 * math.log10(mse)


@dataclass(frozen=True)
class BinScore:
    """Held-apart crops with scales in ``(lo, hi]``; PSNRs in dB from the pooled Y-MSE."""

    lo: float
    hi: float
    crops: int
    psnr_fp32: float  # FP32 pipeline vs ground truth
    psnr: float  # candidate vs ground truth
    psnr_vs_fp32: float  # candidate output vs FP32 output
    loss_db: float
    psnr_reference: float = math.nan  # the FP32 PSNR the deviation's cost was computed at (see the docstring)


@dataclass(frozen=True)
class Score:
    """A candidate's bins and its mean Y-MSE against the FP32 output (the ranking quantity)."""

    bins: tuple[BinScore, ...]
    error: float

    @property
    def worst(self) -> BinScore:
        return max(self.bins, key=lambda b: b.loss_db)

    @property
    def loss_db(self) -> float:
        return self.worst.loss_db

    @property
    def psnr_vs_fp32(self) -> float:
        return min(b.psnr_vs_fp32 for b in self.bins)

    def to_dict(self) -> dict:
        return {"loss_db": self.loss_db, "psnr_vs_fp32": self.psnr_vs_fp32, "bins": [asdict(b) for b in self.bins]}


def _session(model: onnx.ModelProto | str, threads: int) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
    data = model if isinstance(model, str) else model.SerializeToString()
    return ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])


class Scorer:
    """Scores feature graphs (with the fixed float ``upscale`` graph) on ``crops`` against FP32 and HR."""

    def __init__(
        self,
        fp32_feature: onnx.ModelProto | str,
        upscale: onnx.ModelProto | str,
        crops: Sequence[CalibrationCrop],
        max_scale: float,
        merge_tol: float,
        threads: int = 0,
        reference_psnr_db: float = DEFAULT_REFERENCE_PSNR_DB,
    ) -> None:
        if not crops:
            raise ValueError("no held-apart crops to score on")
        self.crops = tuple(crops)
        self.threads = threads
        self.reference_psnr_db = reference_psnr_db
        self._upscale = _session(upscale, threads)
        self._plans = [
            plan_feeds(project(c.lr.shape[0], c.lr.shape[1], c.scale, max_scale=max_scale, merge_tol=merge_tol))
            for c in self.crops
        ]
        self.reference = self._outputs(fp32_feature)
        self._mse_fp32 = [_y_mse(r, c.hr, c.scale) for r, c in zip(self.reference, self.crops, strict=True)]
        edges = np.arange(1.0, math.ceil(max(c.scale for c in self.crops)) + 1.0)
        self._bins = list(itertools.pairwise(edges.tolist()))

    def _outputs(
        self, feature: onnx.ModelProto | str, upscale: onnx.ModelProto | str | None = None
    ) -> list[np.ndarray]:
        session = _session(feature, self.threads)
        up = self._upscale if upscale is None else _session(upscale, self.threads)
        out = []
        for crop, plan in zip(self.crops, self._plans, strict=True):
            feats = session.run(["features"], crop.feed())[0]
            sr = up.run(["sr"], {"features": feats, **plan})[0]
            out.append(quantize(sr[0].transpose(1, 2, 0)))  # (H, W, 3) uint8
        return out

    def score(self, feature: onnx.ModelProto | str, upscale: onnx.ModelProto | str | None = None) -> Score:
        """Score a feature graph (and optionally an upscale graph in place of the float one)."""
        outs = self._outputs(feature, upscale)
        mse = [_y_mse(o, c.hr, c.scale) for o, c in zip(outs, self.crops, strict=True)]
        dev = [_y_mse(o, r, c.scale) for o, r, c in zip(outs, self.reference, self.crops, strict=True)]
        bins = []
        for lo, hi, idx, m_fp32, m_ref in self._bin_references():
            m, d = float(np.mean([mse[i] for i in idx])), float(np.mean([dev[i] for i in idx]))
            loss = max(_psnr(m_fp32) - _psnr(m), 10.0 * math.log10(1.0 + d / m_ref) if m_ref else 0.0)
            bins.append(BinScore(lo, hi, len(idx), _psnr(m_fp32), _psnr(m), _psnr(d), loss, _psnr(m_ref)))
        return Score(tuple(bins), float(np.mean(dev)))

    def _bin_references(self) -> list[tuple[float, float, list[int], float, float]]:
        """Per non-empty bin: its edges, crop indices, pooled FP32 MSE and reference MSE (module docstring)."""
        out = []
        for lo, hi in self._bins:
            idx = [i for i, c in enumerate(self.crops) if lo < c.scale <= hi]
            if idx:
                out.append((float(lo), float(hi), idx, float(np.mean([self._mse_fp32[i] for i in idx]))))
        if not out:
            return []
        sharper = _psnr(out[0][3]) - self.reference_psnr_db  # dB: how much better the reference image is
        return [(lo, hi, idx, m, min(m, m * 10.0 ** (sharper / 10.0))) for lo, hi, idx, m in out]


@dataclass(frozen=True)
class KeptTensor:
    """A tensor kept in float, why, and the worst-bin loss once it (and those before it) were kept."""

    name: str
    reason: str
    error_share: float  # fraction of the deviation from FP32 that keeping it alone removed
    loss_after_db: float  # with this and the tensors listed before it in float
    cost: int = 0  # INT8 kernels that run in float because of it


@dataclass(frozen=True)
class Sensitivity:
    """The outcome of :func:`choose_float_tensors`."""

    kept: tuple[KeptTensor, ...]
    full: Score  # every candidate quantized
    final: Score  # with ``kept`` in float
    met: bool
    ranking: dict[str, float]  # leave-one-out error share per candidate (empty when not needed)
    pruned: tuple[str, ...] = ()  # kept on the way, then dropped: the budget holds without them

    def to_dict(self) -> dict:
        return {
            "kept": [asdict(k) for k in self.kept],
            "pruned": list(self.pruned),
            "full": self.full.to_dict(),
            "final": self.final.to_dict(),
            "met": self.met,
            "ranking": self.ranking,
        }


def choose_float_tensors(
    build: Callable[[list[str]], onnx.ModelProto],
    candidates: Sequence[str],
    scorer: Scorer,
    budget_db: float,
    min_psnr_db: float,
    max_kept: int,
    progress: bool = False,
    costs: Mapping[str, int] | None = None,
) -> Sensitivity:
    """Keep few ``candidates`` in float (ranked by leave-one-out; the free ones alone first when ``costs``
    says how many INT8 kernels each would turn into float ones) so the worst scale bin loses at most ``budget_db``
    and stays >= ``min_psnr_db`` against FP32; at most ``max_kept`` tensors. ``build(names)`` is the quantized
    graph with ``names`` kept in float (``build([])``: everything quantized)."""
    cost = dict.fromkeys(candidates, 0) | dict(costs or {})

    def ok(s: Score) -> bool:
        return s.loss_db <= budget_db and s.psnr_vs_fp32 >= min_psnr_db

    full = scorer.score(build([]))
    if ok(full) or max_kept == 0:
        return Sensitivity((), full, full, ok(full), {})
    ranking = {}
    for name in Progress(candidates, "sensitivity", unit="tensor", enabled=progress):
        alone = scorer.score(build([name]))
        ranking[name] = (full.error - alone.error) / full.error if full.error else 0.0

    def kept_tensor(name: str, before: Score, after: Score) -> KeptTensor:
        reason = (
            f"leave-one-out: float alone removes {100 * ranking[name]:.1f}% of the deviation from FP32; "
            f"worst-bin loss {before.loss_db:.3f} -> {after.loss_db:.3f} dB"
            + (f"; runs {cost[name]} INT8 kernel(s) in float" if cost[name] else "")
        )
        return KeptTensor(name, reason, ranking[name], after.loss_db, cost[name])

    def greedy(order: list[str]) -> tuple[list[KeptTensor], Score]:
        kept: list[KeptTensor] = []
        final = full
        for name in order:
            trial = scorer.score(build([k.name for k in kept] + [name]))
            if trial.loss_db >= final.loss_db:  # interactions: float here does not help on top of those kept
                continue
            kept.append(kept_tensor(name, final, trial))
            final = trial
            if ok(final) or len(kept) == max_kept:
                break
        return kept, final

    helpful = sorted((n for n in ranking if ranking[n] > 0), key=lambda n: -ranking[n])
    kept, final = greedy([n for n in helpful if cost[n] == 0])  # free candidates alone, when they suffice
    if not ok(final) and any(cost[n] for n in helpful):
        every = greedy(helpful)  # else every candidate, accuracy first
        if ok(every[1]) or every[1].loss_db < final.loss_db:
            kept, final = every
    pruned: list[str] = []
    if ok(final):  # the costliest first, then the latest; the last one kept is what made the budget hold
        for k in sorted(kept[:-1], key=lambda k: (-k.cost, -kept.index(k))):
            rest = [x.name for x in kept if x is not k and x.name not in pruned]
            trial = scorer.score(build(rest))
            if ok(trial):
                pruned.append(k.name)
                final = trial
        if pruned:  # the losses after each of the remaining ones, in their order
            names, kept, before = [k.name for k in kept if k.name not in pruned], [], full
            for i, name in enumerate(names):
                after = final if i == len(names) - 1 else scorer.score(build(names[: i + 1]))
                kept.append(kept_tensor(name, before, after))
                before = after
    return Sensitivity(tuple(kept), full, final, ok(final), ranking, tuple(pruned))
