"""``metasr view``'s server without a browser: the fixed route table (no directory traversal), 127.0.0.1 only,
the headers that isolate the page, a busy port, the option ranges and the install hint, each as one line."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import one_line_error, write_manifest

from metasr.cli import main
from metasr.view import (
    GRAPHS,
    HEADERS,
    IDLE_TIMEOUT_S,
    ORT_DIST,
    Site,
    ViewError,
    ViewServer,
    load_site,
    port_free,
    vendor_files,
)


@pytest.fixture
def server(tmp_path):
    page = tmp_path / "index.html"
    page.write_text("<!doctype html><title>page</title>")
    (tmp_path / "secret.txt").write_text("not served")
    site = Site({"/": ("text/html", page), "/vendor/a.mjs": ("text/javascript", b"export {}"),
                 "/artifacts/feature.onnx": ("application/octet-stream", b"graph")})  # fmt: skip
    with ViewServer(site, 0).start() as s:
        yield s


def _get(server: ViewServer, path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    host, port = server.url.removeprefix("http://").rstrip("/").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.putrequest(method, path, skip_accept_encoding=True)  # the path sent as it is, never normalised
    conn.endheaders()
    r = conn.getresponse()
    body = r.read()
    conn.close()
    return r.status, dict(r.getheaders()), body


def test_serves_its_routes_on_localhost_with_isolation_headers(server):
    assert server.url.startswith("http://127.0.0.1:")
    status, headers, body = _get(server, "/")
    assert status == 200 and b"<title>page" in body
    for name, value in HEADERS.items():  # COOP/COEP (threaded wasm), a CSP with connect-src 'self' only
        assert headers[name] == value
    assert "connect-src 'self'" in headers["Content-Security-Policy"]
    assert _get(server, "/artifacts/feature.onnx")[2] == b"graph"
    assert _get(server, "/", "HEAD")[2] == b""


@pytest.mark.parametrize(
    "path",
    ["/secret.txt", "/../secret.txt", "/vendor/../secret.txt", "/vendor/..%2fsecret.txt", "/%2e%2e/secret.txt",
     "/artifacts/manifest.json", "/artifacts/../index.html", "//etc/passwd", "/vendor/a.mjs/..", "/index.html/"],
)  # fmt: skip
def test_nothing_outside_the_route_table(server, path):
    status, _, body = _get(server, path)
    assert status == 404 and body == b"not found\n", (path, status)


def test_port_in_use_is_one_line_error(server):
    port = int(server.url.rstrip("/").rsplit(":", 1)[1])
    assert not port_free(port)
    with pytest.raises(ViewError, match=rf"^port {port} on 127.0.0.1 is in use: pick another with --port$"):
        ViewServer(Site({}), port)


@pytest.mark.parametrize("port", ["70000", "-1", "http", "8080.5"])
def test_port_range_checked(capsys, port):
    assert "--port" in one_line_error(capsys, main(["view", "--port", port]))


def test_missing_runtime_names_the_install_command(tmp_path, capsys):
    with pytest.raises(ViewError, match=r"npm ci --ignore-scripts --prefix .*metasr/web"):
        vendor_files(tmp_path)
    if not (ORT_DIST / "ort.all.min.mjs").exists():  # the command says the same, in one line
        assert "npm ci --ignore-scripts" in one_line_error(capsys, main(["view", "--artifacts", str(tmp_path)]))


def test_artifacts_without_portable_graphs_refused_in_one_line(bundled_artifacts, tmp_path):
    import shutil

    art = tmp_path / "art"
    shutil.copytree(bundled_artifacts, art)
    from metasr.runtime.manifest import Manifest

    data = json.loads((art / "manifest.json").read_text())
    data["graphs"] = [g for g in data["graphs"] if g["file"] != GRAPHS["scale"]]  # an export without it
    write_manifest(art, data)
    if not (ORT_DIST / "ort.all.min.mjs").exists():
        pytest.skip(f"onnxruntime-web not installed ({ORT_DIST} missing): npm ci --ignore-scripts --prefix metasr/web")
    with pytest.raises(Exception, match=r"has no upscale\.portable\.onnx\b.*export again") as e:
        load_site(art)
    assert "\n" not in str(e.value)
    assert Manifest.read(art)  # the folder itself stays valid


def view_artifacts(bundled_artifacts: Path) -> Path:
    """The bundled export, which must hold the graphs the page loads; skips (with the command) when
    onnxruntime-web is not installed."""
    from metasr.runtime.manifest import Manifest

    files = {g.file for g in Manifest.read(bundled_artifacts).graphs}
    assert all(f in files for f in GRAPHS.values()), f"the export lacks some of {list(GRAPHS.values())}"
    if not (ORT_DIST / "ort.all.min.mjs").exists():
        pytest.skip(f"onnxruntime-web not installed ({ORT_DIST} missing): npm ci --ignore-scripts --prefix metasr/web")
    return bundled_artifacts


def test_command_prints_url_and_exits_cleanly_on_ctrl_c(bundled_artifacts):
    art = view_artifacts(bundled_artifacts)
    cmd = [sys.executable, "-m", "metasr.cli", "view", "--artifacts", str(art), "--port", "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy())
    try:
        line = proc.stdout.readline()
        assert line.startswith("metasr view: serving ") and "http://127.0.0.1:" in line, line
        url = line.split(" at ", 1)[1].split(" ", 1)[0]
        host, port = url.removeprefix("http://").rstrip("/").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        conn.request("GET", "/config.json")
        assert conn.getresponse().status == 200
        conn.close()
        time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130 and err.strip() == "metasr: interrupted", err
    assert port_free(int(port))  # the socket is closed


def _raw(server: ViewServer, request: bytes, read: bool = True) -> bytes:
    port = int(server.url.rstrip("/").rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(request)
        chunks = []
        while read and (chunk := s.recv(65536)):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.parametrize(
    ("host", "status"),
    [
        ("evil.example", 403),
        ("evil.example:{port}", 403),
        ("127.0.0.1.evil.example:{port}", 403),
        ("localhost:1", 403),
        ("127.0.0.1:{port}", 200),
        ("LOCALHOST:{port}", 200),
        (None, 200),
    ],
)
def test_other_host_names_are_refused(server, host, status):
    """DNS rebinding: a page whose own name resolves to 127.0.0.1 sends its name as Host (it was served: 200)."""
    port = server.url.rstrip("/").rsplit(":", 1)[1]
    head = b"" if host is None else f"Host: {host.format(port=port)}\r\n".encode()
    reply = _raw(server, b"GET /artifacts/feature.onnx HTTP/1.0\r\n" + head + b"\r\n")
    assert reply.startswith(f"HTTP/1.0 {status} ".encode()), reply[:80]
    assert reply.endswith(b"graph") == (status == 200)


def test_other_methods_and_bad_requests_are_one_plain_line_with_the_headers(server):
    for request, status in ((b"POST / HTTP/1.0\r\nContent-Length: 2\r\n\r\nhi", 501),
                            (b"GET /" + b"a" * 70_000 + b" HTTP/1.0\r\n\r\n", 414),
                            (b"GET / HTTP/1.0\r\nX: " + b"y" * 70_000 + b"\r\n\r\n", 431)):  # fmt: skip
        head, _, body = _raw(server, request).partition(b"\r\n\r\n")
        assert head.startswith(f"HTTP/1.0 {status} ".encode()), head[:80]
        assert b"text/plain" in head and b"Cross-Origin-Embedder-Policy: require-corp" in head
        assert body.count(b"\n") == 1 and body.startswith(str(status).encode())  # was a 500-byte HTML page


def test_a_client_gone_mid_response_prints_nothing(tmp_path, capfd):
    """A browser leaving while a graph downloads: the standard library printed a BrokenPipeError traceback."""
    site = Site({"/big": ("application/octet-stream", bytes(32 * 2**20))})
    with ViewServer(site, 0).start() as s:
        for _ in range(3):
            _raw(s, b"GET /big HTTP/1.0\r\n\r\n", read=False)  # closes at once, 32 MiB unread
        assert _get(s, "/big")[0] == 200  # still serving
    assert capfd.readouterr().err == ""


def test_an_idle_connection_is_closed(server, monkeypatch):
    """Each connection holds a thread: one that never sends its request is dropped after IDLE_TIMEOUT_S."""
    assert server._httpd.RequestHandlerClass.timeout == IDLE_TIMEOUT_S == 30  # was None: held for ever
    monkeypatch.setattr(server._httpd.RequestHandlerClass, "timeout", 0.5)
    t0 = time.monotonic()
    assert _raw(server, b"GET / HTTP/1.1\r\n") == b""  # closed by the server, no answer
    assert time.monotonic() - t0 < 5
