"""The ingress of `metasr serve` (metasr.runtime.serve_ingress.MetaSRIngress) against slow and heavy senders, driven
without a cluster (Ray imported, not started) with the stand-in replica of tests/test_serve_api.py.

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

from tests.test_serve_api import _Worker, ingress_post

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
