"""``metasr upscale``: image files through the ONNX artifacts (no PyTorch needed).

``--engine local`` (default) runs the jobs in this process; ``--engine ray`` runs the same checked jobs as a
Ray Data pipeline (:mod:`metasr.runtime.ray_batch`, the ``serve`` extra): embedded local Ray, or the cluster at
``--address``; outputs already complete are skipped (a resumed run).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from metasr.cli.common import SCALE, THREADS, CLIError, float_range, int_range, pair
from metasr.limits import MAX_IMAGE_PIXELS, MAX_SIDE

__all__ = ["register"]

# the upscale stage's largest tile: 1 MiB (tiles shrink to their minimum) .. 1 TiB, within --memory-mb
BUDGET_MB = float_range(1.0, 2.0**20)


def cmd_upscale(args: argparse.Namespace) -> int:
    from metasr.progress import Progress
    from metasr.runtime.batch import Timings, UpscaleOptions, check_jobs, plan_jobs, run_job
    from metasr.runtime.pipeline import Pipeline

    opts = UpscaleOptions(
        scale=args.scale,
        size=args.size,
        max_pixels=args.max_pixels,
        memory_mb=args.memory_mb,
        upscale_budget_mb=args.upscale_budget_mb,
        feature_tile=args.feature_tile,
        png_compress=args.png_compress,
    )
    if args.engine == "ray":
        from metasr.runtime.ray_env import require_ray

        require_ray()  # missing: one line naming the serve extra, before any work
    elif args.address or args.workers:
        raise CLIError("--address and --workers need --engine ray")
    jobs = plan_jobs(args.inputs, args.output, force=args.force)  # every output checked before any work
    if args.artifacts:
        artifacts = Path(args.artifacts)
    else:
        from metasr.artifacts import default_artifacts

        artifacts = default_artifacts()
    with Pipeline(
        artifacts,
        args.backend,
        threads=args.threads,
        feature_tile=args.feature_tile,
        precision=args.precision,
        graph=args.graph,
    ) as pipeline:
        # every input is checked (headers, memory plans, then a full decode in batches) before any output
        checked = check_jobs(jobs, pipeline, opts, decode=len(jobs) > 1)
        for note in (n for c in checked for n in c.notes):
            print(f"metasr: note: {note}", file=sys.stderr)
        if args.engine == "ray":
            return _run_on_ray(args, artifacts, checked, opts)
        bar = Progress(checked, "upscale", unit="image", enabled=len(jobs) > 1)  # on a terminal only
        for c in bar:
            timings = Timings()
            t0 = time.perf_counter()
            w, h = run_job(pipeline, c, opts, timings)
            bar.write(f"{c.job.target} ({w}x{h})")
            if args.timings:  # encode runs beside upscale, so the stages add up to more than the wall time
                wall = time.perf_counter() - t0
                bar.write(f"  timings: {timings}; wall {wall:.2f} s")
                bar.write(f"  memory: {timings.memory.describe()}")
    return 0


def _run_on_ray(args: argparse.Namespace, artifacts: Path, checked: list, opts) -> int:
    from metasr.progress import Progress
    from metasr.runtime.ray_batch import RayJobConfig, run_ray_jobs, split_complete

    todo, done = split_complete(checked, opts)
    if done:
        print(f"metasr: {len(done)} of {len(checked)} outputs already complete: skipped", file=sys.stderr)
    config = RayJobConfig(
        str(artifacts.resolve()), args.backend, args.precision, args.workers, 1.0, args.address, args.graph
    )
    results = run_ray_jobs(todo, config, opts)
    bar = Progress(results, "upscale", unit="image", total=len(checked), initial=len(done), enabled=len(todo) > 1)
    for r in bar:
        bar.write(f"{r.target} ({r.size[0]}x{r.size[1]})")
        if args.timings:
            bar.write(f"  {r.seconds:.2f} s in worker pid {r.pid}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("upscale", help="upscale image files with the ONNX artifacts (no PyTorch needed)")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders of images")
    p.add_argument("-o", "--output", required=True, help="output file (one input) or folder")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--scale", type=SCALE, help="scale factor r: output int(r*h) x int(r*w)")
    target.add_argument(
        "--size",
        type=pair("--size", "1920x1080 (WxH)"),
        metavar="WxH",
        help="exact output size: the smallest scale covering it, centre-cropped (no crop when the aspect ratios agree)",
    )
    p.add_argument("--artifacts", help="artifact directory (default: the bundled model, exported once)")
    p.add_argument(
        "--backend", default="ort", help="ort (CPU), ort-cuda, trt (engines from metasr build-engine) or openvino (CPU)"
    )
    p.add_argument("--threads", type=THREADS, default=0, help="runtime threads per graph (0: the runtime's default)")
    p.add_argument(
        "--max-pixels",
        type=int_range(1, MAX_IMAGE_PIXELS),
        default=100_000_000,
        help="refuse larger inputs or outputs (checked from the header)",
    )
    p.add_argument(
        "--upscale-budget-mb",
        type=BUDGET_MB,
        default=None,
        help="largest upscale tile (MiB, default 512), within --memory-mb",
    )
    p.add_argument(
        "--feature-tile",
        type=int_range(1, MAX_SIDE),
        default=512,
        help="largest feature stage tile side (LR pixels), within --memory-mb",
    )
    p.add_argument(
        "--png-compress", type=int_range(0, 9), default=1, metavar="0-9", help="PNG zlib level (default 1: fast)"
    )
    p.add_argument(
        "--memory-mb",
        type=float_range(128, 1 << 20),
        default=2048,
        help="bound on the whole process's memory (MiB, default 2048): tiles are sized to fit it, and inputs "
        "that cannot fit are refused before any work",
    )
    p.add_argument("--timings", action="store_true", help="print where the time went per image")
    p.add_argument("--force", action="store_true", help="allow overwriting an input file")
    p.add_argument("--precision", choices=["fp32", "fp16", "int8"], default="fp32", help="graphs to run")
    p.add_argument("--engine", choices=["local", "ray"], default="local",
        help="local: this process; ray: a Ray Data job (serve extra), skips complete outputs")  # fmt: skip
    p.add_argument("--address", help="with --engine ray: the Ray cluster HOST:PORT (default: an embedded local Ray)")
    p.add_argument("--workers", type=int_range(0, 4096), default=0,
        help="with --engine ray: actors, one Pipeline each (0: one per CPU, at most one per image)")  # fmt: skip
    p.add_argument(
        "--graph",
        choices=["two", "portable"],
        default="two",
        help="two: feature + upscale graphs, the plan computed here, tiled (default); portable: the graphs that "
        "compute the plan themselves (docs/portable.md; not tiled: the output must fit --memory-mb whole; on "
        "openvino the inv form, without float64)",
    )
    p.set_defaults(func=cmd_upscale)
