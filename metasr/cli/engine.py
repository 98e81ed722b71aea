"""``metasr build-engine``: TensorRT engines from an artifact directory (a GPU and TensorRT)."""

from __future__ import annotations

import argparse
from pathlib import Path

from metasr.cli.common import int_range, pair

__all__ = ["register"]

MAX_ENGINE_SIDE = 16_384  # TensorRT's optimization profiles are per dimension; larger builds exhaust GPU memory
MAX_WORKSPACE_MB = 1 << 20  # 1 TiB: more than any GPU has


def cmd_build_engine(args: argparse.Namespace) -> int:
    from metasr.export.trt_build import EngineBuildConfig, build_engines

    cfg = EngineBuildConfig(
        precision=args.precision,
        lr_sizes=tuple(args.lr_size or [(256, 256)]),
        max_lr=args.max_lr,
        timing_cache=Path(args.timing_cache) if args.timing_cache else None,
        workspace_mb=args.workspace_mb,
        upscale_impl=args.upscale_impl,
    )
    for spec in build_engines(args.artifacts, cfg):
        print(f"wrote {Path(args.artifacts) / spec.file} ({spec.kind}, {spec.precision})")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("build-engine", help="TensorRT engines from an artifact directory (needs a GPU and TensorRT)")
    p.add_argument("--artifacts", required=True, help="artifact directory (engines and manifest are added to it)")
    p.add_argument("--precision", choices=["fp32", "fp16", "int8"], default="fp32")
    p.add_argument(
        "--lr-size",
        action="append",
        type=pair("--lr-size", "256x256 (HxW)", low=8, high=MAX_ENGINE_SIDE),
        metavar="HxW",
        help="static feature engine size (repeatable)",
    )
    p.add_argument(
        "--max-lr",
        type=pair("--max-lr", "540x960 (HxW)", high=MAX_ENGINE_SIDE),
        metavar="HxW",
        help="largest LR region per upscale call (default: largest --lr-size)",
    )
    p.add_argument("--timing-cache", help="TensorRT timing cache file (read if present, updated)")
    p.add_argument("--workspace-mb", type=int_range(16, MAX_WORKSPACE_MB), default=2048)
    p.add_argument(
        "--upscale-impl",
        choices=["plugin", "body"],
        default="plugin",
        help="plugin: require the metasr::MetaUpscale plugin layer; body: accept an imported ONNX function body",
    )
    p.set_defaults(func=cmd_build_engine)
