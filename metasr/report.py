"""Evaluation reports: the paper's Table 1 (every scale on one set) and Table 3 (x2/x3/x4 per set),
as Markdown, JSON and CSV, and a PSNR-against-scale plot."""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from metasr.evaluate import Score

__all__ = ["mean_table", "table1_markdown", "table3_markdown", "write_reports"]


def mean_table(scores: Sequence[Score]) -> dict[tuple[str, str, float], tuple[float, float | None]]:
    """Mean (PSNR, SSIM) per (dataset, method, scale); the dataset is taken from ``Score.image`` prefix."""
    groups: dict[tuple[str, str, float], list[Score]] = defaultdict(list)
    for s in scores:
        dataset = s.image.split("/", 1)[0] if "/" in s.image else ""
        groups[(dataset, s.method, s.scale)].append(s)
    out = {}
    for key, rows in groups.items():
        ssims = [r.ssim for r in rows if r.ssim is not None]
        out[key] = (float(np.mean([r.psnr for r in rows])), float(np.mean(ssims)) if ssims else None)
    return out


def table1_markdown(scores: Sequence[Score], dataset: str) -> str:
    """Rows: methods; columns: scales; cells: mean Y-PSNR (dB)."""
    means = mean_table(scores)
    scales = sorted({k[2] for k in means if k[0] == dataset})
    methods = sorted({k[1] for k in means if k[0] == dataset}, key=lambda m: (m != "bicubic", m))
    lines = ["| method | " + " | ".join(f"x{s:g}" for s in scales) + " |", "|---|" + "---|" * len(scales)]
    for m in methods:
        cells = [f"{means[(dataset, m, s)][0]:.2f}" if (dataset, m, s) in means else "-" for s in scales]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def table3_markdown(scores: Sequence[Score]) -> str:
    """Rows: (dataset, scale); columns: methods; cells: PSNR / SSIM."""
    means = mean_table(scores)
    methods = sorted({k[1] for k in means}, key=lambda m: (m != "bicubic", m))
    lines = ["| set | scale | " + " | ".join(methods) + " |", "|---|---|" + "---|" * len(methods)]
    for dataset, scale in sorted({(k[0], k[2]) for k in means}):
        cells = []
        for m in methods:
            psnr, ssim = means.get((dataset, m, scale), (float("nan"), None))
            cells.append(f"{psnr:.2f} / {ssim:.4f}" if ssim is not None else f"{psnr:.2f}")
        lines.append(f"| {dataset} | x{scale:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _plot(scores: Sequence[Score], dataset: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    means = mean_table(scores)
    fig, ax = plt.subplots(figsize=(7, 4))
    for method in sorted({k[1] for k in means if k[0] == dataset}):
        pts = sorted((k[2], v[0]) for k, v in means.items() if k[0] == dataset and k[1] == method)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, label=method)
    ax.set_xlabel("scale")
    ax.set_ylabel("Y-PSNR (dB)")
    ax.set_title(f"{dataset}: PSNR against scale")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_reports(scores: Sequence[Score], out_dir: Path, layout: str, title: str) -> list[Path]:
    """Write ``report.md``, ``report.json``, ``report.csv`` (and ``psnr_vs_scale.png`` for Table 1)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    datasets = sorted({s.image.split("/", 1)[0] for s in scores})
    if layout == "table1":
        body = "\n\n".join(f"### {d}\n\n{table1_markdown(scores, d)}" for d in datasets)
    else:
        body = table3_markdown(scores)
    written = [out_dir / "report.md", out_dir / "report.json", out_dir / "report.csv"]
    written[0].write_text(
        f"# {title}\n\nY-PSNR (dB){' / SSIM' if layout == 'table3' else ''}, "
        f"shave ceil(r), output clamped and rounded.\n\n{body}\n"
    )
    means = mean_table(scores)
    written[1].write_text(
        json.dumps(
            {
                "title": title,
                "layout": layout,
                "means": [
                    dict(dataset=k[0], method=k[1], scale=k[2], psnr=v[0], ssim=v[1]) for k, v in sorted(means.items())
                ],
                "images": [s.__dict__ for s in scores],
            },
            indent=2,
        )
    )
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["image", "scale", "method", "psnr", "ssim"])
    for s in scores:
        writer.writerow([s.image, s.scale, s.method, f"{s.psnr:.6f}", "" if s.ssim is None else f"{s.ssim:.6f}"])
    written[2].write_text(buf.getvalue())
    if layout == "table1":
        for d in datasets:
            png = out_dir / f"psnr_vs_scale_{d}.png"
            _plot(scores, d, png)
            written.append(png)
    return written
