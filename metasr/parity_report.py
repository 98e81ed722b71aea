"""Rendering a :class:`~metasr.parity.ParityRun`: Markdown, JSON, and Polygraphy reference files.

The Markdown summary has one row per backend x precision x image set x scale (worst case over the images for
the error columns, means for the quality columns) and lists every failing case. The JSON report holds every
case. Polygraphy files (:func:`save_polygraphy`) hold each graph's reference feeds and PyTorch outputs in
Polygraphy's own JSON formats, so ``polygraphy run <graph or engine> --load-inputs ... --load-outputs ...``
checks any backend (TensorRT on a GPU included) against the same references.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import asdict
from itertools import groupby
from pathlib import Path

from metasr.fileio import atomic_path
from metasr.parity import Case, ParityRun

__all__ = ["polygraphy_paths", "save_polygraphy", "to_json", "to_markdown"]


def _db(v: float | None) -> str:
    if v is None:
        return "-"
    return "inf" if math.isinf(v) else f"{v:.2f}"


def _mean(values: list[float | None]) -> float | None:
    got = [v for v in values if v is not None]
    return statistics.fmean(got) if got else None


def _limits(run: ParityRun) -> list[str]:
    out = []
    for precision, t in run.thresholds.items():
        parts = [f"{k} {v:g}" for k, v in asdict(t).items() if v is not None]
        out.append(f"{precision}: {', '.join(parts) or 'none'}")
    return out


def to_markdown(run: ParityRun) -> str:
    """The summary table, the failing cases and the skipped backends, as Markdown."""
    head = (
        "| backend | precision | set | scale | images | max abs | mean abs | uint8 equal (min) | PSNR vs ref (min) "
        "| Y-PSNR ref | Y-PSNR | SSIM ref | SSIM | result |"
    )
    lines = [head, "|" + "---|" * 14]

    def key(c: Case) -> tuple:
        return c.backend, c.precision, c.image.split("/")[0], c.scale

    for (backend, precision, folder, scale), group in groupby(sorted(run.cases, key=key), key=key):
        cases = list(group)
        ok = all(c.passed for c in cases)
        ssim_ref, ssim = _mean([c.ref_ssim_y for c in cases]), _mean([c.ssim_y for c in cases])
        lines.append(
            f"| {backend} | {precision} | {folder} | x{scale:g} | {len(cases)} | {max(c.max_abs for c in cases):.2e} "
            f"| {statistics.fmean(c.mean_abs for c in cases):.2e} | {100 * min(c.uint8_equal for c in cases):.3f}% "
            f"| {_db(min(c.psnr_db for c in cases))} | {_db(_mean([c.ref_psnr_y for c in cases]))} "
            f"| {_db(_mean([c.psnr_y for c in cases]))} | {'-' if ssim_ref is None else f'{ssim_ref:.4f}'} "
            f"| {'-' if ssim is None else f'{ssim:.4f}'} | {'pass' if ok else '**FAIL**'} |"
        )
    failed = [c for c in run.cases if not c.passed]
    verdict = (
        f"**all {len(run.cases)} cases pass**" if run.passed else f"**{len(failed)} of {len(run.cases)} cases fail**"
    )
    lines += ["", f"{verdict} (limits: {'; '.join(_limits(run))}; reference: PyTorch, {run.reference.name})"]
    lines += [f"- FAIL {c.backend}/{c.precision} {c.image} x{c.scale:g}: {'; '.join(c.failures)}" for c in failed]
    lines += [f"- skipped {b}/{p}: {reason}" for b, p, reason in run.skipped]
    return "\n".join(lines) + "\n"


def _jsonable(v: object) -> object:
    if isinstance(v, float) and math.isinf(v):
        return "inf"
    if isinstance(v, tuple):
        return [_jsonable(x) for x in v]
    return v


def to_json(run: ParityRun) -> str:
    """Every case, the limits, the skipped backends and the verdict as JSON (``"inf"`` for identical PSNR)."""
    cases = []
    for c in run.cases:
        d = {k: _jsonable(v) for k, v in asdict(c).items()}
        d["gt_loss_db"] = c.gt_loss_db
        d["passed"] = c.passed
        cases.append(d)
    doc = {
        "artifacts": str(run.artifacts),
        "reference": str(run.reference),
        "scales": list(run.scales),
        "thresholds": {p: asdict(t) for p, t in run.thresholds.items()},
        "skipped": [{"backend": b, "precision": p, "reason": r} for b, p, r in run.skipped],
        "passed": run.passed,
        "cases": cases,
    }
    return json.dumps(doc, indent=2)


def polygraphy_paths(path: str | Path) -> dict[str, Path]:
    """``refs/inputs.json`` -> ``{"feature": refs/inputs.feature.json, "upscale": refs/inputs.upscale.json}``
    (one file per graph: each graph is checked on its own)."""
    path = Path(path)
    suffix = path.suffix or ".json"
    return {g: path.with_name(f"{path.stem if path.suffix else path.name}.{g}{suffix}") for g in ("feature", "upscale")}


def save_polygraphy(run: ParityRun, inputs: str | Path | None, outputs: str | Path | None) -> list[Path]:
    """Write each graph's reference feeds (a JSON ``List[Dict[str, ndarray]]``, Polygraphy's
    ``--load-inputs`` format) and PyTorch outputs (a Polygraphy ``RunResults`` from a runner named
    ``pytorch``, its ``--load-outputs`` format), one file per graph (:func:`polygraphy_paths`)."""
    from polygraphy.comparator import IterationResult, RunResults
    from polygraphy.json import save_json
    from polygraphy.logger import G_LOGGER

    written = []
    with G_LOGGER.verbosity(G_LOGGER.CRITICAL):  # its "[I] Saving ..." lines would land in our stdout
        for graph, records in run.polygraphy.items():
            if inputs is not None:
                path = polygraphy_paths(inputs)[graph]
                with atomic_path(path, suffix=".json") as tmp:
                    save_json([feeds for feeds, _ in records], str(tmp))
                written.append(path)
            if outputs is not None:
                path = polygraphy_paths(outputs)[graph]
                results = RunResults()
                results.append(("pytorch", [IterationResult(outs, runner_name="pytorch") for _, outs in records]))
                with atomic_path(path, suffix=".json") as tmp:
                    results.save(str(tmp))
                written.append(path)
    return written
