"""Peak memory of the ONNX Runtime upscale graph (the MetaUpscale standard-op body) for one output tile.

Default: one 256x256 output tile at x4 from C = 64 features (EDSR-baseline-sized upscale graph, random
weights), CPU provider. Peak = Linux VmHWM minus VmRSS just before the call, in this fresh process (session
created and warmed on a tiny input first, so the number is the call's working memory, arena growth included).
For scale, the per-pixel weight tensor the official code would build for the same tile is printed beside it.

    python benchmarks/ort_upscale_memory.py [--tile 256] [--scale 4.0] [--preset edsr-baseline]
"""

from __future__ import annotations

import argparse
import math
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from metasr.export.upscale_graph import build_upscale_graph
from metasr.runtime.feeds import plan_feeds, tile_feeds
from metasr.runtime.projection import project

from metasr.config import preset
from metasr.measure import reset_peak_rss, status_kib
from metasr.model import MetaSR


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tile", type=int, default=256)
    ap.add_argument("--scale", type=float, default=4.0)
    ap.add_argument("--preset", default="edsr-baseline")
    args = ap.parse_args()
    model = MetaSR(preset(args.preset)).eval()
    c = model.config.features
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "upscale.onnx"
        onnx.save(build_upscale_graph(model), str(path))
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    warm = project(8, 8, args.scale)
    sess.run(None, {"features": rng.standard_normal((1, c, 8, 8), dtype=np.float32), **plan_feeds(warm)})
    h = math.ceil(args.tile / args.scale)
    plan = project(h, h, args.scale)
    feeds = {"features": rng.standard_normal((1, c, h, h), dtype=np.float32), **plan_feeds(plan)}
    tile = tile_feeds(feeds, slice(0, args.tile), slice(0, args.tile))
    base = reset_peak_rss()
    out = sess.run(None, tile)[0]
    peak = (status_kib("VmHWM") - base) / 1024
    per_pixel = out.shape[2] * out.shape[3] * c * 27 * 4 / 2**20
    print(
        f"ORT {ort.__version__} CPU: upscale graph, C={c}, x{args.scale:g}, output tile {out.shape[3]}x{out.shape[2]} "
        f"from {h}x{h} features: peak extra memory {peak:.1f} MiB "
        f"(a per-pixel weight tensor alone would be {per_pixel:.0f} MiB)"
    )


if __name__ == "__main__":
    main()
