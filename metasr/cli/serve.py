"""``metasr serve``: the HTTP upscale service on Ray Serve (the ``serve`` extra; no PyTorch needed).

Options are range-checked when parsed; the service itself is :mod:`metasr.runtime.serving`. Without
``--address`` an embedded local Ray is started (and stopped with the service); with it, the service joins that
cluster. SIGINT / SIGTERM shut it down (replicas, proxy, embedded Ray) and exit 130 / 143.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from metasr.cli.common import CLIError, float_range, int_range
from metasr.limits import MAX_IMAGE_PIXELS

__all__ = ["register"]


def cmd_serve(args: argparse.Namespace) -> int:
    from metasr.runtime.ray_env import require_ray
    from metasr.runtime.serve_api import ServiceConfig
    from metasr.runtime.serving import DeploymentLimits, ServeOptions, build_app, check_port, run_service

    require_ray()  # missing: one line naming the serve extra, before anything starts
    if args.artifacts:
        artifacts = Path(args.artifacts)
        if not (artifacts / "manifest.json").is_file():
            raise CLIError(f"--artifacts {artifacts}: no manifest.json there (export one with metasr export-onnx)")
    else:
        from metasr.artifacts import default_artifacts

        artifacts = default_artifacts()
    from metasr.runtime.pipeline import Pipeline

    for precision in args.precision:  # the artifacts load here before Ray starts: a bad directory fails fast
        Pipeline(artifacts, args.backend, threads=1, precision=precision).close()
    config = ServiceConfig(
        str(artifacts.resolve()), args.backend, tuple(dict.fromkeys(args.precision)),
        max_body_bytes=int(args.max_body_mb * 2**20), max_pixels=args.max_pixels, memory_mb=args.memory_mb,
    )  # fmt: skip
    limits = DeploymentLimits(args.replicas, args.cpus_per_replica, args.max_ongoing_requests, args.max_queued_requests)
    options = ServeOptions(args.host, args.port, args.request_timeout, args.address)
    if options.address is None:
        check_port(options.host, options.port)  # before Ray starts: a port in use fails in a second
    else:
        from metasr.runtime.ray_env import check_reachable

        check_reachable(options.address)  # no cluster there: one line, not "shutting down" after a failed start
    run_service(build_app(config, limits), options, say=lambda line: print(line, flush=True))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="HTTP upscale service on Ray Serve (needs the serve extra)")
    p.add_argument("--artifacts", help="artifact directory (default: the bundled model, exported once)")
    p.add_argument("--backend", default="ort", help="runtime backend of each replica (default ort: CPU)")
    p.add_argument("--precision", nargs="+", choices=["fp32", "fp16", "int8"], default=["fp32"],
                   help="graphs each replica holds (the first is the default of ?precision=)")  # fmt: skip
    p.add_argument("--replicas", type=int_range(1, 1024), default=1, help="replicas (default 1)")
    p.add_argument("--cpus-per-replica", type=float_range(0.1, 256), default=1.0,
                   help="CPUs Ray reserves per replica; its ONNX Runtime threads (default 1)")  # fmt: skip
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int_range(1, 65535), default=8000, help="port (default 8000)")
    p.add_argument("--address", help="join the Ray cluster at HOST:PORT (default: start an embedded local Ray)")
    p.add_argument("--max-body-mb", type=float_range(0.001, 4096), default=50.0,
                   help="largest request body (MiB, default 50): 413 beyond")  # fmt: skip
    p.add_argument("--max-pixels", type=int_range(1, MAX_IMAGE_PIXELS), default=16_777_216,
                   help="largest input and output in pixels (default 16,777,216): 413 beyond")  # fmt: skip
    p.add_argument("--memory-mb", type=float_range(128, 1 << 20), default=2048,
                   help="memory bound of a replica's upscale (MiB, default 2048): 413 past it")  # fmt: skip
    p.add_argument("--max-ongoing-requests", type=int_range(1, 1024), default=4,
                   help="requests inside one replica (one runs, the rest wait; default 4)")  # fmt: skip
    p.add_argument("--max-queued-requests", type=int_range(1, 1_000_000), default=64,
                   help="requests waiting for a replica beyond those (default 64): 503 beyond")  # fmt: skip
    p.add_argument("--request-timeout", type=float_range(0.1, 86400), default=120.0,
                   help="seconds before a request is answered 408 (default 120)")  # fmt: skip
    p.set_defaults(func=cmd_serve)
