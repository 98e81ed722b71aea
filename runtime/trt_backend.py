"""The ``trt`` backend: one TensorRT engine behind the :class:`~metasr.runtime.backends.Backend` interface.

Deserializes the engine from the verified bytes the manifest names, checks it was built by this TensorRT
for this GPU, and keeps one execution context, one CUDA stream and device buffers that are reused across
calls (grown when a call needs more). Per call: input shapes set, inputs copied in, ``execute_async_v3``,
outputs copied back. The upscale engine's feeds are checked against its optimization profile first, so an
out-of-range region is a clear error rather than a TensorRT failure. Needs TensorRT >= 10.9, cuda-bindings
and a CUDA GPU; the probe runs before any TensorRT object is created.
"""

from __future__ import annotations

import numpy as np
from metasr.runtime.backends import BackendError, check_feeds
from metasr.runtime.cuda_buffers import DeviceBuffer, Stream
from metasr.runtime.engines import EngineInfo, EngineMismatchError, check_compatible
from metasr.runtime.manifest import GraphSpec
from metasr.runtime.trt_env import TensorRTUnavailable, require_tensorrt

__all__ = ["TrtBackend"]


class TrtBackend:
    """One serialized TensorRT engine (``engine_bytes``) described by ``spec``."""

    def __init__(self, engine_bytes: bytes, spec: GraphSpec, device: int = 0) -> None:
        try:
            env = require_tensorrt("the trt backend", device)
        except TensorRTUnavailable as e:
            raise BackendError(str(e)) from None
        self.spec = spec
        self.info = EngineInfo.from_extra(spec.kind, spec.extra)  # validated when the manifest was read
        try:
            cc = f"{env.compute_capability[0]}.{env.compute_capability[1]}"
            check_compatible(self.info, spec.file, env.tensorrt_version, cc, env.gpu_name)
        except EngineMismatchError as e:
            raise BackendError(str(e)) from None
        if self.info.plugin_impl == "jit":  # the JIT plugin runs Python: register it before deserializing
            import metasr.export.trt_plugin  # noqa: F401
        import tensorrt as trt

        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(engine_bytes)
        if self.engine is None:
            raise BackendError(f"TensorRT could not deserialize {spec.file} (see the TensorRT log above)")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        is_input = {n: self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        self.input_names = [n for n in names if is_input[n]]
        self.output_names = [n for n in names if not is_input[n]]
        self._dtypes = {n: np.dtype(trt.nptype(self.engine.get_tensor_dtype(n))) for n in names}
        self._stream = Stream()
        self._buffers = {n: DeviceBuffer() for n in names}

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """feeds -> outputs as numpy arrays (shapes and dtypes as the manifest says)."""
        check_feeds(self.spec, feeds)
        if self.info.profile is not None:
            self.info.profile.check(feeds)
        for name in self.input_names:
            array = np.ascontiguousarray(feeds[name], dtype=self._dtypes[name])
            if not self.context.set_input_shape(name, array.shape):
                raise BackendError(f"{self.spec.file}: TensorRT refused shape {array.shape} for input {name}")
            self._stream.upload(self._buffers[name], array)
            self.context.set_tensor_address(name, self._buffers[name].ptr)
        outputs = {}
        for name in self.output_names:
            shape = tuple(self.context.get_tensor_shape(name))
            outputs[name] = np.empty(shape, dtype=self._dtypes[name])
            self.context.set_tensor_address(name, self._buffers[name].reserve(max(1, outputs[name].nbytes)))
        if not self.context.execute_async_v3(self._stream.ptr):
            raise BackendError(f"{self.spec.file}: TensorRT execution failed (see the TensorRT log above)")
        for name, out in outputs.items():
            self._stream.download(self._buffers[name], out)
        return outputs

    def close(self) -> None:
        for buf in getattr(self, "_buffers", {}).values():
            buf.free()
        if getattr(self, "_stream", None) is not None:
            self._stream.close()
            self._stream = None
        self.context = self.engine = self._runtime = None

    def __enter__(self) -> TrtBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
