"""The HTTP entry point of ``metasr serve`` (:mod:`metasr.runtime.serving`): ``MetaSRIngress``, one asyncio
replica that reserves no CPU and does no image work. It reads each request's body, hands the request to the
``MetaSR`` replicas through a ``DeploymentHandle`` and answers what Ray Serve's HTTP proxy would answer in plain
text (503, 408) in the service's one-line JSON.

Counts (one event loop: no locks): ``in_flight``, the requests forwarded to a replica and not answered yet, at
most the service's capacity (replicas x max-ongoing + max-queued; 503 past it, before the body is read where the
service is already full, else once the body is in); ``reading``, the requests whose body is still coming, at most
:data:`INGRESS_HEADROOM` (a slow sender holds none of the replicas' places); ``held``, the bytes of the bodies in
the ingress, read or being read, at most capacity x ``max_body_bytes`` (what the places' bodies could hold; 503
past it). The request timeout covers the whole request, its body included (408, the request cancelled in its
replica).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from metasr.runtime.serve_api import Reply

if TYPE_CHECKING:
    from metasr.runtime.serving import DeploymentLimits

__all__ = ["INGRESS_HEADROOM", "INGRESS_MARGIN", "RETRY_AFTER_S", "MetaSRIngress"]

RETRY_AFTER_S = 1  # the Retry-After of a 503: about one upscale of a typical image
# requests the ingress takes beyond those it forwards (their bodies being read): it refuses more itself (503, in
# microseconds), so Ray's proxy never queues in front of it
INGRESS_HEADROOM = 1024
# requests Ray hands the ingress beyond its readers and the service's places: its own refusals, /healthz and
# /v1/models, answered at once (a bound on Ray's proxy queue in front of it, max_queued_requests 64, was tried:
# a burst of 1,100 connections then met Ray's plain-text 503 while the ingress had room)
INGRESS_MARGIN = 64
_log = logging.getLogger("ray.serve")


def _busy(message: str, log: str) -> Reply:
    return Reply.json(503, {"error": message}, log=log, headers=(("Retry-After", str(RETRY_AFTER_S)),))


class MetaSRIngress:
    """The HTTP entry point (the ``MetaSRIngress`` deployment of :func:`build_app`): reads the body, forwards the
    request to ``MetaSR`` and answers 503 / 408 itself, in one-line JSON."""

    def __init__(self, worker, limits: DeploymentLimits, max_body_bytes: int, request_timeout_s: float) -> None:
        self.worker = worker  # a DeploymentHandle of MetaSR
        self.capacity = limits.capacity
        self.max_body_bytes = max_body_bytes
        self.timeout_s = request_timeout_s
        # one event loop: no lock needed for these counts
        self.in_flight = 0  # requests forwarded to a replica and not answered yet (the service's bound)
        self.reading = 0  # requests whose body is being read: a slow sender holds none of the replicas' places
        self.held = 0  # bytes of the bodies read or being read by the requests in the ingress
        self.max_held = limits.capacity * max_body_bytes  # as when every place held a body of the largest size
        self.models: dict | None = None  # GET /v1/models, asked of a replica once

    async def __call__(self, request):  # starlette Request -> Response
        from starlette.responses import Response

        t0 = time.perf_counter()
        path = request.scope.get("path", "/")
        root = request.scope.get("root_path", "")
        if root and path.startswith(root):  # mounted under a route prefix: the service's own path
            path = path[len(root) :] or "/"
        route = path.rstrip("/")
        if request.method == "GET" and route in ("/healthz", "/v1/models"):
            reply = await self._status(route)  # answered here, uncounted: never behind (nor crowding out) upscales
        elif self.in_flight >= self.capacity:  # refused before its body is read
            reply = self._full(f"busy ({self.in_flight} requests in the service)")
        else:
            reply = await self._forward(request, path)
        if reply.log:  # an answer of the ingress itself (the replica's answers are logged in the replica)
            _log.info("%s %s %d %s (%.0f ms)", request.method, path[:80], reply.status, reply.log,
                      (time.perf_counter() - t0) * 1000)  # fmt: skip
        return Response(reply.body, status_code=reply.status, media_type=reply.media_type, headers=dict(reply.headers))

    def _full(self, log: str) -> Reply:
        """The 503 of a service that holds all the requests it takes."""
        return _busy(f"the service is busy: it holds {self.capacity} requests (its replicas' and its queue's); "
                     "retry later", log)  # fmt: skip

    async def _status(self, path: str) -> Reply:
        """``GET /healthz`` (the service takes requests: this ingress answers, and Ray's health checks replace a
        replica that stops answering its own) and ``GET /v1/models`` (asked of a replica once, then kept)."""
        if path == "/healthz":
            return Reply.json(200, {"status": "ok"})
        if self.models is None:
            try:
                self.models = await asyncio.wait_for(self.worker.models.remote(), self.timeout_s)
            except Exception as e:  # no replica answered (yet): as a busy service
                return _busy("no replica answered yet; retry", f"models unavailable ({type(e).__name__})")
        return Reply.json(200, self.models)

    async def _forward(self, request, path: str) -> Reply:
        """The replica's :class:`Reply` (its log left empty), or one of the ingress's refusals (with its log)."""
        from ray.exceptions import RayActorError, TaskCancelledError
        from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError, ReplicaUnavailableError
        from starlette.requests import ClientDisconnect

        sent: list = []  # the DeploymentResponse, once the request is handed to a replica
        try:
            return await asyncio.wait_for(self._exchange(request, path, sent), self.timeout_s)
        except asyncio.TimeoutError:  # the deadline (a TimeoutError inside _exchange is re-raised as another)
            for response in sent:
                response.cancel()  # not started in the replica: never starts; running: stops at its next band
            return Reply.json(408, {"error": f"the request did not finish within {self.timeout_s:g} s (the "
                                             "service's request timeout)"}, log="timed out")  # fmt: skip
        except BackPressureError as e:  # the router's own bound (a replica short, or its count ahead of ours)
            return self._full(f"busy ({e})")
        except (RayActorError, ReplicaUnavailableError, DeploymentUnavailableError) as e:
            return _busy("the replica answering the request stopped; retry", f"replica lost ({type(e).__name__})")
        except (ClientDisconnect, TaskCancelledError):  # Ray's proxy cancels reading a body whose client left
            return Reply.json(400, {"error": "the body ended early: the client disconnected"}, log="client gone")
        except asyncio.CancelledError:  # the client went away (Ray's proxy cancels the request)
            for response in sent:
                response.cancel()
            raise
        except Exception:
            _log.exception("%s %s failed", request.method, path[:80])
            return Reply.json(500, {"error": "internal error"}, log="internal error")

    async def _exchange(self, request, path: str, sent: list) -> Reply:
        body: bytes | Reply = b""
        try:
            body = await self._read_body(request)
            if isinstance(body, Reply):
                return body
            if self.in_flight >= self.capacity:  # the places filled while the body came
                return self._full(f"busy ({self.in_flight} requests in the service, after the body)")
            self.in_flight += 1
            try:
                response = self.worker.answer.remote(
                    request.method, path, dict(request.query_params), request.headers.get("content-type", ""),
                    body,
                )  # fmt: skip
                sent.append(response)
                reply = await response
            finally:
                self.in_flight -= 1
        except TimeoutError as e:  # not the deadline's (Python 3.11+: asyncio.TimeoutError is TimeoutError)
            raise RuntimeError(f"a timeout inside the request: {e}") from e
        finally:
            if isinstance(body, bytes):  # (a refusal's bytes were let go where it was made)
                self.held -= len(body)
        return Reply(reply.status, reply.media_type, reply.body, "", reply.headers)

    async def _read_body(self, request) -> bytes | Reply:  # request: starlette.requests.Request
        """The body, read no further than ``max_body_bytes`` (a 413 :class:`Reply` past it), counted in
        ``reading`` while it comes and in ``held`` (its bytes) until the caller releases them; a 503 where the
        bodies in the ingress would pass ``max_held``."""
        limit = self.max_body_bytes
        declared = request.headers.get("content-length")
        too_big = Reply.json(413, {"error": f"the body is larger than {limit:,} bytes"}, log="body over the limit")
        if declared and declared.isdigit() and int(declared) > limit:
            return too_big
        if self.reading >= INGRESS_HEADROOM:  # (checked and counted with no await between: found in review, a
            # check in __call__ let the requests of one loop tick past it, and Ray then stopped handing any over)
            return _busy("the service is reading as many request bodies as it takes; retry later",
                         f"busy ({self.reading} bodies being read)")  # fmt: skip
        chunks: list[bytes] = []
        size, kept = 0, False
        self.reading += 1
        try:
            async for chunk in request.stream():
                size += len(chunk)
                self.held += len(chunk)
                if size > limit:
                    return too_big
                if self.held > self.max_held:  # (counted as they come: a slow sender holds only what it sent)
                    return _busy("the service holds as many request bodies as it takes; retry later",
                                 f"busy (bodies of {self.held:,} bytes in the ingress)")  # fmt: skip
                chunks.append(chunk)
            kept = True
            return b"".join(chunks)
        finally:
            self.reading -= 1
            if not kept:
                self.held -= size
