"""Cost of computing the plan in the graph: the portable graphs against the two-graph runtime, interleaved.

    python benchmarks/portable_cost.py --artifacts DIR [--sizes 120x80,320x180,640x360] [--scales 2 3.3]
        [--repeats 9] [--threads N]

Per LR size (WxH) and scale, each repeat times every variant once, in turn (medians, and ratios to the
two-graph runtime):

- **image**: ``metasr.portable.onnx`` (uint8 image and scale in, uint8 out: one call) against
  :class:`~metasr.runtime.pipeline.Pipeline` on the same uint8 image (feature graph, plan in Python, upscale
  graph, clamp and round), its plan computed anew each call (a new scale, as in a zoom) and cached;
- **upscale**: ``upscale.portable.onnx`` on the features against the two-graph upscale stage
  (``Pipeline.upscale``), plan computed anew and cached.

Prints the CPU and the load average: the figures are only comparable within one run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from metasr.runtime.pipeline import Pipeline

from metasr.cli.common import parse_pair
from metasr.measure import cpu_summary


def _time(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _bench(variants: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    for fn in variants.values():  # warm-up: first-call allocations, shape-specific kernels
        fn()
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            times[name].append(_time(fn))
    return {k: statistics.median(v) for k, v in times.items()}


def _case(two: Pipeline, portable: Pipeline, img: np.ndarray, feats: np.ndarray, scale: float, repeats: int):
    """[("image", medians), ("upscale", medians)] for one LR image and scale."""

    def fresh(fn: Callable[[], object]) -> Callable[[], object]:
        def call() -> object:
            two._plan.cache_clear()  # the plan computed anew, as for a new scale
            return fn()

        return call

    image = _bench({
        "two-graph (plan computed)": fresh(lambda: two(img, scale)),
        "two-graph (plan cached)": lambda: two(img, scale),
        "metasr.portable.onnx": lambda: portable(img, scale),
    }, repeats)  # fmt: skip
    up = _bench({
        "two-graph (plan computed)": fresh(lambda: two.upscale(feats, scale)),
        "two-graph (plan cached)": lambda: two.upscale(feats, scale),
        "upscale.portable.onnx": lambda: portable.upscale(feats, scale),
    }, repeats)  # fmt: skip
    return [("image", image), ("upscale", up)]


def run(art: Path, sizes: list[tuple[int, int]], scales: list[float], repeats: int, threads: int) -> None:
    load = os.getloadavg()[0]
    print(f"cpu: {cpu_summary()}; load average {load:.2f}; repeats {repeats}, threads {threads or 'default'}")
    with Pipeline(art, threads=threads) as two, Pipeline(art, threads=threads, graph="portable") as portable:
        for w, h in sizes:
            img = (np.random.default_rng(0).random((h, w, 3)) * 255).astype(np.uint8)
            feats = two.encode(img)
            for scale in scales:
                for stage, t in _case(two, portable, img, feats, scale, repeats):
                    base = t["two-graph (plan computed)"]
                    cells = ", ".join(f"{k} {v * 1e3:.1f} ms ({v / base:.2f}x)" for k, v in t.items())
                    print(f"LR {w}x{h} x{scale:g} {stage}: {cells}", flush=True)
    print(f"load average after: {os.getloadavg()[0]:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--artifacts", required=True, type=Path)
    ap.add_argument("--sizes", default="120x80,320x180,640x360", help="LR sizes WxH, comma-separated")
    ap.add_argument("--scales", nargs="+", type=float, default=[2.0, 3.3])
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    sizes = [parse_pair(s, "--sizes", "120x80") for s in args.sizes.split(",")]
    run(args.artifacts, sizes, args.scales, args.repeats, args.threads)


if __name__ == "__main__":
    main()
