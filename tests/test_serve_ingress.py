"""The ingress of `metasr serve` (metasr.runtime.serve_ingress.MetaSRIngress), driven without a cluster (Ray
imported, not started) with a stand-in replica handle: its answers in one-line JSON, and against slow and heavy
senders.

A request counts in the service's bound from the end of its body: clients that send their headers and hold the body
back (found in a review: 72 of them kept the service at 503 until the request timeout ended them) wait in the
ingress without taking a replica's place, and the bodies the ingress holds stay within capacity x max_body_bytes.
"""

from __future__ import annotations

import asyncio
import json

import pytest

pytest.importorskip("ray", reason="the serve extra (ray) is not installed")
from metasr.runtime import serve_ingress
from metasr.runtime.serve_api import Reply
from metasr.runtime.serving import DeploymentLimits, MetaSRIngress
from starlette.requests import Request


# -- the ingress of `metasr serve` (metasr.runtime.serving.MetaSRIngress) without a cluster: a stand-in handle ------
class _Response:
    """A stand-in for Ray's DeploymentResponse: awaits ``outcome`` (a Reply, an exception, or a sleep)."""

    def __init__(self, outcome) -> None:
        self.outcome, self.cancelled, self.slept = outcome, False, False

    def __await__(self):
        return self._result().__await__()

    async def _result(self):
        if isinstance(self.outcome, (int, float)):
            await asyncio.sleep(self.outcome)
            self.slept = True  # the replica's whole time went by
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        return self.outcome

    def cancel(self) -> None:
        self.cancelled = True


class _Worker:
    def __init__(self, outcome) -> None:
        self.outcome, self.calls = outcome, []
        self.answer = self  # worker.answer.remote(...)

    def remote(self, *args):
        self.calls.append(args)
        self.response = _Response(self.outcome)
        return self.response


def ingress_post(ingress, parts: list[bytes], hold=None, declared: int | None = None, path="/v1/upscale", root=""):
    """POST ``?scale=2`` to the ingress (a coroutine: its response), the body in ``parts``; with ``hold`` (an
    asyncio.Event), the last part is sent only once it is set (a slow sender); ``declared``: a Content-Length."""
    from starlette.requests import Request

    headers = [(b"content-type", b"image/png")]
    if declared is not None:
        headers.append((b"content-length", str(declared).encode()))
    scope = {"type": "http", "method": "POST", "path": root + path, "root_path": root, "query_string": b"scale=2",
             "headers": headers}  # fmt: skip
    queue = list(parts)

    async def receive():
        if len(queue) == 1 and hold is not None:
            await hold.wait()
        body = queue.pop(0) if queue else b""
        return {"type": "http.request", "body": body, "more_body": bool(queue)}

    return ingress(Request(scope, receive))


def _ingress_call(outcome, body=b"png", path="/v1/upscale", root="", capacity_used=0, timeout_s=5.0, limit=100):
    """One request through MetaSRIngress: (status, body, headers, the stand-in worker)."""
    from metasr.runtime.serving import DeploymentLimits, MetaSRIngress

    worker = _Worker(outcome)
    ingress = MetaSRIngress(worker, DeploymentLimits(replicas=1, max_ongoing_requests=1, max_queued_requests=1),
                            limit, timeout_s)  # fmt: skip
    ingress.in_flight = capacity_used
    response = asyncio.run(ingress_post(ingress, [body], declared=len(body), path=path, root=root))
    assert ingress.in_flight == capacity_used  # every request forwarded is counted out again
    return response.status_code, response.body, response.headers, worker


def test_ingress_forwards_and_answers_ray_s_refusals_in_one_line_json():
    """Before, 503 (more requests than the replicas and the queue take) and 408 (the request timeout) were Ray
    Serve's plain text: the ingress answers them as the service answers everything else."""
    pytest.importorskip("ray", reason="the serve extra (ray) is not installed")
    from metasr.runtime.serve_api import Reply
    from ray.exceptions import ActorDiedError
    from ray.serve.exceptions import BackPressureError

    status, body, _, worker = _ingress_call(Reply(200, "image/png", b"out", "a log line"), path="/v1/upscale",
                                               root="/slow")  # fmt: skip
    assert (status, body) == (200, b"out")
    assert worker.calls == [("POST", "/v1/upscale", {"scale": "2"}, "image/png", b"png")]  # the prefix taken off

    status, body, headers, worker = _ingress_call(Reply(200, "image/png", b"out"), capacity_used=2)
    assert status == 503 and "busy" in json.loads(body)["error"] and headers["retry-after"] == "1"
    assert worker.calls == []  # refused before the body is read: the service holds 1 + 1 requests already

    for exc, fragment in ((BackPressureError(1, 1), "busy"), (ActorDiedError(), "stopped; retry")):
        status, body, headers, _ = _ingress_call(exc)
        assert status == 503 and fragment in json.loads(body)["error"] and headers["retry-after"] == "1", body
        assert b"\n" not in body and headers["content-type"] == "application/json"

    status, body, _, worker = _ingress_call(30.0, timeout_s=0.2)  # a replica that takes 30 s
    assert status == 408 and json.loads(body)["error"].startswith("the request did not finish within 0.2 s")
    # cancelled in the replica, answered at the timeout: the replica's 30 s never went by
    assert worker.response.cancelled and not worker.response.slept

    status, body, _, worker = _ingress_call(Reply(200, "image/png", b"out"), body=b"x" * 101)
    assert status == 413 and worker.calls == []  # over the body limit (100 bytes here), never forwarded

    status, body, _, _ = _ingress_call(RuntimeError("boom\nsecond line"))
    assert status == 500 and json.loads(body) == {"error": "internal error"}


def test_the_proxy_backstop_is_above_the_service_timeout():
    pytest.importorskip("ray", reason="the serve extra (ray) is not installed")
    from metasr.runtime.serving import DeploymentLimits, proxy_timeout_s

    assert DeploymentLimits(replicas=2, max_ongoing_requests=2, max_queued_requests=4).capacity == 8
    for t in (0.1, 1.0, 120.0, 86400.0):
        assert proxy_timeout_s(t) >= t + 5


def test_the_ingress_answers_health_and_models_itself_uncounted():
    """A health probe never waits behind upscales nor takes their place: /healthz is answered by the ingress
    even when the service is full, /v1/models asked of a replica once and kept."""
    pytest.importorskip("ray", reason="the serve extra (ray) is not installed")
    from metasr.runtime.serving import DeploymentLimits, MetaSRIngress
    from starlette.requests import Request

    class Models:
        calls = 0

        def remote(self):
            Models.calls += 1
            return _Response({"model": "m"})

    worker = _Worker(30.0)
    worker.models = Models()
    ingress = MetaSRIngress(worker, DeploymentLimits(replicas=1, max_ongoing_requests=1, max_queued_requests=1),
                            100, 5.0)  # fmt: skip
    ingress.in_flight = 2  # full

    async def get(path):
        scope = {"type": "http", "method": "GET", "path": path, "root_path": "", "query_string": b"", "headers": []}

        async def receive():
            return {"type": "http.request", "body": b"", "more_body": False}

        return await ingress(Request(scope, receive))

    async def scenario():
        return [await get(p) for p in ("/healthz", "/v1/models", "/v1/models", "/healthz/")]

    responses = asyncio.run(scenario())
    assert [r.status_code for r in responses] == [200, 200, 200, 200]
    assert json.loads(responses[0].body) == {"status": "ok"} and json.loads(responses[1].body) == {"model": "m"}
    assert Models.calls == 1 and worker.calls == [] and ingress.in_flight == 2


LIMITS = DeploymentLimits(replicas=1, max_ongoing_requests=1, max_queued_requests=1)  # capacity 2
OK = Reply(200, "image/png", b"out")


def _counts(ingress: MetaSRIngress) -> tuple[int, int, int]:
    return ingress.in_flight, ingress.reading, ingress.held


def test_senders_that_hold_their_body_back_hold_no_replica_s_place():
    worker = _Worker(OK)
    ingress = MetaSRIngress(worker, LIMITS, 100, 5.0)

    async def scenario():
        hold = asyncio.Event()
        slow = [asyncio.create_task(ingress_post(ingress, [b"p", b"ng"], hold)) for _ in range(5)]
        await asyncio.sleep(0.05)  # the five have sent their headers and a byte each
        assert _counts(ingress) == (0, 5, 5) and worker.calls == []
        fast = await ingress_post(ingress, [b"png"])  # before: 503, the five counted as in the service
        hold.set()
        return fast, await asyncio.gather(*slow)

    fast, slow = asyncio.run(scenario())
    assert fast.status_code == 200 and fast.body == b"out"
    assert [r.status_code for r in slow] == [200] * 5 and len(worker.calls) == 6
    assert _counts(ingress) == (0, 0, 0)


def test_a_slow_body_past_the_request_timeout_is_a_408_and_frees_everything():
    worker = _Worker(OK)
    ingress = MetaSRIngress(worker, LIMITS, 100, 0.2)

    async def scenario():
        return await ingress_post(ingress, [b"p", b"ng"], asyncio.Event())  # never sends the rest

    response = asyncio.run(scenario())
    assert response.status_code == 408 and json.loads(response.body)["error"].startswith("the request did not")
    assert worker.calls == [] and _counts(ingress) == (0, 0, 0)


def test_the_bodies_in_the_ingress_stay_within_capacity_times_the_body_limit():
    worker = _Worker(OK)
    ingress = MetaSRIngress(worker, LIMITS, 100, 5.0)  # 2 x 100 bytes at most

    async def scenario():
        hold = asyncio.Event()
        slow = [asyncio.create_task(ingress_post(ingress, [b"x" * 90, b"y"], hold)) for _ in range(2)]
        await asyncio.sleep(0.05)
        assert _counts(ingress) == (0, 2, 180)
        third = await ingress_post(ingress, [b"z" * 30])  # 210 bytes would be held: refused, its bytes let go
        small = await ingress_post(ingress, [b"z" * 20])  # 200: fits
        hold.set()
        return third, small, await asyncio.gather(*slow)

    third, small, slow = asyncio.run(scenario())
    assert third.status_code == 503 and third.headers["retry-after"] == "1"
    assert "holds as many request bodies" in json.loads(third.body)["error"]
    assert small.status_code == 200 and [r.status_code for r in slow] == [200, 200]
    assert len(worker.calls) == 3 and _counts(ingress) == (0, 0, 0)


def test_places_taken_while_a_body_came_are_counted_after_it():
    worker = _Worker(OK)
    ingress = MetaSRIngress(worker, LIMITS, 100, 5.0)

    async def scenario():
        hold = asyncio.Event()
        late = asyncio.create_task(ingress_post(ingress, [b"p", b"ng"], hold))
        await asyncio.sleep(0.05)
        ingress.in_flight = 2  # meanwhile two requests were forwarded: the service is full
        hold.set()
        response = await late
        ingress.in_flight = 0
        return response

    response = asyncio.run(scenario())
    assert response.status_code == 503 and "busy" in json.loads(response.body)["error"]
    assert worker.calls == [] and _counts(ingress) == (0, 0, 0)


def test_readers_are_bounded_and_a_413_lets_its_bytes_go(monkeypatch):
    monkeypatch.setattr(serve_ingress, "INGRESS_HEADROOM", 3)
    worker = _Worker(OK)
    ingress = MetaSRIngress(worker, LIMITS, 100, 5.0)

    async def scenario():
        hold = asyncio.Event()
        slow = [asyncio.create_task(ingress_post(ingress, [b"p", b"ng"], hold)) for _ in range(3)]
        await asyncio.sleep(0.05)
        refused = await ingress_post(ingress, [b"png"])  # a fourth body at once: 503 before reading it
        hold.set()
        await asyncio.gather(*slow)
        big = await ingress_post(ingress, [b"x" * 60, b"x" * 60])  # no Content-Length: 413 once the stream passes 100
        return refused, big

    refused, big = asyncio.run(scenario())
    assert refused.status_code == 503 and "reading as many request bodies" in json.loads(refused.body)["error"]
    assert big.status_code == 413 and len(worker.calls) == 3 and _counts(ingress) == (0, 0, 0)


def test_readers_arriving_in_one_loop_tick_stay_within_the_bound(monkeypatch):
    """Found in review: the bound was checked in __call__ and counted after a loop hop (wait_for's task), so the
    requests of one tick all passed it (1,100 slow senders: 1,026 readers, and Ray, whose limit for the ingress
    is its places + readers, stopped handing it anything, /healthz included)."""
    monkeypatch.setattr(serve_ingress, "INGRESS_HEADROOM", 3)
    worker = _Worker(OK)
    ingress = MetaSRIngress(worker, LIMITS, 100, 5.0)

    async def scenario():
        hold = asyncio.Event()
        tasks = [asyncio.create_task(ingress_post(ingress, [b"p", b"ng"], hold)) for _ in range(6)]  # one tick
        await asyncio.sleep(0.05)
        readers = ingress.reading
        hold.set()
        return readers, await asyncio.gather(*tasks)

    readers, responses = asyncio.run(scenario())
    statuses = sorted(r.status_code for r in responses)
    assert readers == 3 and statuses == [200, 200, 200, 503, 503, 503], (readers, statuses)
    assert _counts(ingress) == (0, 0, 0)


def test_a_timeout_error_while_the_body_comes_is_not_the_request_timeout():
    """Found in review: a TimeoutError raised by the body's stream (Ray's GetTimeoutError is one) read as the
    request's own deadline, a 408 at once; it is an internal error, as it is from the replica."""
    worker = _Worker(OK)
    ingress = MetaSRIngress(worker, LIMITS, 100, 5.0)
    scope = {"type": "http", "method": "POST", "path": "/v1/upscale", "root_path": "", "query_string": b"scale=2",
             "headers": [(b"content-type", b"image/png")]}  # fmt: skip
    sent = []

    async def receive():
        if sent:
            raise TimeoutError("a get timed out")
        sent.append(1)
        return {"type": "http.request", "body": b"p", "more_body": True}

    response = asyncio.run(ingress(Request(scope, receive)))
    assert response.status_code == 500 and json.loads(response.body) == {"error": "internal error"}
    assert worker.calls == [] and _counts(ingress) == (0, 0, 0)
