"""The one probe for a CUDA GPU and TensorRT, used by every command and backend before any TensorRT object
exists (creating one without a CUDA driver logs an error, returns an object and segfaults on its next call).

The GPU is probed through ``cuda-bindings`` (``cudaGetDeviceCount`` returns an error code, it does not
crash, where no driver is present); TensorRT only by importing it. Needs neither torch nor onnx.
"""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass

from metasr.interrupts import reraise_interrupt

__all__ = ["TensorRTUnavailable", "TrtEnvironment", "cudart", "probe", "require_tensorrt"]


class TensorRTUnavailable(RuntimeError):
    """No CUDA GPU, no cuda-bindings, or no TensorRT here; the message says which, in one line."""


@dataclass(frozen=True)
class TrtEnvironment:
    """What the probe found. ``problem`` is None when a GPU and TensorRT are both usable."""

    cuda_devices: int
    gpu_name: str | None
    compute_capability: tuple[int, int] | None
    tensorrt_version: str | None
    problem: str | None

    @property
    def ready(self) -> bool:
        return self.problem is None

    @property
    def cc(self) -> int | None:
        """Compute capability as one int (8.6 -> 86)."""
        return None if self.compute_capability is None else 10 * self.compute_capability[0] + self.compute_capability[1]


def cudart():
    """The CUDA runtime module of cuda-bindings (``cuda.bindings.runtime``; ``cuda.cudart`` before 12.6)."""
    try:
        return importlib.import_module("cuda.bindings.runtime")
    except ImportError:
        return importlib.import_module("cuda.cudart")


def _gpu(device: int) -> tuple[int, str | None, tuple[int, int] | None, str | None]:
    try:
        rt = cudart()
    except ImportError as e:
        reraise_interrupt(e)  # an import cut short by an interrupt is not a missing package
        return 0, None, None, "cuda-bindings is not installed (pip install 'metasr[tensorrt]')"
    err, count = rt.cudaGetDeviceCount()
    if int(err) != 0 or count < 1:
        return 0, None, None, f"no CUDA GPU (cudaGetDeviceCount: {getattr(err, 'name', err)})"
    if device >= count:
        return count, None, None, f"CUDA device {device} does not exist ({count} found)"
    err, props = rt.cudaGetDeviceProperties(device)
    if int(err) != 0:
        return count, None, None, f"cannot read CUDA device {device} ({getattr(err, 'name', err)})"
    name = props.name.decode(errors="replace").rstrip("\x00") if isinstance(props.name, bytes) else str(props.name)
    return count, name, (int(props.major), int(props.minor)), None


def _tensorrt() -> tuple[str | None, str | None]:
    try:
        trt = importlib.import_module("tensorrt")
    except (ImportError, OSError) as e:  # OSError: bindings present, libnvinfer missing
        reraise_interrupt(e)
        return None, f"TensorRT is not installed or cannot load ({type(e).__name__}: {str(e).splitlines()[0][:80]})"
    return str(trt.__version__), None


@functools.cache
def probe(device: int = 0) -> TrtEnvironment:
    """Probe once per process: CUDA device ``device`` through cuda-bindings, then TensorRT by import."""
    count, name, cc, gpu_problem = _gpu(device)
    version, trt_problem = _tensorrt()
    problems = [p for p in (gpu_problem, trt_problem) if p]
    return TrtEnvironment(count, name, cc, version, "; ".join(problems) or None)


def require_tensorrt(what: str, device: int = 0) -> TrtEnvironment:
    """The environment, or :class:`TensorRTUnavailable` saying in one line why ``what`` cannot run here."""
    env = probe(device)
    if not env.ready:
        raise TensorRTUnavailable(f"{what} needs a CUDA GPU and TensorRT >= 10.9: {env.problem}")
    return env
