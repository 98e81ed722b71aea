"""Device memory and a stream through ``cuda-bindings`` (NVIDIA's CUDA Python; pycuda has no wheels).

Small on purpose: a :class:`DeviceBuffer` that grows on demand and is reused across calls, and a
:class:`Stream` with asynchronous host-to-device / device-to-host copies. Used by the TensorRT backend;
needs a CUDA GPU (probe with :func:`metasr.runtime.trt_env.probe` first).
"""

from __future__ import annotations

import numpy as np
from metasr.runtime.trt_env import cudart

__all__ = ["CudaError", "DeviceBuffer", "Stream"]


class CudaError(RuntimeError):
    """A CUDA runtime call that failed."""


def _check(result: object) -> object:
    err, *rest = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise CudaError(f"CUDA error {getattr(err, 'name', err)}")
    return rest[0] if len(rest) == 1 else None


class DeviceBuffer:
    """A device allocation of at least ``nbytes``; :meth:`reserve` grows it (contents are not kept)."""

    def __init__(self, nbytes: int = 0) -> None:
        self.ptr, self.nbytes = 0, 0
        self.reserve(nbytes)

    def reserve(self, nbytes: int) -> int:
        """Make room for ``nbytes``; returns the device pointer."""
        if nbytes > self.nbytes:
            self.free()
            self.ptr = int(_check(cudart().cudaMalloc(nbytes)))
            self.nbytes = nbytes
        return self.ptr

    def free(self) -> None:
        if self.ptr:
            _check(cudart().cudaFree(self.ptr))
        self.ptr, self.nbytes = 0, 0

    def __del__(self) -> None:  # best effort at interpreter exit
        try:
            self.free()
        except Exception:
            pass


class Stream:
    """A CUDA stream with copies between numpy arrays and device buffers."""

    def __init__(self) -> None:
        self.handle = _check(cudart().cudaStreamCreate())

    @property
    def ptr(self) -> int:
        return int(self.handle)

    def upload(self, buf: DeviceBuffer, array: np.ndarray) -> None:
        """Copy a C-contiguous ``array`` into ``buf`` (grown if needed), asynchronously on this stream."""
        array = np.ascontiguousarray(array)
        buf.reserve(array.nbytes)
        kind = cudart().cudaMemcpyKind.cudaMemcpyHostToDevice
        _check(cudart().cudaMemcpyAsync(buf.ptr, array.ctypes.data, array.nbytes, kind, self.handle))

    def download(self, buf: DeviceBuffer, out: np.ndarray) -> np.ndarray:
        """Copy ``out.nbytes`` from ``buf`` into the C-contiguous ``out``; synchronizes the stream."""
        kind = cudart().cudaMemcpyKind.cudaMemcpyDeviceToHost
        _check(cudart().cudaMemcpyAsync(out.ctypes.data, buf.ptr, out.nbytes, kind, self.handle))
        self.synchronize()
        return out

    def synchronize(self) -> None:
        _check(cudart().cudaStreamSynchronize(self.handle))

    def close(self) -> None:
        if self.handle is not None:
            _check(cudart().cudaStreamDestroy(self.handle))
            self.handle = None
