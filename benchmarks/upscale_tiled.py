"""The runtime's tiled upscale stage with the plan's filter table computed once, against the graph as one session
(the weight predictor in every call), interleaved in one run.

Two ``Pipeline``s on the same artifacts (``--artifacts``, default: the bundled model exported by this checkout),
``backend="ort"``: one as the runtime opens it (``OrtBackend.filters``: the predictor in its own session, its
table cached per plan, and the tiles fed the plan's whole table where it fits, ``tiling.full_table_fits``), one
with ``METASR_ORT_FILTER_CACHE=0``. Each times ``Pipeline.upscale`` of the same random C x h x w features
(the stage's work does not depend on their values) at each scale, alternately, ``--repeats`` times: minima of the
process's CPU time (ONNX Runtime's threads do not spin: the runtime's sessions), and prints the ratio, the tiles,
the predictor runs per upscale and the largest difference between the two outputs.

    python benchmarks/upscale_tiled.py [--sizes 1000x1500 3000x4000] [--scales 1.7 2.35 3.3 3.9 4]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from metasr.runtime.pipeline import Pipeline
from metasr.runtime.predictor_split import ENV

from metasr.measure import cpu_summary


def _pipelines(art: Path, threads: int) -> tuple[Pipeline, Pipeline]:
    cached = Pipeline(art, backend="ort", threads=threads)
    os.environ[ENV] = "0"
    try:
        plain = Pipeline(art, backend="ort", threads=threads)
    finally:
        del os.environ[ENV]
    assert cached._upscale.filters is not None and plain._upscale.filters is None
    return cached, plain


def run(args: argparse.Namespace, art: Path) -> None:
    cached, plain = _pipelines(art, args.threads)
    print(f"{cpu_summary()}; ONNX Runtime {ort.__version__}, {args.threads} threads, min process CPU time of "
          f"{args.repeats} interleaved repeats; budget {cached.upscale_budget_mb:g} MiB")  # fmt: skip
    head = ("features", "scale", "tiles", "whole table", "predictor runs", "per call (s)", "cached (s)",
            "speed-up", "max |diff|")  # fmt: skip
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    rng = np.random.default_rng(0)
    for size in args.sizes:
        h, w = (int(v) for v in size.split("x"))
        feats = rng.standard_normal((1, cached.channels, h, w)).astype(np.float32)
        for scale in args.scales:
            filters = cached._upscale.filters
            filters.clear()
            times: dict[str, list[float]] = {"cached": [], "plain": []}
            outs = {}
            runs = filters.misses
            for _ in range(args.repeats):
                for name, p in (("cached", cached), ("plain", plain)):
                    t0 = time.process_time()
                    outs[name] = p.upscale(feats, scale)
                    times[name].append(time.process_time() - t0)
                filters.clear()  # every repeat starts without the table, as a new plan does
            runs = (filters.misses - runs) / args.repeats
            _, _, tiles, compact = cached._plan(h, w, scale, cached._budget(None))
            best = {k: min(v) for k, v in times.items()}
            diff = float(np.abs(outs["cached"] - outs["plain"]).max())
            print(f"| {h}x{w} | x{scale:g} | {len(tiles)} | {'no' if compact else 'yes'} | {runs:g} | "
                  f"{best['plain']:.2f} | {best['cached']:.2f} | {best['plain'] / best['cached']:.2f}x | "
                  f"{diff:.1e} |", flush=True)  # fmt: skip
            del outs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--artifacts", type=Path, help="default: export the bundled model")
    ap.add_argument("--sizes", nargs="+", default=["1000x1500"], help="feature maps h x w")
    ap.add_argument("--scales", type=float, nargs="+", default=[1.7, 2.35, 3.3, 3.9, 4.0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    if args.artifacts is not None:
        return run(args, args.artifacts)
    with tempfile.TemporaryDirectory() as tmp:
        from metasr.export import export_onnx

        from metasr.bundled import bundled_model_path
        from metasr.checkpoint import load_model

        art = Path(tmp) / "art"
        export_onnx(load_model(bundled_model_path()), art, verify=False)
        run(args, art)


if __name__ == "__main__":
    sys.exit(main())
