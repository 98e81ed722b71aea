"""Inference backends behind one small interface: a context manager with ``infer(feeds) -> outputs``.

``ort``: ONNX Runtime, CPU provider; ``ort-cuda``: ONNX Runtime with the CUDA provider first (needs
onnxruntime-gpu and a GPU). The TensorRT backend (``trt``) arrives with the TensorRT engines and plugs in here.
Feeds are checked against the manifest (names, dtypes, ranks, static dims) before they reach the session.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np
from metasr.runtime.manifest import GraphSpec

__all__ = ["BACKENDS", "BACKEND_TARGETS", "Backend", "BackendError", "OrtBackend", "open_backend"]


class BackendError(RuntimeError):
    """A backend that cannot be opened here, or feeds that do not fit the graph."""


class Backend(Protocol):
    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def close(self) -> None: ...


def check_feeds(spec: GraphSpec, feeds: dict[str, np.ndarray]) -> None:
    """Raise :class:`BackendError` unless ``feeds`` match ``spec.inputs`` exactly (names, dtypes, ranks, dims)."""
    expected = {t.name: t for t in spec.inputs}
    if set(feeds) != set(expected):
        raise BackendError(f"{spec.file}: feeds {sorted(feeds)} do not match inputs {sorted(expected)}")
    for name, t in expected.items():
        a = feeds[name]
        if a.dtype != np.dtype(t.dtype) or a.ndim != len(t.shape):
            raise BackendError(
                f"{spec.file}: input {name} must be {t.dtype} of rank {len(t.shape)}, got {a.dtype} of shape {a.shape}"
            )
        for dim, want in zip(a.shape, t.shape, strict=True):
            if isinstance(want, int) and dim != want:
                raise BackendError(f"{spec.file}: input {name} must have shape {t.shape}, got {a.shape}")


class OrtBackend:
    """One ONNX graph in an ONNX Runtime session."""

    def __init__(self, path: Path, spec: GraphSpec, providers: list[str], threads: int = 0) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise BackendError("the ort backend needs onnxruntime (pip install 'metasr[onnx]')") from None
        missing = [p for p in providers if p not in ort.get_available_providers()]
        if missing:
            raise BackendError(f"ONNX Runtime here lacks {missing} (available: {ort.get_available_providers()})")
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if threads:
            opts.intra_op_num_threads = threads
        # the pipeline alternates two sessions: threads spin-waiting in one would compete with the other's work
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.spec = spec
        self.session = ort.InferenceSession(str(path), opts, providers=providers)
        self.output_names = [t.name for t in spec.outputs]

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        check_feeds(self.spec, feeds)
        return dict(zip(self.output_names, self.session.run(self.output_names, feeds), strict=True))

    def close(self) -> None:
        self.session = None

    def __enter__(self) -> OrtBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


BACKENDS = {
    "ort": ["CPUExecutionProvider"],
    "ort-cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
}
# the graph form each backend runs (manifest GraphSpec.target); a backend without an entry takes "any"
BACKEND_TARGETS = {"ort": "ort-cpu", "ort-cuda": "ort-cpu", "trt": "tensorrt"}


def open_backend(name: str, directory: Path, spec: GraphSpec, threads: int = 0) -> Backend:
    """Open ``spec``'s file from ``directory`` on the named backend."""
    if name == "trt":
        raise BackendError("the trt backend is not available yet (TensorRT engines are a later milestone)")
    if name not in BACKENDS:
        raise BackendError(f"unknown backend {name!r}; known: {sorted(BACKENDS)}")
    return OrtBackend(directory / spec.file, spec, BACKENDS[name], threads)
