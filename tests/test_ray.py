"""`metasr serve` and `metasr upscale --engine ray` on a local Ray cluster of 2 simulated nodes (marker `ray`).

One cluster (ray.cluster_utils.Cluster, 2 nodes of 3 logical CPUs) and one service (2 replicas) are shared by
the whole module, so Ray's cold start is paid once. Everything listens on 127.0.0.1 only. Skipped, with the
reason, where the serve extra is not installed.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from conftest import data_path
from hostile import hostile_cases, png_bytes, small_rgb
from metasr.runtime.batch import UpscaleOptions, check_jobs, plan_jobs, run_job
from metasr.runtime.pipeline import Pipeline

pytest.importorskip("ray", reason="the serve extra (ray) is not installed: pip install '.[serve]'")
pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def cluster():
    from metasr.runtime.ray_env import init_ray, no_telemetry_env

    os.environ.update(no_telemetry_env())
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 3, "include_dashboard": False})
    c.add_node(num_cpus=3)
    ray = init_ray(c.address)
    yield c
    ray.shutdown()
    c.shutdown()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def service(cluster, bundled_artifacts):
    """2 replicas of 2 CPUs, small queues (a flood meets 503s), a 4 MiB body limit; yields the base URL."""
    from metasr.runtime.serve_api import ServiceConfig
    from metasr.runtime.serving import DeploymentLimits, ServeOptions, build_app, start_service, stop_service

    port = _free_port()
    config = ServiceConfig(str(bundled_artifacts), max_body_bytes=4 * 2**20)
    limits = DeploymentLimits(replicas=2, cpus_per_replica=2.0, max_ongoing_requests=2, max_queued_requests=4)
    start_service(build_app(config, limits), ServeOptions(port=port, address=cluster.address))
    yield f"http://127.0.0.1:{port}"
    stop_service(embedded=False)


def _exchange(url: str, query: str, body: bytes, ctype: str = "image/png", timeout: float = 60):
    """POST /v1/upscale: (status, body, headers)."""
    req = urllib.request.Request(f"{url}/v1/upscale?{query}", data=body, method="POST")
    if ctype:
        req.add_header("Content-Type", ctype)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read(), r.headers
    except urllib.error.HTTPError as e:
        return e.code, e.read(), e.headers


def _post(url: str, query: str, body: bytes, ctype: str = "image/png", timeout: float = 60) -> tuple[int, bytes]:
    status, data, _ = _exchange(url, query, body, ctype, timeout)
    return status, data


def _one_line_json_error(body: bytes) -> str:
    assert body.startswith(b'{"error":') and b"\n" not in body, body[:300]
    return json.loads(body)["error"]


def _get(url: str, path: str) -> int:
    with urllib.request.urlopen(f"{url}{path}", timeout=30) as r:
        return r.status


def _replica_pids() -> set[int]:
    from ray import serve

    handle = serve.get_deployment_handle("MetaSR", app_name="metasr")
    return {handle.pid.remote().result(timeout_s=30) for _ in range(12)}


def test_service_matches_metasr_upscale(service, bundled_artifacts, tmp_path):
    from metasr.cli import main

    src = data_path("Set5", "butterfly.png")
    for query, args in (("scale=2.5", ["--scale", "2.5"]), ("size=300x200", ["--size", "300x200"])):
        status, body = _post(service, query, src.read_bytes())
        out = tmp_path / "o.png"
        assert main(["upscale", str(src), "-o", str(out), "--artifacts", str(bundled_artifacts), *args]) == 0
        assert status == 200 and body == out.read_bytes()
    assert _get(service, "/healthz") == 200
    with urllib.request.urlopen(f"{service}/v1/models", timeout=30) as r:
        assert json.load(r)["threads"] == 2  # ONNX Runtime threads = the replica's 2 CPUs


def test_hostile_requests_get_4xx_and_the_service_keeps_answering(service):
    good = png_bytes(small_rgb())
    for name, query, ctype, body, status, fragment in hostile_cases(good):
        got, answer = _post(service, urllib.parse.urlencode(query), body, ctype)
        assert got == status and fragment.encode() in answer and answer.startswith(b'{"error":'), (name, answer)
    got, _ = _post(service, "scale=2", b"\x89PNG" + bytes(5 * 2**20))  # over the 4 MiB body limit
    assert got == 413
    try:  # a GET of the POST route: 405 with the Allow header through Ray Serve too
        urllib.request.urlopen(f"{service}/v1/upscale", timeout=30)
        raise AssertionError("GET /v1/upscale answered 2xx")
    except urllib.error.HTTPError as e:
        assert e.code == 405 and e.headers.get("Allow") == "POST", (e.code, dict(e.headers))
    assert _post(service, "scale=2", good)[0] == 200 and _get(service, "/healthz") == 200


def test_bounded_load_on_localhost(service):
    """24 requests at concurrency 2 all succeed with identical bytes; a flood of 24 at once past the bounds
    (2 replicas x 2 ongoing + 4 queued) gets 503s for the excess, never a hang, and the service stays up. Every
    503 is the service's one-line JSON with a Retry-After (before: Ray's proxy answered in plain text)."""
    body = png_bytes(small_rgb(48, 64, seed=3))
    with cf.ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda _: _post(service, "scale=2", body), range(24)))
    assert {s for s, _ in answers} == {200} and len({b for _, b in answers}) == 1
    big = png_bytes(small_rgb(200, 200, seed=4))
    with cf.ThreadPoolExecutor(24) as pool:
        replies = list(pool.map(lambda _: _exchange(service, "scale=3", big), range(24)))
    flood = [s for s, _, _ in replies]
    assert set(flood) <= {200, 503} and flood.count(200) >= 8, flood
    for status, data, headers in replies:
        if status == 503:
            assert "busy" in _one_line_json_error(data) and headers.get("Content-Type") == "application/json"
            assert headers.get("Retry-After", "").isdigit(), dict(headers)
    print(f"flood: {flood.count(200)} x 200, {flood.count(503)} x 503")
    assert _post(service, "scale=2", body) == answers[0]


def test_senders_that_hold_their_body_back_do_not_fill_the_service(service):
    """12 connections (the service holds 8: 2 replicas x 2 ongoing + 4 queued) send their headers and half a
    body, then wait. Before: each was counted in the service from its headers, so the next request got a 503
    until the request timeout (120 s) ended them (found in a review: 72 such clients). Now a request counts from
    the end of its body: the next ones are answered; when the twelve bodies end at once, the 8 places take 8 or
    more of them and the rest get the JSON 503."""
    host, port = urllib.parse.urlsplit(service).netloc.split(":")
    body = png_bytes(small_rgb(48, 64, seed=8))
    head = (f"POST /v1/upscale?scale=2 HTTP/1.1\r\nHost: {host}\r\nContent-Type: image/png\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()  # fmt: skip
    slow = []
    try:
        for _ in range(12):
            conn = socket.create_connection((host, int(port)), timeout=60)
            conn.sendall(head + body[: len(body) // 2])
            slow.append(conn)
        time.sleep(1.0)  # their headers and half bodies are in
        for _ in range(3):
            status, data = _post(service, "scale=2", body)
            assert status == 200 and data.startswith(b"\x89PNG"), (status, data[:200])
        for conn in slow:
            conn.sendall(body[len(body) // 2 :])
        statuses = []
        for conn in slow:
            reply = b""
            while chunk := conn.recv(65536):
                reply += chunk
            statuses.append(int(reply.split(b" ", 2)[1]))
            if statuses[-1] == 503:  # twelve bodies ending at once: those past the 8 places are refused after them
                assert "busy" in _one_line_json_error(reply.split(b"\r\n\r\n", 1)[1])
        assert set(statuses) <= {200, 503} and statuses.count(200) >= 8, statuses
        print(f"slow senders: 3 requests answered while 12 held their bodies back; then {statuses.count(200)} x 200, "
              f"{statuses.count(503)} x 503")  # fmt: skip
    finally:
        for conn in slow:
            conn.close()


def test_a_killed_replica_is_replaced_and_no_request_is_lost(service):
    body = png_bytes(small_rgb(48, 64, seed=5))
    expected = _post(service, "scale=2", body)
    before = _replica_pids()
    assert len(before) == 2
    victim = min(before)
    os.kill(victim, signal.SIGKILL)
    t0, first_try_failures, answers = time.perf_counter(), 0, []
    for _ in range(20):  # a client that retries a 5xx (as any client of a replicated service should)
        for _attempt in range(5):
            status, data = _post(service, "scale=2", body)
            if status < 500:
                break
            first_try_failures += 1
            time.sleep(0.5)
        answers.append((status, data))
    assert all(a == expected for a in answers)
    deadline = time.time() + 60
    while time.time() < deadline:
        after = _replica_pids()
        if len(after) == 2 and victim not in after:
            break
        time.sleep(0.5)
    assert len(after) == 2 and victim not in after
    print(f"replica killed: 20/20 answered, {first_try_failures} retried 5xx, replaced in "
          f"{time.perf_counter() - t0:.1f} s")  # fmt: skip


def test_a_request_past_the_timeout_gets_a_json_408_and_the_service_goes_on(service, bundled_artifacts):
    """Before: Ray's proxy answered 408 in plain text (never triggered in a test). A second application beside the
    service (1 replica of 1 CPU, a 0.5 s request timeout, under /slow) gets 3 upscales of ~1.8 s each at once: each
    is a one-line JSON 408 at about the timeout (the 2 not started are cancelled before they start); /healthz
    answers at once, and an upscale answers again once the one already running has finished."""
    from metasr.runtime.serve_api import ServiceConfig
    from metasr.runtime.serving import DeploymentLimits, build_app
    from ray import serve

    app = build_app(ServiceConfig(str(bundled_artifacts)), DeploymentLimits(replicas=1))
    serve.run(app.application(request_timeout_s=0.5), name="metasr-slow", route_prefix="/slow", blocking=False)
    try:
        url = f"{service}/slow"
        big = png_bytes(small_rgb(768, 768, seed=6))  # x3: 2304x2304, ~1.8 s on one quiet core

        def timed(_):
            t0 = time.perf_counter()
            status, data, _ = _exchange(url, "scale=3", big)
            return status, data, time.perf_counter() - t0

        with cf.ThreadPoolExecutor(3) as pool:
            slow = list(pool.map(timed, range(3)))
        for status, data, seconds in slow:
            assert status == 408 and "within 0.5 s" in _one_line_json_error(data), (status, data[:200])
            assert seconds < 10, seconds  # the service's timeout, not the upscales' end nor Ray's backstop (132 s)
        t0 = time.perf_counter()
        assert _get(url, "/healthz") == 200
        small = png_bytes(small_rgb(48, 64, seed=7))
        for _ in range(120):  # 408 while the running upscale holds the replica, then answered
            status, data = _post(url, "scale=2", small)
            if status == 200:
                break
            assert status == 408 and "within 0.5 s" in _one_line_json_error(data), (status, data[:200])
        assert status == 200 and data.startswith(b"\x89PNG")
        print(f"timeout: 3 x 408 in {max(s for _, _, s in slow):.2f} s at most, an upscale answered again "
              f"{time.perf_counter() - t0:.1f} s later")  # fmt: skip
    finally:
        serve.delete("metasr-slow")
    assert _get(service, "/healthz") == 200


# -- the batch engine ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """12 inputs: Set5 and 7 of Set14 (copied: the originals are read-only)."""
    d = tmp_path_factory.mktemp("inputs")
    for p in sorted(data_path("Set5").glob("*.png")) + sorted(data_path("Set14").glob("*.png"))[:7]:
        shutil.copy(p, d / p.name)
    return d


@pytest.fixture(scope="module")
def local_outputs(images, bundled_artifacts, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("local")
    opts = UpscaleOptions(scale=2.0)
    with Pipeline(bundled_artifacts, threads=1) as p:
        for c in check_jobs(plan_jobs([str(images)], f"{out}/"), p, opts):
            run_job(p, c, opts)
    return out


def _checked(images: Path, out: Path, bundled_artifacts: Path):
    opts = UpscaleOptions(scale=2.0)
    with Pipeline(bundled_artifacts, threads=1) as p:
        return check_jobs(plan_jobs([str(images)], f"{out}/"), p, opts), opts


def _same_dirs(a: Path, b: Path) -> None:
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir())  # nothing missing, nothing extra (no temporaries)
    for n in names:
        assert (a / n).read_bytes() == (b / n).read_bytes(), n


def test_batch_with_a_killed_actor_loses_and_duplicates_nothing(cluster, images, local_outputs, bundled_artifacts,
                                                                tmp_path):  # fmt: skip
    from metasr.runtime.ray_batch import RayJobConfig, run_ray_jobs

    checked, opts = _checked(images, tmp_path / "ray", bundled_artifacts)
    results, killed = [], None
    for r in run_ray_jobs(checked, RayJobConfig(str(bundled_artifacts), workers=2, address=cluster.address), opts):
        results.append(r)
        if killed is None:  # kill the actor that wrote the first output: its next jobs are in flight
            killed = r.pid
            os.kill(killed, signal.SIGKILL)
    assert sorted(r.target for r in results) == sorted(str(c.job.target) for c in checked)  # each once
    assert any(r.pid not in (killed,) for r in results[1:])
    _same_dirs(tmp_path / "ray", local_outputs)
    print(f"batch: {len(results)} outputs from actors {sorted({r.pid for r in results})}, killed {killed}")


def test_batch_survives_more_worker_deaths_than_the_per_job_limit(cluster, images, local_outputs,
                                                                    bundled_artifacts, tmp_path):  # fmt: skip
    """The retry limit is per job: one worker killed after each of its first MAX_ATTEMPTS + 1 outputs (each death
    during a different job) is restarted every time, and the run writes every output once."""
    from metasr.runtime.ray_batch import MAX_ATTEMPTS, RayJobConfig, run_ray_jobs

    checked, opts = _checked(images, tmp_path / "ray", bundled_artifacts)
    config = RayJobConfig(str(bundled_artifacts), workers=1, address=cluster.address)
    results, kills = [], []
    for r in run_ray_jobs(checked, config, opts):
        results.append(r)
        if len(kills) <= MAX_ATTEMPTS and r.pid not in kills:
            kills.append(r.pid)
            os.kill(r.pid, signal.SIGKILL)
    assert len(kills) == MAX_ATTEMPTS + 1, kills
    assert sorted(r.target for r in results) == sorted(str(c.job.target) for c in checked)
    _same_dirs(tmp_path / "ray", local_outputs)


def test_batch_whose_workers_always_die_stops_with_one_line(cluster, images, bundled_artifacts, tmp_path):
    """Before: Ray Data's actor defaults (max_restarts=-1, max_task_retries=-1) retried a job whose worker dies
    every time for ever (the run never ended). Every upscaler actor of this cluster is killed as soon as it is
    alive: the run must stop with one ImageError line, within the deadline, leaving no partial file."""
    import threading

    from metasr.runtime.image_io import ImageError
    from metasr.runtime.ray_batch import MAX_ATTEMPTS, RayJobConfig, run_ray_jobs
    from ray._private import state  # internal, test-only: the actor table's pids (the cluster has no dashboard)

    checked, opts = _checked(images, tmp_path / "ray", bundled_artifacts)
    stop, kills = threading.Event(), []

    def killer() -> None:
        while not stop.is_set():
            for a in state.actors().values():
                if "MetaSRUpscaler" in a["ActorClassName"] and a["State"] == "ALIVE" and a["Pid"] not in kills:
                    kills.append(a["Pid"])
                    try:
                        os.kill(a["Pid"], signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            time.sleep(0.2)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    outcome: list[object] = []

    def run() -> None:
        try:
            config = RayJobConfig(str(bundled_artifacts), workers=1, address=cluster.address)
            outcome.append(list(run_ray_jobs(checked[:2], config, opts)))
        except Exception as e:  # inspected below
            outcome.append(e)

    runner = threading.Thread(target=run, daemon=True)
    runner.start()
    runner.join(timeout=240)
    stop.set()
    assert not runner.is_alive(), f"the run did not end within 240 s ({len(kills)} workers killed)"
    assert isinstance(outcome[0], ImageError), str(outcome)[:300]
    assert f"worker died {MAX_ATTEMPTS} times" in str(outcome[0]) and "\n" not in str(outcome[0]), outcome[0]
    out = tmp_path / "ray"
    visible = [p for p in out.glob("*") if not p.name.startswith(".")] if out.exists() else []
    assert all(p.name in {c.job.target.name for c in checked[:2]} for p in visible), visible
    # a killed writer leaves only its hidden temporary (.NAME.<pid>-<random>.tmp); the re-run's write of that
    # output removes it, and writes every output whole
    config = RayJobConfig(str(bundled_artifacts), workers=1, address=cluster.address)
    assert len(list(run_ray_jobs(checked[:2], config, opts))) == 2
    assert sorted(p.name for p in out.glob("*")) == sorted(c.job.target.name for c in checked[:2])
    print(f"poison run: stopped after {len(kills)} kills: {outcome[0]}")


def test_batch_cli_resumes_past_complete_outputs(cluster, images, local_outputs, bundled_artifacts, tmp_path):
    """The command line on the cluster (--address): a re-run writes only what is missing or incomplete."""
    out = tmp_path / "cli"
    shutil.copytree(local_outputs, out)
    (out / "baby.png").unlink()  # missing
    (out / "bird.png").write_bytes((out / "bird.png").read_bytes()[:1000])  # a partial file from elsewhere
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    cmd = [sys.executable, "-m", "metasr.cli", "upscale", str(images), "-o", f"{out}/", "--scale", "2",
           "--artifacts", str(bundled_artifacts), "--engine", "ray", "--address", cluster.address,
           "--workers", "2"]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"10 of {len(list(images.iterdir()))} outputs already complete: skipped" in done.stderr
    written = [line for line in done.stdout.splitlines() if line.startswith(str(out))]
    assert sorted(Path(w.split(" (")[0]).name for w in written) == ["baby.png", "bird.png"], done.stdout
    _same_dirs(out, local_outputs)


def test_serve_command_starts_embedded_ray_and_stops_on_sigterm(bundled_artifacts):
    """`metasr serve` without --address: an embedded Ray; SIGTERM shuts the service down and exits 143."""
    import queue
    import threading

    from metasr.runtime.serving import check_port

    port = _free_port()
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    cmd = [sys.executable, "-m", "metasr.cli", "serve", "--artifacts", str(bundled_artifacts), "--port", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    try:
        deadline = time.time() + 180
        while time.time() < deadline:
            try:
                if "listening on" in lines.get(timeout=1):
                    break
            except queue.Empty:
                assert proc.poll() is None, proc.stderr.read()[-2000:]
        url = f"http://127.0.0.1:{port}"
        assert _get(url, "/healthz") == 200
        assert _post(url, "scale=2", png_bytes(small_rgb()))[0] == 200
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    err = proc.stderr.read()
    assert code == 143, err[-2000:]
    assert "metasr: terminated" in err and "SIGTERM received" not in err  # no stack dump from Ray's handler
    check_port("127.0.0.1", port)  # the port is free again
