"""``metasr serve``: the upscale service (:mod:`metasr.runtime.serve_api`) on Ray Serve (the ``serve`` extra).

    app = build_app(ServiceConfig("artifacts/small"), DeploymentLimits(replicas=2))
    run_service(app, ServeOptions(port=8000))   # blocks until SIGINT / SIGTERM, then shuts down

Two deployments. ``MetaSR``: the replicas, Ray actors each holding one
:class:`~metasr.runtime.serve_api.Upscaler` (a ``Pipeline`` per precision), its ONNX Runtime threads set to the
CPUs Ray gave it (``cpus_per_replica``). ``MetaSRIngress``: the HTTP entry point, one asyncio replica that
reserves no CPU and does no image work: it reads the body (at most ``max_body_bytes``: 413 from its
``Content-Length`` before reading anything), hands the request to ``MetaSR`` through a ``DeploymentHandle``
and turns what Ray Serve's HTTP proxy would answer in plain text into the service's one-line JSON.

Overload is bounded, never absorbed: a replica takes at most ``max_ongoing_requests`` (one upscale at a time, the
rest waiting in it) and at most ``max_queued_requests`` more wait for a replica. The ingress counts the requests in
the service and answers the excess 503 with ``Retry-After`` before reading its body; its count is the bound (exact:
there is one ingress). A request counts from the end of its body: clients that send their headers and hold the body
back hold none of the replicas' places (they wait in the ingress, at most ``INGRESS_HEADROOM`` of them, until the
request timeout), and the bodies the ingress holds, read or being read, stay within the same bytes as before
(capacity x ``max_body_bytes``; 503 past it). The handle router's own count of queued requests raced (it dropped
requests that fitted: 5 or 6 of the 8 that fit answered in a flood of 24 at once, before and with the ingress; 8 of
8 in every run since it is only a backstop, set to the same total), and its ``BackPressureError``, should it come,
is the same JSON 503. A request not finished within ``request_timeout_s`` (reading its body included) is answered
408 by the ingress and cancelled in the replica: an upscale that has not started never starts, one
already running stops before its next output band (ONNX Runtime's call in progress cannot be interrupted) and
then the next one starts (measured: 3 upscales of ~1.8 s at once under a 0.5 s timeout, 3 x 408 at 0.52 s, the
next upscale answered 0.6 s later). A request refused on its query is answered without waiting for the turn;
``GET /healthz`` and ``GET /v1/models`` are answered by the ingress, uncounted.
A replica lost mid-request is a 503 too (retry: an upscale has no side effect). Every refusal is a one-line
JSON body ``{"error": "..."}``. Ray's proxy keeps a timeout of its own as a backstop, above the service's
(:func:`proxy_timeout_s`), so the ingress answers first; a client that sends Ray's ``x-request-timeout-seconds``
header with less gets Ray's plain-text 408 at its own deadline. The ingress costs a Ray process (~130 MiB PSS)
and ~4 ms per request (measured, 128x128 at concurrency 1). Each request logs one line (route, status, bytes,
sizes, scale, ms) in the log of the replica that answered it (a refusal of the ingress in the ingress's),
which Ray streams to the ``metasr serve`` process. Nothing is written to disk.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from metasr.runtime.ray_env import init_ray, replica_cpus
from metasr.runtime.serve_api import Reply, ServiceConfig, Upscaler
from metasr.runtime.serve_ingress import INGRESS_HEADROOM, INGRESS_MARGIN, MetaSRIngress

__all__ = ["APP_NAME", "DeploymentLimits", "ServeOptions", "ServiceApp", "build_app", "check_port",
           "proxy_timeout_s", "run_service", "start_service"]  # fmt: skip

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

    @property
    def capacity(self) -> int:
        """Requests the service holds at once: in the replicas and queued for them (503 beyond)."""
        return self.replicas * self.max_ongoing_requests + self.max_queued_requests


@dataclass(frozen=True)
class ServeOptions:
    """Where the service listens, the request timeout (s; 408 past it), and the Ray cluster to join (None:
    embedded)."""

    host: str = "127.0.0.1"
    port: int = 8000
    request_timeout_s: float = 120.0
    address: str | None = None

    def __post_init__(self) -> None:
        if not (isinstance(self.port, int) and 1 <= self.port <= 65535):
            raise ValueError(f"port must be in 1..65535, got {self.port!r}")
        if not (math.isfinite(self.request_timeout_s) and 0.1 <= self.request_timeout_s <= 86400):
            raise ValueError(f"request_timeout_s must be in 0.1..86400, got {self.request_timeout_s!r}")


def proxy_timeout_s(request_timeout_s: float) -> float:
    """Ray's HTTP proxy timeout for a service timeout: a backstop far enough above it that the ingress answers
    (JSON) first."""
    return request_timeout_s + max(5.0, request_timeout_s / 10)


class MetaSRReplica:
    """One replica (the ``MetaSR`` deployment of :func:`build_app`): answers what the ingress forwards."""

    def __init__(self, config: ServiceConfig) -> None:
        self.threads = max(1, round(replica_cpus()))
        self.service = Upscaler(config, threads=self.threads)
        self._turn = asyncio.Lock()  # one upscale at a time (bound to the replica's event loop at first use)

    async def answer(self, method: str, path: str, query: dict[str, str], content_type: str, body: bytes) -> Reply:
        """One request, answered by :meth:`Upscaler.handle` in a thread. A POST (an upscale) whose route, query,
        content type and size pass waits for its turn here, without a thread: cancelled while waiting (the
        request's timeout, its client gone), it never runs; cancelled while running, it stops before its next
        output band (ONNX Runtime's call in progress cannot be interrupted) and only then passes the turn on."""
        t0 = time.perf_counter()
        running: asyncio.Future | None = None
        stop = threading.Event()

        def run() -> Reply:
            return self.service.handle(method, path, query, content_type, body, stop.is_set)

        refused = self.service.refusal(method, path, query, content_type, body) if method == "POST" else None
        if refused is not None:  # a bad request is answered at once, not after the upscale before it
            _log.info("%s (%.0f ms with the wait)", refused.log, (time.perf_counter() - t0) * 1000)
            return refused
        try:
            if method != "POST":  # GET /healthz, /v1/models and refusals never wait behind an upscale
                reply = await asyncio.to_thread(run)
            else:
                await self._turn.acquire()
                try:
                    running = asyncio.get_running_loop().run_in_executor(None, run)
                except BaseException:
                    self._turn.release()
                    raise
                running.add_done_callback(self._pass_turn)
                reply = await asyncio.shield(running)
        except asyncio.CancelledError:
            if running is not None and not running.done():
                stop.set()  # the upscale stops before its next band
                how = "while running: it stops before its next band, its answer discarded"
                running.add_done_callback(lambda done: self._log_discarded(done, t0))
            else:
                how = "before it ran" if method == "POST" else ""
            _log.info("%s %s cancelled after %.0f ms (the request's timeout or its client gone) %s", method, path[:80],
                      (time.perf_counter() - t0) * 1000, how)  # fmt: skip
            raise
        _log.info("%s (%.0f ms with the wait)", reply.log, (time.perf_counter() - t0) * 1000)
        return reply

    @staticmethod
    def _log_discarded(done: asyncio.Future, t0: float) -> None:
        if not done.cancelled() and done.exception() is None:
            _log.info("%s (%.0f ms with the wait; discarded: its request was cancelled)", done.result().log,
                      (time.perf_counter() - t0) * 1000)  # fmt: skip

    def _pass_turn(self, running: asyncio.Future) -> None:
        if not running.cancelled():
            running.exception()  # retrieved: handle() never raises, but an orphan's fault must not warn later
        self._turn.release()

    def models(self) -> dict[str, object]:
        """``GET /v1/models``'s body (the ingress asks once and keeps it: it is the same for every replica)."""
        return self.service.models()

    def pid(self) -> int:
        """This replica's process id (the tests kill one)."""
        return os.getpid()

    def check_health(self) -> None:
        """Serve's periodic health check: the pipelines are loaded."""
        if not self.service.pipelines:
            raise RuntimeError("no pipeline loaded")


@dataclass(frozen=True)
class ServiceApp:
    """What :func:`build_app` returns; :func:`start_service` binds it with the request timeout
    (:meth:`application`)."""

    config: ServiceConfig
    limits: DeploymentLimits

    def application(self, request_timeout_s: float = 120.0):
        """The Ray Serve application: ``MetaSRIngress`` in front of ``limits.replicas`` replicas of ``MetaSR``."""
        from ray import serve
        from ray.serve.schema import LoggingConfig

        limits = self.limits
        quiet = LoggingConfig(enable_access_log=False)  # the service logs its own line per request
        worker = serve.deployment(
            name="MetaSR",
            num_replicas=limits.replicas,
            max_ongoing_requests=limits.max_ongoing_requests,
            # the ingress's count is the bound (replicas x max_ongoing + max_queued, exact: one ingress); the
            # router's own count races (it dropped requests that fit: 5 or 6 of 8 answered in a flood) and is
            # only a backstop here, never reached while the ingress holds at most that many
            max_queued_requests=limits.capacity,
            ray_actor_options={"num_cpus": limits.cpus_per_replica},
            health_check_period_s=10,
            logging_config=quiet,
        )(MetaSRReplica)
        ingress = serve.deployment(
            name="MetaSRIngress",
            num_replicas=1,  # one: its count of requests is the service's (as Ray's one router was)
            # never the bottleneck: it refuses itself; the margin leaves room for its refusals and /healthz when
            # its readers and the places are all taken (found in review: with none, Ray stopped handing it any)
            max_ongoing_requests=limits.capacity + INGRESS_HEADROOM + INGRESS_MARGIN,
            ray_actor_options={"num_cpus": 0},  # no CPU work: reading bodies and forwarding
            health_check_period_s=10,
            logging_config=quiet,
        )(MetaSRIngress)
        return ingress.bind(worker.bind(self.config), limits, self.config.max_body_bytes, request_timeout_s)


def build_app(config: ServiceConfig, limits: DeploymentLimits) -> ServiceApp:
    """The service: ``limits.replicas`` replicas of :class:`MetaSRReplica` behind :class:`MetaSRIngress`
    (deployed by :func:`start_service`)."""
    return ServiceApp(config, limits)


def check_port(host: str, port: int) -> None:
    """Refuse (ValueError, one line) a host:port this machine cannot listen on before Ray starts."""
    try:
        with socket.create_server((host, port)):
            pass
    except OSError as e:
        raise ValueError(f"cannot listen on {host}:{port} ({e.strerror or e})") from None


def start_service(app: ServiceApp, options: ServeOptions) -> None:
    """Start (or join) Ray, start Serve's HTTP proxy on the head node and deploy ``app`` (returns when the
    replicas are up)."""
    init_ray(options.address)
    from ray import serve
    from ray.serve.config import HTTPOptions, ProxyLocation

    backstop = proxy_timeout_s(options.request_timeout_s)  # Ray's plain-text 408 only if the ingress never answers
    http = HTTPOptions(host=options.host, port=options.port, request_timeout_s=backstop)
    serve.start(proxy_location=ProxyLocation.HeadOnly, http_options=http)
    serve.run(app.application(options.request_timeout_s), name=APP_NAME, route_prefix="/", blocking=False)


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


def run_service(app: ServiceApp, options: ServeOptions, say: Callable[[str], None] = print) -> None:
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
