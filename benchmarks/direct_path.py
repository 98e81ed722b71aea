"""The upscale stage's direct convolution path against the body's graph, side by side in one process.

Two ort backends of the same upscale graph, one with ``METASR_ORT_DIRECT=0`` (every call runs the NCHWc variant
of the ``MetaUpscale`` body: its ~220 plan-logic nodes, then the convolution) and one with it on
(:mod:`metasr.runtime.ort_direct`: the plan logic in numpy, five nodes), each call after a feature-graph call as
in a real run (the bundled model's features of a held-out crop, Set14 barbara). Per case, interleaved repeats of:
"first" (the filter table recomputed: a call at a new scale, as ``benchmarks/upscale_floor.py`` counts it; on
pipelines of their own) and "cached" (the table held: a tile after the first, or the same scale again in a
zoom), and ``Pipeline.upscale``
of the whole case as ``metasr upscale`` runs it (tiles under ``--budget-mb``). Minimum process CPU time;
ONNX Runtime's threads do not spin (the runtime's setting). Outputs are compared (bit for bit).

    python benchmarks/direct_path.py --artifacts ART [--scales 1.5 2 3 4] [--sizes 256x256 320x480]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from metasr.measure import cpu_summary


def _size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"a size is HxW, e.g. 256x256, got {text!r}") from None
    if not (16 <= h <= 4096 and 16 <= w <= 4096):
        raise argparse.ArgumentTypeError(f"a size's sides must lie in [16, 4096], got {text!r}")
    return h, w


def _crop(h: int, w: int) -> np.ndarray:
    from PIL import Image

    data = Path(os.environ.get("METASR_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
    img = np.asarray(Image.open(data / "Set14" / "barbara.png").convert("RGB"), dtype=np.float32)
    if img.shape[0] < h + 40 or img.shape[1] < w + 60:
        raise SystemExit(f"error: {h}x{w} does not fit in the held-out crop (barbara is {img.shape[0]}x{img.shape[1]})")
    return np.ascontiguousarray(img[40 : 40 + h, 60 : 60 + w].transpose(2, 0, 1))[None]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--artifacts", required=True, type=Path, help="metasr export-onnx output")
    ap.add_argument("--scales", type=float, nargs="+", default=[1.5, 2.0, 2.5, 3.0, 4.0])
    ap.add_argument("--sizes", type=_size, nargs="+", default=[(256, 256), (320, 480)])
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--budget-mb", type=float, default=512.0, help="the upscale budget of the Pipeline column")
    args = ap.parse_args()
    if not 1 <= args.repeats <= 1000 or not 1 <= args.threads <= 256:
        raise SystemExit("error: --repeats must lie in [1, 1000] and --threads in [1, 256]")

    import onnxruntime as ort
    from metasr.runtime.feeds import plan_feeds
    from metasr.runtime.pipeline import Pipeline
    from metasr.runtime.projection import project

    pipes = {}  # first calls on pipelines of their own: a plan's table recomputed is a new plan to the other
    for env in ("0", "1"):
        os.environ["METASR_ORT_DIRECT"] = env
        for role in ("first", "cached"):
            pipes[env, role] = Pipeline(args.artifacts, threads=args.threads, upscale_budget_mb=args.budget_mb)
    os.environ.pop("METASR_ORT_DIRECT")
    graph, direct = pipes["0", "cached"], pipes["1", "cached"]
    if direct._upscale.direct is None:
        raise SystemExit(f"error: no direct path here ({direct._upscale.body}; {direct._upscale.filters_note})")
    print(f"{cpu_summary()}; ONNX Runtime {ort.__version__}, {args.threads} threads, minimum process CPU time "
          f"of {args.repeats} interleaved repeats, each call after a feature-graph call")  # fmt: skip
    print("| features | scale | output | first: graph ms | first: direct ms | ratio | cached: graph ms | "
          "cached: direct ms | ratio | Pipeline.upscale: graph ms | direct ms | ratio | bit-identical |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for h, w in args.sizes:
        lr = _crop(h, w)
        feature = graph._feature
        features = feature.infer({"lr": lr})["features"]
        for scale in args.scales:
            feeds = {"features": features, **plan_feeds(project(h, w, scale))}

            def first(p: Pipeline, feeds: dict = feeds) -> np.ndarray:
                p._upscale.filters.clear()
                return p._upscale.infer(feeds)["sr"]

            calls = {
                "first graph": lambda: first(pipes["0", "first"]),
                "first direct": lambda: first(pipes["1", "first"]),
                "cached graph": lambda feeds=feeds: graph._upscale.infer(feeds)["sr"],
                "cached direct": lambda feeds=feeds: direct._upscale.infer(feeds)["sr"],
                "pipe graph": lambda s=scale, f=features: graph.upscale(f, s),
                "pipe direct": lambda s=scale, f=features: direct.upscale(f, s),
            }
            taken = sum(direct._upscale.direct.taken.values())
            outs = {k: f() for k, f in calls.items()}
            outs["cached direct"] = calls["cached direct"]()  # (a plan's first call runs the graph on the phase path)
            on_path = sum(direct._upscale.direct.taken.values()) > taken
            same = all(np.array_equal(outs[f"{k} graph"], outs[f"{k} direct"]) for k in ("first", "cached", "pipe"))
            best = dict.fromkeys(calls, np.inf)
            for _ in range(args.repeats):
                for k, f in calls.items():
                    feature.infer({"lr": lr})  # the caches as a real run leaves them
                    t0 = time.process_time()
                    f()
                    best[k] = min(best[k], time.process_time() - t0)
            ms = {k: v * 1e3 for k, v in best.items()}
            cells = []
            for k in ("first", "cached", "pipe"):
                g, d = ms[f"{k} graph"], ms[f"{k} direct"]
                cells.append(f"{g:.2f} | {d:.2f} | {d / g:.2f}")
            out = outs["first graph"].shape
            note = "yes" if same else "NO"
            print(f"| {h}x{w} | x{scale:g} | {out[2]}x{out[3]} | {' | '.join(cells)} | "
                  f"{note if on_path else 'off the direct path'} |")  # fmt: skip
    for p in pipes.values():
        p.close()


if __name__ == "__main__":
    main()
