"""The upscale service's HTTP contract, without any server (numpy + Pillow + ONNX Runtime; no Ray, no PyTorch).

    service = Upscaler(ServiceConfig("artifacts/small"), threads=1)
    reply = service.handle("POST", "/v1/upscale", {"scale": "2.5"}, "image/png", body)
    reply.status, reply.media_type, reply.body, reply.log   # 200, "image/png", PNG bytes, "POST /v1/upscale ..."

Routes: ``POST /v1/upscale?scale=R`` or ``?size=WxH`` (``&precision=fp32|fp16|int8``, ``&format=png|jpeg|webp|
tiff|bmp``, default PNG) with the encoded image as the body returns the upscaled image, made by
:func:`metasr.runtime.batch.upscale_bytes` (every check ``metasr upscale`` runs on a file, no temporary file);
``GET /healthz``; ``GET /v1/models`` (the manifest's model, scale range, precisions served). :mod:`metasr.runtime
.serving` puts this behind Ray Serve; the tests call it directly too.

Every refusal is a :class:`Reply` with a 4xx status and a one-line JSON body ``{"error": "..."}``: 400 (a bad
query or image: scale nan/0/100, a malformed size, an empty parameter (``precision=`` is not the default), a
truncated file, a format that cannot hold the image), 404/405 (route; a method the route does not take, with an
``Allow`` header), 413 (a body over ``max_body_bytes``, pixels in or out over ``max_pixels``, a
decompression bomb, an image that cannot fit ``memory_mb``), 415 (a content type that is not ``image/*`` or
``application/octet-stream``). Anything else is a 500 whose body says only "internal error" (the exception is
in the replica's log). One replica runs one upscale at a time (a lock: the memory bound holds per replica).
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from metasr.runtime.batch import UpscaleCancelled, UpscaleOptions, upscale_bytes
from metasr.runtime.image_io import ImageError
from metasr.runtime.manifest import PRECISIONS, ManifestError
from metasr.runtime.memory import MemoryBudgetError
from metasr.runtime.pipeline import Pipeline
from metasr.runtime.projection import UnsupportedScaleError, output_size

from metasr.limits import MAX_IMAGE_PIXELS, MAX_SIDE

__all__ = ["MEDIA_TYPES", "Reply", "RequestError", "ServiceConfig", "Upscaler", "parse_upscale_query"]

# output format names accepted by ?format= and the media type each answers with
MEDIA_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "jpg": "image/jpeg", "webp": "image/webp",
               "tiff": "image/tiff", "bmp": "image/bmp"}  # fmt: skip
_BODY_TYPES = ("image/", "application/octet-stream")
_log = logging.getLogger("ray.serve")  # in a replica, Serve's logger; elsewhere an ordinary one


class RequestError(Exception):
    """A refused request: its HTTP status (4xx) and a one-line message."""

    def __init__(self, status: int, message: str, headers: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers


@dataclass(frozen=True)
class ServiceConfig:
    """What every replica serves: the artifact directory, backend and precisions (one :class:`Pipeline`
    each), and the per-request limits: body bytes, pixels in and out, the memory bound (MiB, per replica)."""

    artifacts: str
    backend: str = "ort"
    precisions: tuple[str, ...] = ("fp32",)
    max_body_bytes: int = 50 * 2**20
    max_pixels: int = 16_777_216
    memory_mb: float = 2048.0

    def __post_init__(self) -> None:
        if not self.precisions or any(p not in PRECISIONS for p in self.precisions):
            raise ValueError(f"precisions must be some of {list(PRECISIONS)}, got {list(self.precisions)}")
        if not (isinstance(self.max_body_bytes, int) and 1 <= self.max_body_bytes <= 2**32):
            raise ValueError(f"max_body_bytes must be in 1..2**32, got {self.max_body_bytes!r}")
        if not (isinstance(self.max_pixels, int) and 1 <= self.max_pixels <= MAX_IMAGE_PIXELS):
            raise ValueError(f"max_pixels must be in 1..{MAX_IMAGE_PIXELS:,}, got {self.max_pixels!r}")
        if not (math.isfinite(self.memory_mb) and 128 <= self.memory_mb <= 2**20):
            raise ValueError(f"memory_mb must be in 128..{2**20}, got {self.memory_mb!r}")


@dataclass(frozen=True)
class Reply:
    """An HTTP answer: status, media type, body, the request's one log line and extra headers (``Allow``)."""

    status: int
    media_type: str
    body: bytes
    log: str = ""
    headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def json(cls, status: int, data: object, log: str = "", headers: tuple[tuple[str, str], ...] = ()) -> Reply:
        return cls(status, "application/json", json.dumps(data, separators=(",", ":")).encode(), log, headers)


@dataclass(frozen=True)
class UpscaleQuery:
    options: UpscaleOptions
    precision: str
    fmt: str


def _one(query: Mapping[str, str], key: str) -> str | None:
    """The parameter's value, None when absent; an empty value is refused (it does not mean the default)."""
    value = query.get(key)
    if value is not None and not str(value).strip():
        raise RequestError(400, f"{key} is empty: give a value or leave the parameter out")
    return None if value is None else str(value)


def _parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise RequestError(400, f"size must look like 1920x1080 (WxH), got {text[:40]!r}") from None
    if not (1 <= w <= MAX_SIDE and 1 <= h <= MAX_SIDE):
        raise RequestError(400, f"size must be two integers in 1..{MAX_SIDE}, got {text[:40]!r}")
    return w, h


def parse_upscale_query(query: Mapping[str, str], config: ServiceConfig) -> UpscaleQuery:
    """The options of one ``POST /v1/upscale`` from its query; :class:`RequestError` (400) for anything else."""
    unknown = sorted(set(query) - {"scale", "size", "precision", "format"})
    if unknown:
        raise RequestError(400, f"unknown parameter {unknown[0][:40]!r}: use scale or size, precision, format")
    scale, size = _one(query, "scale"), _one(query, "size")
    if (scale is None) == (size is None):
        raise RequestError(400, "give exactly one of scale=R and size=WxH")
    r = None
    if scale is not None:
        try:
            r = float(scale)
        except ValueError:
            raise RequestError(400, f"scale must be a number, got {scale[:40]!r}") from None
        if not math.isfinite(r) or r <= 1.0:
            raise RequestError(400, f"scale must be a finite number > 1, got {scale[:40]!r}")
    precision = _one(query, "precision") or config.precisions[0]
    if precision not in config.precisions:
        raise RequestError(400, f"precision must be one of {list(config.precisions)} here, got {precision[:40]!r}")
    fmt = (_one(query, "format") or "png").lower()
    if fmt not in MEDIA_TYPES:
        raise RequestError(400, f"format must be one of {sorted(MEDIA_TYPES)}, got {fmt[:40]!r}")
    opts = UpscaleOptions(
        scale=r, size=None if size is None else _parse_size(size), max_pixels=config.max_pixels,
        memory_mb=config.memory_mb,
    )  # fmt: skip
    return UpscaleQuery(opts, precision, "jpeg" if fmt == "jpg" else fmt)


def _status_of(e: Exception) -> int:
    """413 for what is too big (pixels, bombs, memory), 400 for any other refusal of the image or options."""
    text = str(e)
    if isinstance(e, MemoryBudgetError) or "pixel limit" in text or "decompression bomb" in text:
        return 413
    return 400


class Upscaler:
    """One replica's state: a :class:`Pipeline` per served precision, ``threads`` ONNX Runtime threads each."""

    def __init__(self, config: ServiceConfig, threads: int = 1) -> None:
        self.config = config
        self.threads = threads
        self.pipelines = {p: Pipeline(config.artifacts, config.backend, threads=threads, precision=p)
                          for p in config.precisions}  # fmt: skip
        self._lock = threading.Lock()  # one upscale at a time: the memory bound is per replica

    def close(self) -> None:
        for p in self.pipelines.values():
            p.close()

    def models(self) -> dict[str, object]:
        p = next(iter(self.pipelines.values()))
        return {
            "model": p.manifest.model,
            "artifacts": Path(self.config.artifacts).name,
            "scales": {"min_exclusive": max(1.0, p.min_scale), "max": p.max_scale},
            "precisions": list(self.pipelines),
            "threads": self.threads,  # ONNX Runtime threads per graph in this replica (its CPU share)
            "formats": sorted(set(MEDIA_TYPES) - {"jpg"}),
            "max_body_bytes": self.config.max_body_bytes,
            "max_pixels": self.config.max_pixels,
        }

    def handle(
        self,
        method: str,
        path: str,
        query: Mapping[str, str],
        content_type: str,
        body: bytes,
        cancelled: Callable[[], bool] | None = None,
    ) -> Reply:
        """Answer one request (never raises for a bad request: a 4xx :class:`Reply`). ``cancelled``: asked
        between the output bands of an upscale, which stops when it says so (a 408 nobody reads)."""
        t0 = time.perf_counter()
        try:
            reply = self._route(method, path.rstrip("/") or "/", query, content_type, body, cancelled)
        except Exception as e:
            reply = self._reply_for(e, method, path)
        return self._logged(reply, method, path, body, (time.perf_counter() - t0) * 1000)

    def refusal(self, method: str, path: str, query: Mapping[str, str], content_type: str, body: bytes) -> Reply | None:
        """The answer to a request refused on its route, method, query, content type or body size, checked
        without decoding anything (a replica answers these without waiting for its turn); None otherwise."""
        t0 = time.perf_counter()
        try:
            if self._check_route(method, path.rstrip("/") or "/") == "/v1/upscale":
                self._checked_query(query, content_type, body)
        except Exception as e:  # answered as handle() would answer it (the same checks run first there)
            return self._logged(self._reply_for(e, method, path), method, path, body, (time.perf_counter() - t0) * 1000)
        return None

    @staticmethod
    def _logged(reply: Reply, method: str, path: str, body: bytes, ms: float) -> Reply:
        line = f"{method} {path} {reply.status} in {len(body)} B out {len(reply.body)} B {reply.log} {ms:.0f} ms"
        return Reply(reply.status, reply.media_type, reply.body, " ".join(line.split()), reply.headers)

    @staticmethod
    def _reply_for(e: Exception, method: str, path: str) -> Reply:
        if isinstance(e, RequestError):
            return Reply.json(e.status, {"error": str(e)}, headers=e.headers)
        if isinstance(e, UpscaleCancelled):
            return Reply.json(408, {"error": str(e)}, log="cancelled")
        if isinstance(e, ImageError | UnsupportedScaleError | MemoryBudgetError | ManifestError | ValueError):
            return Reply.json(_status_of(e), {"error": str(e).splitlines()[0] if str(e) else type(e).__name__})
        # a fault of the service, not of the request: logged in full, answered in one line
        _log.error("%s %s failed", method, path[:80], exc_info=e)
        return Reply.json(500, {"error": "internal error"})

    @staticmethod
    def _check_route(method: str, path: str) -> str:
        routes = {"/healthz": "GET", "/v1/models": "GET", "/v1/upscale": "POST"}
        if path not in routes:
            raise RequestError(404, f"no route {path[:80]!r}: POST /v1/upscale, GET /healthz, GET /v1/models")
        if method != routes[path]:
            raise RequestError(405, f"{path} takes {routes[path]}, got {method[:10]}", (("Allow", routes[path]),))
        return path

    def _route(
        self,
        method: str,
        path: str,
        query: Mapping[str, str],
        content_type: str,
        body: bytes,
        cancelled: Callable[[], bool] | None = None,
    ) -> Reply:
        self._check_route(method, path)
        if path == "/healthz":
            return Reply.json(200, {"status": "ok"})
        if path == "/v1/models":
            return Reply.json(200, self.models())
        return self._upscale(query, content_type, body, cancelled)

    def _checked_query(self, query: Mapping[str, str], content_type: str, body: bytes) -> UpscaleQuery:
        q = parse_upscale_query(query, self.config)
        kind = content_type.split(";")[0].strip().lower()
        if not kind.startswith(_BODY_TYPES):
            raise RequestError(415, f"the body must be an image (image/* or application/octet-stream), got "
                                    f"{kind[:60] or 'no content type'!r}")  # fmt: skip
        if not body:
            raise RequestError(400, "the body is empty: send the image as the request body")
        if len(body) > self.config.max_body_bytes:
            raise RequestError(413, f"the body has {len(body):,} bytes; at most {self.config.max_body_bytes:,}")
        return q

    def _upscale(
        self, query: Mapping[str, str], content_type: str, body: bytes, cancelled: Callable[[], bool] | None = None
    ) -> Reply:
        q = self._checked_query(query, content_type, body)
        with self._lock:
            data, info, _ = upscale_bytes(
                self.pipelines[q.precision], body, q.options, q.fmt.upper(), "image", cancelled
            )
        w, h = info.size
        if q.options.size:
            target = q.options.size
        else:
            out_h, out_w = output_size(h, w, q.options.scale)  # type: ignore[arg-type]
            target = (out_w, out_h)
        how = f"size {target[0]}x{target[1]}" if q.options.size else f"scale {q.options.scale!r}"  # exact: 1.0000001
        return Reply(200, MEDIA_TYPES[q.fmt], data, f"{w}x{h} -> {target[0]}x{target[1]} {how} {q.precision} {q.fmt}")
