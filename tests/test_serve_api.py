"""The upscale service's HTTP contract without a server (metasr.runtime.serve_api; no Ray needed), the replica of
`metasr serve` driven directly without a cluster (metasr.runtime.serving: Ray imported, not started; its ingress:
tests/test_serve_ingress.py), and the `metasr serve` / `--engine ray` command lines' refusals before anything
starts."""

from __future__ import annotations

import asyncio
import importlib.util
import io
import json
import socket
import time

import pytest
from conftest import data_path, one_line_error
from hostile import grey16_png, hostile_cases, png_bytes, small_rgb
from metasr.runtime.batch import UpscaleOptions, upscale_bytes
from metasr.runtime.pipeline import Pipeline
from metasr.runtime.serve_api import ServiceConfig, Upscaler
from PIL import Image

from metasr.cli import main


@pytest.fixture(scope="module")
def service(bundled_artifacts):
    s = Upscaler(ServiceConfig(str(bundled_artifacts), max_body_bytes=4 * 2**20), threads=1)
    yield s
    s.close()


def _error(reply) -> str:
    assert reply.media_type == "application/json"
    assert b"\n" not in reply.body
    return json.loads(reply.body)["error"]


def test_upscale_equals_the_file_path(bundled_artifacts, tmp_path):
    """The reply is byte for byte what `metasr upscale` writes for the same image and scale / size, under the same
    memory bound. (The plan counts this process's resident memory, which grows during the suite; with the default
    2048 MiB both sides could cut different tiles, equal only to float32 rounding: one CI run's PNGs differed. At
    8192 MiB the upscale tile is the fixed --upscale-budget-mb on both sides.)"""
    src = data_path("Set5", "bird.png")
    body = src.read_bytes()
    service = Upscaler(ServiceConfig(str(bundled_artifacts), memory_mb=8192), threads=1)
    try:
        for query, args in (({"scale": "2.5"}, ["--scale", "2.5"]), ({"size": "500x300"}, ["--size", "500x300"])):
            reply = service.handle("POST", "/v1/upscale", query, "image/png", body)
            assert reply.status == 200 and reply.media_type == "image/png", reply.body[:200]
            out = tmp_path / f"{next(iter(query))}.png"
            cli = ["upscale", str(src), "-o", str(out), "--artifacts", str(bundled_artifacts), "--memory-mb", "8192"]
            assert main([*cli, *args]) == 0
            assert reply.body == out.read_bytes()
            assert reply.log.startswith("POST /v1/upscale 200") and " ms" in reply.log and "\n" not in reply.log
    finally:
        service.close()


def test_16_bit_grey_comes_back_16_bit(service, bundled_artifacts):
    body = grey16_png()
    reply = service.handle("POST", "/v1/upscale", {"scale": "2"}, "image/png", body)
    assert reply.status == 200
    with Pipeline(bundled_artifacts) as p:
        expected, _, _ = upscale_bytes(p, body, UpscaleOptions(scale=2.0, max_pixels=16_777_216), "PNG", "image")
    assert reply.body == expected
    assert Image.open(io.BytesIO(reply.body)).mode == "I;16"


@pytest.mark.parametrize("case", range(20))
def test_hostile_requests_get_one_line_4xx(service, case):
    good = png_bytes(small_rgb())
    name, query, ctype, body, status, fragment = hostile_cases(good)[case]
    reply = service.handle("POST", "/v1/upscale", query, ctype, body)
    assert reply.status == status, (name, reply.body)
    assert fragment in _error(reply), (name, reply.body)
    assert " object at 0x" not in _error(reply), (name, reply.body)  # was in "not a readable image" replies
    assert service.handle("GET", "/healthz", {}, "", b"").status == 200  # still answering


def test_limits_and_routes(service):
    big = b"\x89PNG" + bytes(4 * 2**20)
    assert service.handle("POST", "/v1/upscale", {"scale": "2"}, "image/png", big).status == 413
    wrong = service.handle("GET", "/v1/upscale", {}, "", b"")
    assert wrong.status == 405 and dict(wrong.headers) == {"Allow": "POST"}  # RFC 9110: a 405 names the methods
    assert service.handle("GET", "/nope", {}, "", b"").status == 404
    models = json.loads(service.handle("GET", "/v1/models", {}, "", b"").body)
    assert models["model"]["name"] == "small" and models["precisions"] == ["fp32"] and models["scales"]["max"] == 4.0


def test_formats(service):
    body = png_bytes(small_rgb())
    for fmt, magic in (("jpeg", b"\xff\xd8"), ("webp", b"RIFF"), ("png", b"\x89PNG"), ("bmp", b"BM")):
        reply = service.handle("POST", "/v1/upscale", {"scale": "2", "format": fmt}, "image/png", body)
        assert reply.status == 200 and reply.body.startswith(magic) and reply.media_type.startswith("image/")


def test_config_is_range_checked(bundled_artifacts):
    for bad in ({"precisions": ()}, {"precisions": ("int4",)}, {"max_body_bytes": 0}, {"max_pixels": 0},
                {"memory_mb": float("nan")}):  # fmt: skip
        with pytest.raises(ValueError):
            ServiceConfig(str(bundled_artifacts), **bad)


def test_serve_without_ray_names_the_extra(monkeypatch, capsys, bundled_artifacts):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    code = main(["serve", "--artifacts", str(bundled_artifacts)])
    msg = one_line_error(capsys, code)
    assert "metasr serve needs ray" in msg and "pip install 'metasr[serve]'" in msg
    code = main(["upscale", str(data_path("Set5", "bird.png")), "-o", "x/", "--scale", "2", "--engine", "ray"])
    assert "metasr upscale needs ray" in one_line_error(capsys, code)


def test_serve_refuses_bad_options_in_one_line(capsys, bundled_artifacts, tmp_path):
    pytest.importorskip("ray", reason="the serve extra (ray) is not installed")
    for args in (["--port", "0"], ["--port", "70000"], ["--replicas", "0"], ["--request-timeout", "nan"],
                 ["--max-body-mb", "-1"], ["--cpus-per-replica", "0"], ["--artifacts", str(tmp_path)]):  # fmt: skip
        one_line_error(capsys, main(["serve", *args]))
    with socket.socket() as s:  # a port in use: refused before Ray starts
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        msg = one_line_error(capsys, main(["serve", "--artifacts", str(bundled_artifacts), "--port", str(port)]))
        assert f"cannot listen on 127.0.0.1:{port}" in msg


def test_an_address_where_no_cluster_listens_is_refused_at_once(capsys, bundled_artifacts, tmp_path):
    """Ray's client retried for minutes (`--address 127.0.0.1:1` ran past 150 s with GCS warnings)."""
    pytest.importorskip("ray", reason="the serve extra (ray) is not installed")
    with socket.socket() as s, socket.socket() as free:  # a port nothing listens on (bound, never listening)
        s.bind(("127.0.0.1", 0))
        free.bind(("127.0.0.1", 0))
        address, port = f"127.0.0.1:{s.getsockname()[1]}", str(free.getsockname()[1])
        free.close()  # the port serve would listen on
        src = str(data_path("Set5", "bird.png"))
        for args in (["upscale", src, "-o", str(tmp_path / "out") + "/", "--scale", "2", "--engine", "ray"],
                     ["serve", "--port", port]):  # fmt: skip
            t0 = time.monotonic()
            code = main([*args, "--artifacts", str(bundled_artifacts), "--address", address])
            out, err = capsys.readouterr()
            assert code == 2 and err.count("\n") == 1 and f"no Ray cluster answers at {address}" in err, err
            assert out == ""  # serve printed "metasr serve: shutting down" when nothing had started
            assert time.monotonic() - t0 < 60  # a bound on a hang, not a speed figure
    assert not (tmp_path / "out").exists()


def test_address_and_workers_need_the_ray_engine(capsys, tmp_path):
    src = str(data_path("Set5", "bird.png"))
    code = main(["upscale", src, "-o", str(tmp_path / "o.png"), "--scale", "2", "--workers", "2"])
    msg = one_line_error(capsys, code)
    assert "--engine ray" in msg
    assert not (tmp_path / "o.png").exists()


def test_an_internal_fault_is_a_one_line_500(service, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr("metasr.runtime.serve_api.upscale_bytes", broken)
    reply = service.handle("POST", "/v1/upscale", {"scale": "2"}, "image/png", png_bytes(small_rgb()))
    assert reply.status == 500 and _error(reply) == "internal error"


def test_an_image_over_the_memory_bound_is_a_413(bundled_artifacts):
    """memory_mb=128 is below what this test process already holds (PyTorch is loaded): every image is refused
    before decoding, with the number, as `metasr upscale --memory-mb` refuses it."""
    s = Upscaler(ServiceConfig(str(bundled_artifacts), memory_mb=128), threads=1)
    try:
        reply = s.handle("POST", "/v1/upscale", {"scale": "2"}, "image/png", png_bytes(small_rgb()))
    finally:
        s.close()
    assert reply.status == 413 and "MiB" in _error(reply), reply.body


def test_empty_parameters_are_refused_and_the_log_has_the_exact_scale(service):
    """Before: ``precision=`` and ``format=`` silently meant the defaults, and scale=1.0000001 was logged as
    "scale 1"."""
    body = png_bytes(small_rgb())
    for key in ("precision", "format", "scale", "size"):
        query = {"scale": "2", key: ""} if key not in ("scale", "size") else {key: ""}
        reply = service.handle("POST", "/v1/upscale", query, "image/png", body)
        assert reply.status == 400 and f"{key} is empty" in _error(reply), (key, reply.body)
    reply = service.handle("POST", "/v1/upscale", {"scale": "1.0000001"}, "image/png", body)
    assert reply.status == 200 and "scale 1.0000001 " in reply.log, reply.log


def test_a_replica_runs_one_upscale_at_a_time_and_never_starts_a_cancelled_one():
    """The 408's cancellation in the replica: an upscale waiting for its turn never runs; one already running
    keeps the turn until its thread returns (ONNX Runtime's call cannot be stopped); a GET never waits behind an
    upscale."""
    pytest.importorskip("ray", reason="the serve extra (ray) is not installed")
    import threading

    from metasr.runtime.serve_api import Reply
    from metasr.runtime.serving import MetaSRReplica

    ran, release = [], threading.Event()

    class Stub:
        def handle(self, method, path, query, content_type, body, cancelled=None):
            ran.append(body)
            if body == b"first":
                release.wait(10)  # a running upscale that does not look at ``cancelled`` (one long band)
            return Reply(200, "text/plain", body, f"{method} {path} 200")

        def refusal(self, *request):
            return None

    replica = object.__new__(MetaSRReplica)  # no Ray runtime here: __init__ asks Ray for the replica's CPUs
    replica.service, replica._turn = Stub(), asyncio.Lock()

    async def scenario():
        first = asyncio.ensure_future(replica.answer("POST", "/v1/upscale", {}, "image/png", b"first"))
        await asyncio.sleep(0.2)
        second = asyncio.ensure_future(replica.answer("POST", "/v1/upscale", {}, "image/png", b"second"))
        await asyncio.sleep(0.2)
        assert (await asyncio.wait_for(replica.answer("GET", "/healthz", {}, "", b"get"), 5)).body == b"get"
        first.cancel()  # running: its thread goes on, and keeps the turn
        second.cancel()  # waiting for its turn: never runs
        third = asyncio.ensure_future(replica.answer("POST", "/v1/upscale", {}, "image/png", b"third"))
        await asyncio.sleep(0.2)
        assert ran == [b"first", b"get"] and not third.done()  # the third waits for the first's thread
        release.set()
        assert (await asyncio.wait_for(third, 5)).body == b"third"
        for task in (first, second):
            with pytest.raises(asyncio.CancelledError):
                await task

    asyncio.run(scenario())
    assert ran == [b"first", b"get", b"third"]


def test_a_cancelled_upscale_stops_at_its_next_band_and_a_bad_request_does_not_wait():
    """Cancelled while running (its request timed out, its client left), an upscale stops before its next band
    (``Upscaler.handle``'s ``cancelled``), so the next one starts then, not when the whole image would have ended;
    a request refused on its query is answered while another upscale holds the turn."""
    pytest.importorskip("ray", reason="the serve extra (ray) is not installed")
    from metasr.runtime.serve_api import Reply
    from metasr.runtime.serving import MetaSRReplica

    bands = []

    class Stub:
        def handle(self, method, path, query, content_type, body, cancelled=None):
            for band in range(200):  # 200 bands of 20 ms: 4 s if never cancelled
                if cancelled is not None and cancelled():
                    return Reply(408, "application/json", b"{}", "cancelled")
                bands.append((body, band))
                time.sleep(0.02)
            return Reply(200, "text/plain", body, f"{method} {path} 200")

        def refusal(self, method, path, query, content_type, body):
            return Reply(400, "application/json", b'{"error":"bad scale"}', "400") if body == b"bad" else None

    replica = object.__new__(MetaSRReplica)
    replica.service, replica._turn = Stub(), asyncio.Lock()

    async def scenario():
        first = asyncio.ensure_future(replica.answer("POST", "/v1/upscale", {}, "image/png", b"first"))
        await asyncio.sleep(0.2)
        bad = await asyncio.wait_for(replica.answer("POST", "/v1/upscale", {}, "image/png", b"bad"), 5)
        assert bad.status == 400 and not first.done()  # answered while the first still holds the turn
        first.cancel()
        second = await asyncio.wait_for(replica.answer("POST", "/v1/upscale", {}, "image/png", b"second"), 10)
        assert second.status == 200
        with pytest.raises(asyncio.CancelledError):
            await first

    asyncio.run(scenario())
    first_bands = sum(1 for body, _ in bands if body == b"first")
    assert first_bands < 50, first_bands  # stopped after the cancel (about 10 bands in), not 200
    # one upscale at a time: the second's 200 bands all after the first's last one
    assert [body for body, _ in bands] == [b"first"] * first_bands + [b"second"] * 200


def test_upscale_bytes_stops_between_bands_when_cancelled(bundled_artifacts):
    """``cancelled`` is asked before each output band: the upscale raises UpscaleCancelled at the first band it
    says so, having computed only the bands before."""
    from metasr.runtime.batch import UpscaleCancelled

    data = png_bytes(small_rgb(300, 200, seed=9))
    asked = []

    def cancelled() -> bool:
        asked.append(1)
        return len(asked) >= 3

    with Pipeline(bundled_artifacts, threads=1) as p:
        opts = UpscaleOptions(scale=4.0, upscale_budget_mb=4)  # small tiles: many bands
        with pytest.raises(UpscaleCancelled):
            upscale_bytes(p, data, opts, "PNG", "x", cancelled)
        assert len(asked) == 3
        full, _, _ = upscale_bytes(p, data, opts, "PNG", "x", lambda: False)  # never cancelled: the whole image
        assert full == upscale_bytes(p, data, opts, "PNG", "x")[0]


def test_an_upscale_cancelled_in_the_service_is_a_408_nobody_reads(service):
    body = png_bytes(small_rgb(64, 48, seed=2))
    reply = service.handle("POST", "/v1/upscale", {"scale": "2"}, "image/png", body, lambda: True)
    assert reply.status == 408 and "cancelled" in _error(reply)
    assert service.refusal("POST", "/v1/upscale", {"scale": "2"}, "image/png", body) is None
    refused = service.refusal("POST", "/v1/upscale", {"scale": "abc"}, "image/png", body)
    assert refused.status == 400 and refused.log.startswith("POST /v1/upscale 400")
    assert service.refusal("GET", "/v1/upscale", {}, "", b"").status == 405
