"""Peak memory of the ONNX Runtime (or OpenVINO) upscale graph for one output tile, against the runtime's estimate.

One output tile (default 256x256) fed the way the Pipeline feeds it (only its feature window, sources shifted
into it: ``metasr.runtime.tiling.window_feeds``) from C features (EDSR-baseline-sized upscale graph, random
weights), CPU provider. Peak = Linux VmHWM minus VmRSS just before the call, in a fresh process per case
(session created and warmed on a tiny input first, so the number is the call's working memory, arena growth
included). Beside it: which path the ``MetaUpscale`` body takes, ``tile_bytes`` (the estimate the Pipeline sizes its
tiles with) and their ratio (the estimate must not be below the measurement), and the per-pixel weight tensor the
official code would build. ``tests/test_runtime.py`` (and ``tests/test_openvino.py``, ``--backend openvino``: the
graph as that backend compiles it, the grouped path alone) run the child mode and check the bounds.

    python benchmarks/ort_upscale_memory.py [--tile 256] [--scales 1.1 2 3.3 4] [--preset edsr-baseline]
                                            [--backend ort|openvino]
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from metasr.export.upscale_graph import build_upscale_graph
from metasr.runtime.backends import GROUPED_ONLY_BACKENDS, _session_options
from metasr.runtime.feeds import conv_path, plan_feeds
from metasr.runtime.ort_cpu import specialize
from metasr.runtime.projection import project
from metasr.runtime.tiling import UpscaleTile, source_window, tile_bytes, window_feeds

from metasr.config import preset
from metasr.measure import reset_peak_rss, status_kib
from metasr.model import MetaSR


class _OpenVino:
    """The upscale graph as ``--backend openvino`` compiles it (functions inlined, the grouped path alone)."""

    def __init__(self, data: bytes) -> None:
        import openvino as ov
        from metasr.runtime.openvino_backend import DEFAULT_PROPERTIES, INFERENCE_PRECISION, inline_functions

        core = ov.Core()
        config = {"INFERENCE_PRECISION_HINT": INFERENCE_PRECISION, **DEFAULT_PROPERTIES}
        self.compiled = core.compile_model(core.read_model(inline_functions(data)), "CPU", config)

    def run(self, _: object, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return [self.compiled(feeds)[0]]


def measure(tile: int, scale: float, preset_name: str, backend: str = "ort") -> dict[str, float]:
    """In this process: peak extra MiB of one tile and the runtime's estimate for it (``backend`` ort or
    openvino: the estimate as the Pipeline makes it for that backend)."""
    model = MetaSR(preset(preset_name)).eval()
    c = model.config.features
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "upscale.onnx"
        onnx.save(build_upscale_graph(model), str(path))
        opts = _session_options(0)  # the runtime's options (no memory pattern: runtime/backends.py)
        # as the ort backend loads it (runtime/ort_cpu.py: the NCHWc variant where it exists; METASR_ORT_NCHWC=0 not)
        sess = ort.InferenceSession(specialize(path.read_bytes(), "fp32")[0], opts, providers=["CPUExecutionProvider"])
        if backend == "openvino":
            sess = _OpenVino(path.read_bytes())
    rng = np.random.default_rng(0)
    warm = project(8, 8, scale)
    sess.run(None, {"features": rng.standard_normal((1, c, 8, 8), dtype=np.float32), **plan_feeds(warm)})
    h = math.ceil(tile / scale) + 6  # a tile from inside a larger image: context rows/columns exist
    plan = project(h, h, scale)
    feeds = plan_feeds(plan)
    s = feeds["row_groups"].shape[2]  # a tile starting at the first output of a row on the plan's block grid
    first = int(np.flatnonzero(plan.rows.src == 2 * s)[0])
    rows = slice(first, first + tile)
    t = UpscaleTile(rows, rows, source_window(plan.rows.src[rows], h, s), source_window(plan.cols.src[rows], h, s))
    tf = window_feeds(feeds, t)
    window = rng.standard_normal((1, c, t.in_rows.stop - t.in_rows.start, t.in_cols.stop - t.in_cols.start))
    window = window.astype(np.float32)
    estimate = tile_bytes(tf, c, *window.shape[2:], grouped=backend in GROUPED_ONLY_BACKENDS) / 2**20
    base = reset_peak_rss()
    window = window.copy()  # the runtime's copy of the tile's window (``tile_bytes`` counts it)
    out = sess.run(None, {"features": window, **tf})[0]
    peak = (status_kib("VmHWM") - base) / 1024
    per_pixel = out.shape[2] * out.shape[3] * c * 27 * 4 / 2**20
    path = "grouped" if backend in GROUPED_ONLY_BACKENDS or not conv_path(tf) else "conv"
    return dict(scale=scale, c=c, path=path, peak_mib=peak, estimate_mib=estimate, per_pixel_mib=per_pixel)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tile", type=int, default=256)
    ap.add_argument("--scales", type=float, nargs="+", default=[1.1, 2.0, 3.3, 4.0])
    ap.add_argument("--preset", default="edsr-baseline")
    ap.add_argument("--backend", choices=("ort", "openvino"), default="ort")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(measure(args.tile, args.scales[0], args.preset, args.backend)))
        return
    what = f"{args.backend} (ORT {ort.__version__})"
    print(f"{what} CPU, upscale graph of preset {args.preset}, one {args.tile}x{args.tile} output tile")
    head = "scale | C | body path | measured peak MiB | estimate (tile_bytes) MiB | estimate / measured"
    head += " | per-pixel weights MiB"
    print(f"| {head} |")
    print("|---|---|---|---|---|---|---|")
    for s in args.scales:
        cmd = [
            sys.executable,
            __file__,
            "--child",
            "--tile",
            str(args.tile),
            "--scales",
            str(s),
            "--preset",
            args.preset,
            "--backend",
            args.backend,
        ]
        r = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
        print(
            f"| x{s:g} | {r['c']} | {r['path']} | {r['peak_mib']:.1f} | {r['estimate_mib']:.1f} | "
            f"{r['estimate_mib'] / max(r['peak_mib'], 1e-3):.2f} | {r['per_pixel_mib']:.0f} |"
        )


if __name__ == "__main__":
    main()
