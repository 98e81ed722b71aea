"""The upscale stage's peak memory over a whole tiled run against what the tiler planned.

``tiling.tile_bytes`` bounds one call (``benchmarks/ort_upscale_memory.py`` measures that); a plan is many calls
of varying shapes, and what ONNX Runtime keeps between them (its arena, its memory patterns) adds up across
them. This runs ``Pipeline.upscale_bands`` of random features in a fresh process per case and reports the peak
resident memory above the process's size just before it (Linux VmHWM, reset with /proc/self/clear_refs), beside
the bound the memory plan (``runtime/memory.py``) counts for it: the planned largest tile
(``Pipeline.upscale_cost``), the largest output band (float32 RGB) and ``RUNTIME_OVERHEAD`` (what ONNX Runtime
allocates on its first runs beyond the tensors; the Pipeline is fresh here).

    python benchmarks/upscale_plan_memory.py --artifacts ART --cases 2.3:600x900:512 2.357:200x300:64

A case is ``SCALE:HxW:BUDGET_MB`` (features h x w, ``upscale_budget_mb``). ``--child`` prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import numpy as np

from metasr.measure import plan_case


def measure(artifacts: str, scale: float, h: int, w: int, budget_mb: float) -> dict[str, float]:
    """In this process: the plan and the peak MiB of one ``upscale_bands`` run over the resident size before."""
    from metasr.runtime.memory import RUNTIME_OVERHEAD
    from metasr.runtime.pipeline import Pipeline

    from metasr.measure import reset_peak_rss, status_kib

    p = Pipeline(artifacts, backend="ort", upscale_budget_mb=budget_mb)
    features = np.random.default_rng(0).standard_normal((1, p.channels, h, w), dtype=np.float32)
    cost = p.upscale_cost(h, w, scale)
    tiles = p.tiles(h, w, scale)
    band = 0
    base = reset_peak_rss()
    t0 = time.process_time()
    for _, out in p.upscale_bands(features, scale):
        band = max(band, out.nbytes)
        del out
    cpu = time.process_time() - t0
    peak = (status_kib("VmHWM") - base) / 1024
    return dict(
        scale=scale,
        h=h,
        w=w,
        budget_mib=budget_mb,
        tiles=len(tiles),
        planned_tile_mib=cost.tile_bytes / 2**20,
        band_mib=band / 2**20,
        peak_mib=peak,
        runtime_mib=RUNTIME_OVERHEAD / 2**20,
        cpu_s=cpu,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--artifacts", required=True, help="metasr export-onnx output")
    cases = [plan_case(c) for c in ("2.3:600x900:512", "3.3:600x900:512")]
    ap.add_argument("--cases", nargs="+", type=plan_case, default=cases, help="SCALE:HxW:BUDGET_MB ...")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(measure(args.artifacts, *args.cases[0])))
        return
    import onnxruntime as ort

    from metasr.measure import cpu_summary

    print(f"{cpu_summary()}; ONNX Runtime {ort.__version__}; Pipeline.upscale_bands, ort backend")
    print("| scale | features | budget MiB | tiles | planned tile MiB | largest band MiB | peak MiB "
          "| peak / (tile + band + runtime) | CPU s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for scale, h, w, budget in args.cases:
        case = f"{scale}:{h}x{w}:{budget}"
        cmd = [sys.executable, __file__, "--child", "--artifacts", args.artifacts, "--cases", case]
        r = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
        bound = r["planned_tile_mib"] + r["band_mib"] + r["runtime_mib"]
        print(
            f"| x{scale:g} | {h}x{w} | {budget:g} | {r['tiles']} | {r['planned_tile_mib']:.0f} | {r['band_mib']:.1f} | "
            f"{r['peak_mib']:.0f} | {r['peak_mib'] / bound:.2f} | {r['cpu_s']:.2f} |"
        )


if __name__ == "__main__":
    main()
