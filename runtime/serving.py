"""``metasr serve``: the upscale service (:mod:`metasr.runtime.serve_api`) on Ray Serve (the ``serve`` extra).

    app = build_app(ServiceConfig("artifacts/small"), DeploymentLimits(replicas=2))
    run_service(app, ServeOptions(port=8000))   # blocks until SIGINT / SIGTERM, then shuts down

Each replica is a Ray actor holding one :class:`~metasr.runtime.serve_api.Upscaler` (a ``Pipeline`` per
precision), its ONNX Runtime threads set to the CPUs Ray gave it (``cpus_per_replica``). The HTTP proxy runs
on the head node only. Overload is bounded, never absorbed: a replica takes at most ``max_ongoing_requests``
(running one upscale at a time, the rest waiting in it), the router holds at most ``max_queued_requests``
more and answers 503 beyond; a request that has not finished after ``request_timeout_s`` is answered 408
(these two bodies are Ray's own plain text; everything the service refuses is a one-line JSON 4xx). A body is
read at most up to ``max_body_bytes`` (413 from its ``Content-Length`` before reading anything). Each request
logs one line (route, status, bytes, sizes, scale, ms) in the replica's log, which Ray streams to the
``metasr serve`` process. Nothing is written to disk.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

from metasr.runtime.ray_env import init_ray, replica_cpus
from metasr.runtime.serve_api import Reply, ServiceConfig, Upscaler

__all__ = ["APP_NAME", "DeploymentLimits", "ServeOptions", "build_app", "check_port", "run_service", "start_service"]

APP_NAME = "metasr"
_log = logging.getLogger("ray.serve")


@dataclass(frozen=True)
class DeploymentLimits:
    """Replicas and their bounds: count, CPUs each (ORT threads), requests in a replica, requests queued
    in the router beyond that (503 past it)."""

    replicas: int = 1
    cpus_per_replica: float = 1.0
    max_ongoing_requests: int = 4
    max_queued_requests: int = 64

    def __post_init__(self) -> None:
        for name, low, high in (("replicas", 1, 1024), ("max_ongoing_requests", 1, 1024),
                                ("max_queued_requests", 1, 1_000_000)):  # fmt: skip
            value = getattr(self, name)
            if not (isinstance(value, int) and low <= value <= high):
                raise ValueError(f"{name} must be an integer in {low}..{high}, got {value!r}")
        if not (math.isfinite(self.cpus_per_replica) and 0.1 <= self.cpus_per_replica <= 256):
            raise ValueError(f"cpus_per_replica must be in 0.1..256, got {self.cpus_per_replica!r}")


@dataclass(frozen=True)
class ServeOptions:
    """Where the service listens, the request timeout (s), and the Ray cluster to join (None: embedded)."""

    host: str = "127.0.0.1"
    port: int = 8000
    request_timeout_s: float = 120.0
    address: str | None = None

    def __post_init__(self) -> None:
        if not (isinstance(self.port, int) and 1 <= self.port <= 65535):
            raise ValueError(f"port must be in 1..65535, got {self.port!r}")
        if not (math.isfinite(self.request_timeout_s) and 0.1 <= self.request_timeout_s <= 86400):
            raise ValueError(f"request_timeout_s must be in 0.1..86400, got {self.request_timeout_s!r}")


async def _read_body(request, limit: int) -> bytes | Reply:  # request: starlette.requests.Request
    """The body, read no further than ``limit`` bytes (a 413 :class:`Reply` past it)."""
    declared = request.headers.get("content-length")
    too_big = Reply.json(413, {"error": f"the body is larger than {limit:,} bytes"})
    if declared and declared.isdigit() and int(declared) > limit:
        return too_big
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return too_big
        chunks.append(chunk)
    return b"".join(chunks)


class MetaSRReplica:
    """One replica (wrapped by ``serve.deployment`` in :func:`build_app`)."""

    def __init__(self, config: ServiceConfig) -> None:
        self.threads = max(1, round(replica_cpus()))
        self.service = Upscaler(config, threads=self.threads)

    async def __call__(self, request):  # starlette Request -> Response
        from starlette.responses import Response

        t0 = time.perf_counter()
        body = await _read_body(request, self.service.config.max_body_bytes)
        if isinstance(body, Reply):
            reply = body
            line = f"{request.method} {request.url.path} {reply.status} body over the limit"
        else:
            reply = await asyncio.to_thread(
                self.service.handle, request.method, request.url.path, dict(request.query_params),
                request.headers.get("content-type", ""), body,
            )  # fmt: skip
            line = reply.log
        _log.info("%s (%.0f ms with the wait)", line, (time.perf_counter() - t0) * 1000)
        return Response(reply.body, status_code=reply.status, media_type=reply.media_type, headers=dict(reply.headers))

    def pid(self) -> int:
        """This replica's process id (the tests kill one)."""
        return os.getpid()

    def check_health(self) -> None:
        """Serve's periodic health check: the pipelines are loaded."""
        if not self.service.pipelines:
            raise RuntimeError("no pipeline loaded")


def build_app(config: ServiceConfig, limits: DeploymentLimits):
    """The Serve application: ``limits.replicas`` replicas of :class:`MetaSRReplica` (returns a bound app)."""
    from ray import serve
    from ray.serve.schema import LoggingConfig

    deployment = serve.deployment(
        name="MetaSR",
        num_replicas=limits.replicas,
        max_ongoing_requests=limits.max_ongoing_requests,
        max_queued_requests=limits.max_queued_requests,
        ray_actor_options={"num_cpus": limits.cpus_per_replica},
        health_check_period_s=10,
        logging_config=LoggingConfig(enable_access_log=False),  # the service logs its own line per request
    )(MetaSRReplica)
    return deployment.bind(config)


def check_port(host: str, port: int) -> None:
    """Refuse (ValueError, one line) a host:port this machine cannot listen on before Ray starts."""
    try:
        with socket.create_server((host, port)):
            pass
    except OSError as e:
        raise ValueError(f"cannot listen on {host}:{port} ({e.strerror or e})") from None


def start_service(app, options: ServeOptions) -> None:
    """Start (or join) Ray, start Serve's HTTP proxy on the head node and deploy ``app`` (returns when the
    replicas are up)."""
    init_ray(options.address)
    from ray import serve
    from ray.serve.config import HTTPOptions, ProxyLocation

    serve.start(
        proxy_location=ProxyLocation.HeadOnly,
        http_options=HTTPOptions(host=options.host, port=options.port, request_timeout_s=options.request_timeout_s),
    )
    serve.run(app, name=APP_NAME, route_prefix="/", blocking=False)


def stop_service(embedded: bool) -> None:
    """Embedded Ray: stop Serve and Ray. A joined cluster: delete this application only (other applications
    and Serve itself stay)."""
    import ray
    from ray import serve

    if not ray.is_initialized():
        return
    if not embedded:
        serve.delete(APP_NAME)
        return
    try:
        serve.shutdown()
    finally:
        ray.shutdown()


def run_service(app, options: ServeOptions, say: Callable[[str], None] = print) -> None:
    """:func:`start_service`, then wait; on SIGINT/SIGTERM (a ``KeyboardInterrupt``) shut down and re-raise."""
    try:
        start_service(app, options)
        say(f"metasr serve: listening on http://{options.host}:{options.port} (POST /v1/upscale, GET /healthz, "
            "GET /v1/models); Ctrl-C or SIGTERM stops it")  # fmt: skip
        while True:
            time.sleep(3600)
    finally:
        say("metasr serve: shutting down")
        stop_service(options.address is None)
