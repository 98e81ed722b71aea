"""Inference backends behind one small interface: a context manager with ``infer(feeds) -> outputs``.

``ort``: ONNX Runtime, CPU provider; ``ort-cuda``: ONNX Runtime with the CUDA provider first (needs
onnxruntime-gpu and a GPU); ``trt``: TensorRT engines (:mod:`metasr.runtime.trt_backend`; a GPU and TensorRT);
``openvino``: OpenVINO on the CPU (:mod:`metasr.runtime.openvino_backend`; ``pip install 'metasr[openvino]'``),
which runs INT8 as the TensorRT form (its symmetric Q/DQ compiles into INT8 convolutions there).
A backend is created from the bytes :meth:`Manifest.read_verified` returned (never by opening the path
again), so it runs exactly the file that was hashed. The graph's own inputs and outputs are checked against
what the manifest declares when it is loaded (:func:`check_graph_io`), and feeds against the manifest (names,
dtypes, ranks, static dims) before they reach the session; the engine's own errors (a graph it cannot load,
an allocation failure) raise one-line :class:`BackendError` messages.

ONNX Runtime sessions keep their CPU memory arena: without it the runs were 1.5-2x slower here (every
buffer faulted in again) and a feature tile's peak was not lower after a few runs (439 against 434 MiB for
512x512 tiles of the bundled model: glibc's heap keeps freed memory too). The memory bound of
``metasr upscale`` therefore counts each session's largest run as held (:mod:`metasr.runtime.memory`).
They run without ONNX Runtime's memory pattern (``enable_mem_pattern``), which plans one block per input
shape on top of the arena: with it a 512x512 feature tile peaked at 321 MiB above the session (169 without),
three upscale tiles at x2.3 at 603 MiB against 380 planned (345-346 without), and 260 tiles at x2.357 at 648
against 512 planned (479-504 without); run times side by side were 0.93-1.03x (``docs/memory.md``).
Telemetry events are disabled (see :mod:`metasr`).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Protocol

import numpy as np
from metasr.runtime.manifest import GraphSpec

from metasr.interrupts import reraise_interrupt
from metasr.limits import check_threads

if TYPE_CHECKING:
    from metasr.runtime.ort_direct import DirectPaths
    from metasr.runtime.predictor_split import FilterCache

__all__ = [
    "ALL_BACKENDS",
    "BACKENDS",
    "BACKEND_FORMATS",
    "BACKEND_PORTABLE_FORMS",
    "BACKEND_TARGETS",
    "GROUPED_ONLY_BACKENDS",
    "Backend",
    "BackendError",
    "OrtBackend",
    "backend_available",
    "check_graph_io",
    "open_backend",
    "out_of_memory",
]


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


def out_of_memory(text: str, e: BaseException) -> str | None:
    """The one-line out-of-memory message when ``e`` (its text ``text``) is an allocation failure: a
    ``MemoryError``, ONNX Runtime's "Failed to allocate memory for requested buffer of size N" or OpenVINO's
    "Failed to allocate N bytes of memory"; else None."""
    alloc = re.search(r"Failed to allocate (?:memory for requested buffer of size )?(\d+)", text)
    if not (alloc or isinstance(e, MemoryError)):
        return None
    size = f" ({int(alloc.group(1)) / 2**20:.0f} MiB)" if alloc else ""
    return f"out of memory{size}: this machine has less memory free than --memory-mb allows; lower it"


_ORT_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(int64)": "int64",
              "tensor(int32)": "int32", "tensor(uint8)": "uint8", "tensor(double)": "float64"}  # fmt: skip


def check_graph_io(spec: GraphSpec, inputs: list[tuple[str, str, list]], outputs: list[tuple[str, str, list]]) -> None:
    """Raise :class:`BackendError` unless a loaded graph's ``(name, dtype, dims)`` inputs and outputs are the
    ones ``spec`` declares: same names, dtypes, ranks; a declared int dim is the graph's, a declared
    symbolic dim is symbolic in the graph (None or a name)."""
    for which, declared, got in (("inputs", spec.inputs, inputs), ("outputs", spec.outputs, outputs)):
        actual = {name: (dtype, dims) for name, dtype, dims in got}
        if sorted(actual) != sorted(t.name for t in declared):
            raise BackendError(f"{spec.file}: the graph's {which} {sorted(actual)} are not the manifest's")
        for t in declared:
            dtype, dims = actual[t.name]
            same = len(dims) == len(t.shape) and all(
                (d == want) if isinstance(want, int) else not isinstance(d, int)
                for d, want in zip(dims, t.shape, strict=False)
            )
            if dtype != t.dtype or not same:
                raise BackendError(
                    f"{spec.file}: {t.name} is {dtype} {list(dims)} in the graph, {t.dtype} {list(t.shape)} in the "
                    "manifest (manifest edited?)"
                )


def _first_line(e: BaseException) -> str:
    """One readable line from an engine error (ONNX Runtime's carry a code prefix and C++ source paths)."""
    text = str(e).strip()
    if not text:
        return type(e).__name__
    oom = out_of_memory(text, e)
    if oom:
        return oom
    text = re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", text.splitlines()[0])
    return text[:300]


def _ort_errors() -> tuple[type[BaseException], ...]:
    """ONNX Runtime's own exception classes (they derive from Exception only) and MemoryError."""
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    found = [v for v in vars(state).values() if isinstance(v, type) and issubclass(v, Exception)]
    return (*found, MemoryError)


def _ort_providers(providers: list[str]) -> str | None:
    """Why these providers cannot run here, or None when they can."""
    try:
        import onnxruntime as ort
    except ImportError as e:
        reraise_interrupt(e)  # an import cut short by Ctrl-C / SIGTERM is not a missing package
        return "the ort backends need ONNX Runtime (pip install 'metasr[ort]', or 'metasr[ort-gpu]' for CUDA)"
    missing = [p for p in providers if p not in ort.get_available_providers()]
    if missing:
        return f"ONNX Runtime here lacks {missing} (available: {ort.get_available_providers()})"
    return None


def _session_options(threads: int, arena: bool = True) -> object:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 4  # fatal only: errors reach the user once, as a BackendError
    if threads:
        opts.intra_op_num_threads = threads
    # the pipeline alternates two sessions: threads spin-waiting in one would compete with the other's work
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.enable_cpu_mem_arena = arena
    # the memory pattern roughly doubled the peaks of shapes that vary between calls (module docstring)
    opts.enable_mem_pattern = False
    return opts


class OrtBackend:
    """One ONNX graph in an ONNX Runtime session, created from the graph's verified bytes."""

    def __init__(self, model: bytes, spec: GraphSpec, providers: list[str], threads: int = 0) -> None:
        check_threads(threads)
        reason = _ort_providers(providers)
        if reason:
            raise BackendError(reason)
        import onnxruntime as ort

        ort.disable_telemetry_events()  # (its start-up part is off when metasr was imported first)
        opts = _session_options(threads)
        self.spec = spec
        self._errors = _ort_errors()
        self.body = "as exported"
        self.filters: FilterCache | None = None  # the upscale graph's filter table, once per plan (CPU provider)
        self.filters_note = "not the CPU provider"  # why not, or that it is
        self.direct: DirectPaths | None = None  # calls without the body's plan logic (runtime/ort_direct.py)
        if providers != ["CPUExecutionProvider"]:
            self.session = self._load(model, model, opts, providers)
        else:  # the MetaUpscale body's convolution on the NCHWc kernels (runtime/ort_cpu.py)
            from metasr.runtime.ort_cpu import specialize
            from metasr.runtime.predictor_split import FilterCache, PredictorSplit, split_upscale

            split = split_upscale(model)
            self.filters_note = split if isinstance(split, str) else "the filter table computed once per plan"
            if isinstance(split, PredictorSplit):  # the weight predictor in its own session (predictor_split.py)
                try:
                    pred_opts = _session_options(threads, arena=False)
                    predictor = ort.InferenceSession(split.predictor, pred_opts, providers=providers)
                    variant, self.body = specialize(split.body, spec.precision)
                    self.session = self._load(variant, split.body, opts, providers)
                    self.filters = FilterCache(split.inputs, lambda feeds: predictor.run([split.table], feeds)[0])
                    self._table = split.table
                    self.direct = self._direct(split.body, spec, threads, providers)
                except (*self._errors, BackendError) as e:  # not in this graph: the graph whole, as below
                    self.filters = None
                    self.filters_note = f"the split graph did not load: {_first_line(e)[:160]}"
            if self.filters is None:
                variant, self.body = specialize(model, spec.precision)
                self.session = self._load(variant, model, opts, providers)

        def io(args: list) -> list[tuple[str, str, list]]:
            return [(a.name, _ORT_TYPES.get(a.type, a.type), list(a.shape)) for a in args]

        inputs = io(self.session.get_inputs())
        if self.filters is not None:  # the graph's inputs: the body's but the table, and the predictor's
            inputs = [i for i in inputs if i[0] != self._table] + io(predictor.get_inputs())
        check_graph_io(spec, inputs, io(self.session.get_outputs()))
        self.output_names = [t.name for t in spec.outputs]

    def _direct(self, body: bytes, spec: GraphSpec, threads: int, providers: list[str]) -> DirectPaths | None:
        """The direct paths (``runtime/ort_direct.py``) where the NCHWc variant loaded and the body ends in
        add_mean's bias, else None; the phase path only where the variant has one. Their sessions share one
        memory arena (:func:`~metasr.runtime.ort_direct.shared_arena`) beside the body's."""
        import onnxruntime as ort
        from metasr.runtime.ort_cpu import PHASE, VARIANT, nchwc_block
        from metasr.runtime.ort_direct import DirectPaths, mean_bias, shared_arena

        block = nchwc_block()
        if (
            not DirectPaths.enabled()
            or not self.body.startswith(VARIANT)
            or isinstance(block, str)
            or len(spec.outputs) != 1
        ):
            return None
        bias = mean_bias(body, spec.outputs[0].name)
        if bias is None:
            return None
        opts = _session_options(threads, arena=False)  # never an arena of their own (whichever way)
        if shared_arena():  # (registered once per process, then cached)
            opts.add_session_config_entry("session.use_env_allocators", "1")
        make = lambda model: ort.InferenceSession(model, opts, providers=providers)  # noqa: E731
        return DirectPaths(bias, block, make, phase=PHASE in self.body)

    def _load(self, variant: bytes, model: bytes, opts: object, providers: list[str]) -> object:
        """A session of ``variant``; where it does not load and is not ``model``, of ``model`` (the graph as
        exported: the NCHWc variant passed its probe but not in this graph)."""
        import onnxruntime as ort

        try:
            return ort.InferenceSession(variant, opts, providers=providers)
        except self._errors as e:
            if variant is model:
                raise BackendError(f"{self.spec.file}: ONNX Runtime cannot load it: {_first_line(e)}") from None
            self.body = f"standard MetaUpscale body (the NCHWc variant did not load: {_first_line(e)[:160]})"
        try:
            return ort.InferenceSession(model, opts, providers=providers)
        except self._errors as e2:
            raise BackendError(f"{self.spec.file}: ONNX Runtime cannot load it: {_first_line(e2)}") from None

    @property
    def phase_periods(self) -> tuple[int, ...]:
        """The q of r = p/q for which the loaded body has the phase path (the tiler keeps calls on it), or ()."""
        from metasr.runtime.ort_cpu import PHASE, PHASE_PERIODS

        return PHASE_PERIODS if PHASE in self.body else ()

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        check_feeds(self.spec, feeds)
        if self.session is None:
            raise BackendError(f"{self.spec.file}: the backend is closed")
        try:
            if self.filters is not None:  # the plan's filter table: computed once, fed to each of its calls
                table = self.filters.table(feeds)
                paths = self.direct  # (once: a concurrent close() sets it to None)
                direct = paths.run(feeds, table) if paths is not None else None
                if direct is not None:
                    return {self.output_names[0]: direct}
                feeds = {k: v for k, v in feeds.items() if k not in self.filters.inputs} | {self._table: table}
            outputs = self.session.run(self.output_names, feeds)
        except self._errors as e:
            raise BackendError(f"{self.spec.file}: ONNX Runtime failed: {_first_line(e)}") from None
        return dict(zip(self.output_names, outputs, strict=True))

    def close(self) -> None:
        self.session = None
        if self.direct is not None:
            self.direct.close()  # (a zoom's features copy goes now, not when the caller's features go)
        self.direct = None
        if self.filters is not None:
            self.filters.clear()
            self.filters = None  # (its predictor session with it)

    def __enter__(self) -> OrtBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


BACKENDS = {
    "ort": ["CPUExecutionProvider"],
    "ort-cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
}
# every backend the runtime knows, available here or not, and the manifest file format each one runs
ALL_BACKENDS = ("ort", "ort-cuda", "trt", "openvino")
BACKEND_FORMATS = {"ort": "onnx", "ort-cuda": "onnx", "trt": "tensorrt", "openvino": "onnx"}
# the graph form each backend runs (manifest GraphSpec.target); a backend without an entry takes "any".
# OpenVINO: the TensorRT form (measured in benchmarks/openvino_int8.py: its symmetric Q/DQ becomes INT8
# convolutions with the requantization fused, faster there than the CPU form, within the same accuracy)
BACKEND_TARGETS = {"ort": "ort-cpu", "ort-cuda": "ort-cpu", "trt": "tensorrt", "openvino": "tensorrt"}
# the portable form each backend runs (docs/portable.md); a backend without an entry takes "scale" (float64).
# OpenVINO computes float64 in float32: the "inv" form (output size and float32(1 / scale) computed by the caller)
BACKEND_PORTABLE_FORMS = {"openvino": "inv"}
# backends that run only the MetaUpscale body's grouped path (openvino_backend replaces its convolution path:
# OpenVINO compiles a Conv only with a static output-channel count); their tiles are sized by that path
GROUPED_ONLY_BACKENDS = frozenset({"openvino"})


def _openvino_missing() -> str | None:
    """Why the openvino backend cannot run here (cheap: looks the modules up, imports nothing)."""
    from importlib.util import find_spec

    missing = [m for m in ("openvino", "onnx") if find_spec(m) is None]
    if missing:
        return f"the openvino backend needs {' and '.join(missing)} (pip install 'metasr[openvino]')"
    return None


def backend_available(name: str) -> str | None:
    """Why the named backend cannot run on this machine, or None when it can (cheap: opens nothing)."""
    if name == "trt":  # the one probe: no TensorRT object is created without a CUDA device
        from metasr.runtime.trt_env import probe

        problem = probe().problem
        return f"the trt backend needs a CUDA GPU and TensorRT >= 10.9: {problem}" if problem else None
    if name == "openvino":
        return _openvino_missing()
    if name not in BACKENDS:
        return f"unknown backend {name!r}; known: {list(ALL_BACKENDS)}"
    return _ort_providers(BACKENDS[name])


def open_backend(name: str, spec: GraphSpec, model: bytes, threads: int = 0) -> Backend:
    """Open ``spec``'s graph on the named backend from ``model``, the file's bytes as
    :meth:`Manifest.read_verified` returned them. ``threads``: 0 (the engine's default) ..
    :data:`metasr.limits.MAX_THREADS`, else ``ValueError``."""
    check_threads(threads)
    reason = backend_available(name)
    if reason:
        raise BackendError(reason)
    if name == "trt":
        from metasr.runtime.trt_backend import TrtBackend

        return TrtBackend(model, spec)
    if name == "openvino":
        from metasr.runtime.openvino_backend import OpenVinoBackend

        return OpenVinoBackend(model, spec, threads)
    return OrtBackend(model, spec, BACKENDS[name], threads)
