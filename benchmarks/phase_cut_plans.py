"""The tiler's phase cuts: the plain plan, the cut plan and the cost model's choice, side by side in one process.

Where the backend has the phase path, ``plan_upscale_tiles`` may cut long axes where the float32 drift of the
offsets would take a call off it; where that adds calls, ``runtime/tile_cost.py`` decides. This times
``Pipeline.upscale`` of random features with each plan (process CPU time, minimum over interleaved repeats, the
filter table computed once per plan as the Pipeline does) and says which the model took:

    python benchmarks/phase_cut_plans.py --artifacts ART --cases 3.3:1000x1500:64 3.9:1000x1500:128

A case is ``SCALE:HxW:BUDGET_MB`` (features h x w, ``upscale_budget_mb``).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from metasr.measure import plan_case


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--artifacts", required=True, help="metasr export-onnx output")
    cases = [plan_case(c) for c in ("3.3:1000x1500:64", "3.9:1000x1500:128")]
    ap.add_argument("--cases", nargs="+", type=plan_case, default=cases, help="SCALE:HxW:BUDGET_MB ...")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import onnxruntime as ort
    from metasr.runtime import tiling
    from metasr.runtime.pipeline import Pipeline

    from metasr.measure import cpu_summary

    print(f"{cpu_summary()}; ONNX Runtime {ort.__version__}, {args.threads} threads; Pipeline.upscale, "
          f"minimum process CPU time of {args.repeats} interleaved runs")  # fmt: skip
    print("| scale | features | budget MiB | plain: tiles, s | cut: tiles, s | the model takes | its s |")
    print("|---|---|---|---|---|---|---|")
    cuts, cost = tiling.phase_cuts, tiling._plan_seconds
    modes = {
        "plain": (lambda *_: [], cost),  # no cut points: the plain plan
        "cut": (cuts, lambda feeds, tiles, *_: -len(tiles)),  # the cut plan always priced lower
        "model": (cuts, cost),
    }
    try:
        for scale, h, w, budget in args.cases:
            p = Pipeline(args.artifacts, backend="ort", upscale_budget_mb=budget, threads=args.threads)
            features = np.random.default_rng(0).standard_normal((1, p.channels, h, w), dtype=np.float32)
            tiles: dict[str, int] = {}
            best: dict[str, float] = {}
            for _ in range(args.repeats):
                for name, (cut_points, seconds) in modes.items():
                    tiling.phase_cuts, tiling._plan_seconds = cut_points, seconds
                    p._plan.cache_clear()
                    tiles[name] = len(p.tiles(h, w, scale))
                    t0 = time.process_time()
                    p.upscale(features, scale)
                    best[name] = min(best.get(name, np.inf), time.process_time() - t0)
            tiling.phase_cuts, tiling._plan_seconds = cuts, cost
            took = "cut" if tiles["model"] == tiles["cut"] != tiles["plain"] else "plain"
            if tiles["cut"] == tiles["plain"]:
                took = "either (same tiles)"
            print(f"| x{scale:g} | {h}x{w} | {budget:g} | {tiles['plain']}, {best['plain']:.2f} | "
                  f"{tiles['cut']}, {best['cut']:.2f} | {took} | {best['model']:.2f} |")  # fmt: skip
    finally:
        tiling.phase_cuts, tiling._plan_seconds = cuts, cost


if __name__ == "__main__":
    main()
