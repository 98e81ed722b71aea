"""Score an artifact directory's precisions on test images: Y-PSNR against ground truth and against FP32.

Every variant (a precision and the form made for one target, on a backend: ONNX Runtime CPU unless it names
another, e.g. ``"openvino"``) runs through the runtime's own backend and projection code, on LR images made
with the project's conventions (:func:`metasr.data.make_pair`: ``"benchmark"`` = the ``Set5_LR`` rule for
integer scales, ``"metasr"`` = the official Meta-SR rule otherwise),
scored with :func:`metasr.metrics.psnr_y` (clamped, rounded, ``ceil(r)`` shaved). A cell is one test set at one
scale: mean PSNR over its images, and the lowest PSNR of any image's output against the FP32 output.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from metasr.runtime.backends import open_backend
from metasr.runtime.feeds import plan_feeds
from metasr.runtime.manifest import Manifest
from metasr.runtime.projection import project

from metasr.data import list_images, load_rgb, make_pair
from metasr.metrics import psnr_y, quantize

__all__ = ["Cell", "Variant", "evaluate_precisions", "format_cells"]


@dataclass(frozen=True)
class Variant:
    """A precision run in the form made for ``target`` on ``backend`` (e.g. int8 / "tensorrt" / "ort": the
    TensorRT form on ONNX Runtime CPU)."""

    name: str
    precision: str
    target: str = "any"
    backend: str = "ort"


@dataclass(frozen=True)
class Cell:
    dataset: str
    scale: float
    variant: str
    images: int
    psnr: float  # mean over images, dB
    psnr_fp32: float
    psnr_vs_fp32: float  # the cell's outputs against the FP32 outputs, Y-MSE pooled over its images
    min_psnr_vs_fp32: float  # the worst image's output against the FP32 output

    @property
    def loss_db(self) -> float:
        return self.psnr_fp32 - self.psnr


class _Runner:
    def __init__(self, directory: Path, manifest: Manifest, variant: Variant) -> None:
        self.manifest = manifest
        specs = [manifest.graph(k, "onnx", variant.precision, variant.target) for k in ("feature", "upscale")]
        opened = (open_backend(variant.backend, s, manifest.read_verified(directory, s)) for s in specs)
        self.feature, self.upscale = opened

    def __call__(self, lr: np.ndarray, scale: float) -> np.ndarray:
        x = np.ascontiguousarray(lr.transpose(2, 0, 1), dtype=np.float32)[None]  # (1, 3, h, w)
        feats = self.feature.infer({"lr": x})["features"]
        plan = project(
            lr.shape[0], lr.shape[1], scale, max_scale=self.manifest.scale_max, merge_tol=self.manifest.merge_tol
        )
        sr = self.upscale.infer({"features": feats, **plan_feeds(plan)})["sr"]
        return quantize(sr[0].transpose(1, 2, 0))  # (H, W, 3) uint8


def _pooled(psnrs: list[float]) -> float:
    mse = float(np.mean([0.0 if math.isinf(p) else 10 ** (-p / 10) for p in psnrs]))
    return math.inf if mse == 0 else -10 * math.log10(mse)


def evaluate_precisions(
    artifacts: str | Path, test_dirs: Sequence[str | Path], scales: Sequence[float], variants: Sequence[Variant]
) -> list[Cell]:
    """Cells for every test folder x scale x variant (FP32 on ONNX Runtime is always run, as the reference)."""
    directory = Path(artifacts)
    manifest = Manifest.read(directory)
    ref = _Runner(directory, manifest, Variant("fp32", "fp32"))
    runners = {v.name: _Runner(directory, manifest, v) for v in variants}
    cells = []
    for folder in test_dirs:
        paths = list_images(folder)
        for scale in scales:
            convention = "benchmark" if float(scale).is_integer() else "metasr"
            rows: dict[str, list[tuple[float, float]]] = {v.name: [] for v in variants}
            base = []
            for path in paths:
                lr, hr = make_pair(load_rgb(path), scale, convention)
                out32 = ref(lr, scale)
                base.append(psnr_y(out32, hr, scale))
                for name, run in runners.items():
                    out = run(lr, scale)
                    vs = psnr_y(out, out32, 0)  # whole image, no shave: every pixel of the deviation counts
                    rows[name].append((psnr_y(out, hr, scale), vs))
            for name, vals in rows.items():
                cells.append(
                    Cell(
                        Path(folder).name,
                        float(scale),
                        name,
                        len(paths),
                        float(np.mean([v[0] for v in vals])),
                        float(np.mean(base)),
                        _pooled([v[1] for v in vals]),
                        float(min(v[1] for v in vals)),
                    )
                )
    return cells


def format_cells(cells: Sequence[Cell]) -> str:
    """Markdown: one row per variant and test set, a column per scale with the Y-PSNR change against FP32 (dB),
    the cell's PSNR against the FP32 output (pooled) and its worst image's; then the worst cell per variant."""
    scales = sorted({c.scale for c in cells}, key=lambda s: (not float(s).is_integer(), s))
    keys = list(dict.fromkeys((c.variant, c.dataset) for c in cells))
    by = {(c.variant, c.dataset, c.scale): c for c in cells}
    lines = [
        "| variant | set | " + " | ".join(f"x{s:g}" for s in scales) + " |",
        "|---|---|" + "---|" * len(scales),
    ]
    for variant, dataset in keys:
        row = []
        for s in scales:
            c = by[(variant, dataset, s)]
            row.append(f"{-c.loss_db:+.3f} / {c.psnr_vs_fp32:.1f} / {c.min_psnr_vs_fp32:.1f}")
        lines.append(f"| {variant} | {dataset} | " + " | ".join(row) + " |")
    lines.append("")
    for variant in dict.fromkeys(c.variant for c in cells):
        mine = [c for c in cells if c.variant == variant]
        worst = max(mine, key=lambda c: c.loss_db)
        low = min(mine, key=lambda c: c.psnr_vs_fp32)
        low_img = min(mine, key=lambda c: c.min_psnr_vs_fp32)
        lines.append(
            f"- {variant}: worst cell {worst.dataset} x{worst.scale:g}, {-worst.loss_db:+.3f} dB "
            f"({worst.psnr:.2f} vs FP32 {worst.psnr_fp32:.2f}); lowest cell against the FP32 output "
            f"{low.psnr_vs_fp32:.1f} dB ({low.dataset} x{low.scale:g}), lowest image {low_img.min_psnr_vs_fp32:.1f} dB "
            f"({low_img.dataset} x{low_img.scale:g})"
        )
    return "\n".join(lines)
