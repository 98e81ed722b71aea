"""``metasr view``: the continuous-zoom page and the files it needs, served on 127.0.0.1 only.

The page (``metasr/web/index.html``, ``view.js``, ``view.css``) runs the model in the browser with
onnxruntime-web, vendored from npm into ``metasr/web/node_modules`` (``npm ci --ignore-scripts --prefix
metasr/web``; nothing is ever fetched from a CDN). It runs ``feature.onnx`` once per image and
``upscale.portable.onnx`` (a scale) or ``upscale.portable.size.onnx`` (an exact size) per slider move.

Contract of the server (:class:`ViewServer`): a fixed route table, nothing else:

- ``/``, ``/view.js``, ``/view.css``: the page;
- ``/vendor/NAME``: the runtime's ``.mjs`` / ``.wasm`` files from ``onnxruntime-web/dist`` (names checked
  against the folder's listing at start, never joined to a path from the request);
- ``/config.json``: the graph URLs, scale range, channel count and the page's input limit;
- ``/artifacts/NAME``: the three graphs, read once at start through :func:`metasr.runtime.manifest.read_consistent`
  (their sha256 checked against the manifest) and served from memory.

Any other path (``/../``, ``/artifacts/manifest.json``, ``/vendor/../package.json``) is a 404. A request whose
``Host`` is not ``127.0.0.1`` / ``localhost`` (on this port) is a 403: a web page whose own name an attacker
re-points at 127.0.0.1 (DNS rebinding) cannot read the server. Other methods are 501, oversized request lines
and headers 414/431 (the standard library's limits), each a one-line plain-text body; an idle connection is
closed after ``IDLE_TIMEOUT_S``; a client that goes away mid-response is ignored (no traceback). Responses carry
``Cross-Origin-Opener-Policy`` / ``Cross-Origin-Embedder-Policy`` (threaded wasm needs a cross-origin isolated
page) and a Content-Security-Policy that allows connections to this origin only, so the page cannot reach
the network. Standard library only (plus the manifest reader).
"""

from __future__ import annotations

import http.server
import json
import socket
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from metasr.runtime.manifest import Manifest, ManifestError, read_consistent

__all__ = [
    "GRAPHS",
    "MAX_INPUT_PIXELS",
    "WEB_DIR",
    "ViewError",
    "ViewServer",
    "load_site",
    "vendor_files",
]

WEB_DIR = Path(__file__).resolve().parent / "web"
ORT_DIST = WEB_DIR / "node_modules" / "onnxruntime-web" / "dist"
INSTALL_HINT = f"npm ci --ignore-scripts --prefix {WEB_DIR}"
# what the page runs, by role: the feature graph once, one of the portable upscale graphs per move
GRAPHS = {"feature": "feature.onnx", "scale": "upscale.portable.onnx", "size": "upscale.portable.size.onnx"}
# the largest input the page accepts (LR pixels); see docs/view.md for the wasm time and memory behind it
MAX_INPUT_PIXELS = 512 * 512
# seconds a connection may sit without sending its request before it is closed (each holds a thread)
IDLE_TIMEOUT_S = 30
LOCAL_HOSTS = ("127.0.0.1", "localhost")
PAGE_FILES = {"/": "index.html", "/view.js": "view.js", "/view.css": "view.css"}
TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
         ".mjs": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
         ".wasm": "application/wasm", ".json": "application/json", ".onnx": "application/octet-stream"}  # fmt: skip
HEADERS = {
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Content-Security-Policy": "default-src 'self'; script-src 'self' 'wasm-unsafe-eval' blob:; "
    "worker-src 'self' blob:; img-src 'self' blob: data:; connect-src 'self'; style-src 'self'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


class ViewError(Exception):
    """A user-facing error of ``metasr view`` (one line)."""


@dataclass(frozen=True)
class Site:
    """Everything the server serves, keyed by URL path: ``{path: (content type, bytes or a file)}``."""

    routes: Mapping[str, tuple[str, bytes | Path]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for path in self.routes:
            if not path.startswith("/") or ".." in path.split("/"):
                raise ValueError(f"bad route {path!r}")


def vendor_files(dist: Path = ORT_DIST) -> dict[str, Path]:
    """The runtime's ``.mjs`` and ``.wasm`` files by name; :class:`ViewError` with the install line if absent."""
    files = {p.name: p for p in sorted(dist.glob("*")) if p.suffix in (".mjs", ".wasm") and p.is_file()}
    if "ort.all.min.mjs" not in files:
        raise ViewError(f"onnxruntime-web is not installed in {WEB_DIR}: run `{INSTALL_HINT}`")
    return files


def _graphs(artifacts: Path) -> tuple[Manifest, dict[str, bytes]]:
    def select(m: Manifest):
        by_file = {g.file: g for g in m.graphs if g.format == "onnx"}
        missing = [f for f in GRAPHS.values() if f not in by_file]
        if missing:
            raise ManifestError(
                f"{artifacts} has no {', '.join(missing)} (the portable graphs `metasr export-onnx` writes): "
                "export again with this version"
            )
        return [by_file[f] for f in GRAPHS.values()]

    manifest, blobs = read_consistent(artifacts, select)
    return manifest, dict(zip(GRAPHS.values(), blobs, strict=True))


def _channels(manifest: Manifest) -> int:
    spec = next(g for g in manifest.graphs if g.file == GRAPHS["feature"])
    return int(spec.outputs[0].shape[1])


def load_site(artifacts: str | Path, max_pixels: int = MAX_INPUT_PIXELS, dist: Path = ORT_DIST) -> Site:
    """The page, the vendored runtime and the artifact's graphs (hash-checked); :class:`ViewError` /
    :class:`ManifestError` in one line when something is missing."""
    vendor = vendor_files(dist)
    manifest, blobs = _graphs(Path(artifacts))
    config = {
        "graphs": {role: f"/artifacts/{name}" for role, name in GRAPHS.items()},
        "scale_min_exclusive": manifest.scale_min_exclusive,
        "scale_max": manifest.scale_max,
        "channels": _channels(manifest),
        "max_input_pixels": max_pixels,
        "runtime": "/vendor/ort.all.min.mjs",
        "wasm_paths": "/vendor/",
    }
    routes: dict[str, tuple[str, bytes | Path]] = {}
    for route, name in PAGE_FILES.items():
        routes[route] = (TYPES[Path(name).suffix], WEB_DIR / name)
    for name, path in vendor.items():
        routes[f"/vendor/{name}"] = (TYPES[path.suffix], path)
    for name, data in blobs.items():
        routes[f"/artifacts/{name}"] = (TYPES[".onnx"], data)
    routes["/config.json"] = (TYPES[".json"], json.dumps(config).encode())
    return Site(routes)


class _Handler(http.server.BaseHTTPRequestHandler):
    site: Site  # set on the subclass ViewServer makes
    server_version = "metasr-view"
    sys_version = ""
    timeout = IDLE_TIMEOUT_S
    error_content_type = "text/plain; charset=utf-8"
    error_message_format = "%(code)d %(message)s\n"  # one line (the standard library's is an HTML page)

    def do_GET(self) -> None:
        self._respond(body=True)

    def do_HEAD(self) -> None:
        self._respond(body=False)

    def end_headers(self) -> None:  # the isolation headers on every answer, the errors included
        for k, v in HEADERS.items():
            self.send_header(k, v)
        super().end_headers()

    def _local_host(self) -> bool:
        """Whether the ``Host`` header names this server on the loopback (absent: an HTTP/1.0 client)."""
        host = self.headers.get("Host")
        if host is None:
            return True
        name, colon, port = host.strip().lower().rpartition(":")
        if not colon:
            name, port = port, ""
        return name in LOCAL_HOSTS and port in ("", str(self.server.server_address[1]))

    def _respond(self, body: bool) -> None:
        if not self._local_host():
            self._send(403, "text/plain; charset=utf-8", b"host not allowed: open http://127.0.0.1:PORT/\n", body)
            return
        path = urlsplit(self.path).path
        route = self.site.routes.get(path)
        if route is None:
            self._send(404, "text/plain; charset=utf-8", b"not found\n", body)
            return
        ctype, content = route
        data = content.read_bytes() if isinstance(content, Path) else content
        self._send(200, ctype, data, body)

    def _send(self, code: int, ctype: str, data: bytes, body: bool) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:  # quiet: the command prints its URL only
        pass


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        """A client that closed its connection (or timed out) is not an error of the server: nothing printed;
        anything else one line on stderr, never the standard library's traceback."""
        error = sys.exc_info()[1]
        if isinstance(error, (ConnectionError, TimeoutError)):
            return
        print(f"metasr view: a request from {client_address[0]} failed: {type(error).__name__}: {error}",
              file=sys.stderr)  # fmt: skip


class ViewServer:
    """A threaded HTTP server for a :class:`Site` on 127.0.0.1 (``port`` 0: any free port).

    A context manager: ``with ViewServer(site, 8080) as s: s.url; s.serve_forever()`` (or :meth:`start` in a
    thread, for tests). A port in use is a :class:`ViewError`."""

    def __init__(self, site: Site, port: int = 8080) -> None:
        if not 0 <= port <= 65535:
            raise ViewError(f"port must be in 0..65535, got {port}")
        handler = type("Handler", (_Handler,), {"site": site})
        try:
            self._httpd = _Server(("127.0.0.1", port), handler)
        except OSError as e:
            if e.errno in (98, 48, 10048):  # EADDRINUSE on Linux, macOS, Windows
                raise ViewError(f"port {port} on 127.0.0.1 is in use: pick another with --port") from None
            raise ViewError(f"cannot listen on 127.0.0.1:{port}: {e.strerror or e}") from None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/"

    def serve_forever(self) -> None:
        self._httpd.serve_forever(poll_interval=0.2)

    def start(self) -> ViewServer:
        """Serve from a daemon thread (returns at once)."""
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
        self._httpd.server_close()

    def __enter__(self) -> ViewServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def port_free(port: int) -> bool:
    """Whether 127.0.0.1:``port`` can be bound now (a helper for tests and messages)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds: TIME_WAIT is no owner
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
