"""The ``openvino`` backend: one ONNX graph compiled by OpenVINO for the CPU, behind the ``Backend`` interface.

Created from the verified bytes :meth:`Manifest.read_verified` returned (never by opening the path again).
Three things differ from ONNX Runtime, and this module handles each:

- **Model-local functions.** OpenVINO's ONNX reader does not inline them (``upscale.onnx`` fails with "No
  conversion rule found for operations: metasr.MetaUpscale"), so a graph that carries functions is inlined
  with ``onnx.inliner.inline_local_functions`` first; a graph without functions is read as it is.
- **Inference precision.** OpenVINO's CPU default on a CPU with AVX512_BF16 or AMX is bf16, whatever the
  graph's types (the FP32 graphs then land at ~48 dB against ONNX Runtime), and it turns an ``f16`` hint into
  bf16 on a CPU without FP16 arithmetic. Every graph is compiled with ``INFERENCE_PRECISION_HINT=f32``: FP32
  graphs run in f32; FP16 graphs (float32 inputs and outputs, FP16 weights) are computed in f32, as ONNX Runtime
  CPU does, which also keeps the weight predictor the FP16 graph holds in float32 there; INT8 graphs run their
  Q/DQ convolutions as INT8 kernels (OpenVINO's low-precision transformations do not depend on the hint) and
  the rest in f32. The compiled model's hint is read back and checked, so a silent change is an error.
- **Computed convolution filters.** OpenVINO compiles a ``Conv`` only with a static output-channel count; the
  ``MetaUpscale`` body's convolution path (integer and half-integer scales) computes its filters from the plan,
  so the backend runs the body's general grouped path there (exact for every plan; slower at those scales), and
  its general filter layout: OpenVINO's ``If`` returned stale data on a first call that outgrew its buffers.
- **Float64.** The CPU plugin computes float64 in float32 (and int64 as int32), so graphs with a float64 input (the
  portable "scale" graphs, whose float64 scale arithmetic is the contract) are refused in one line
  (:data:`FLOAT64_REFUSAL`); the portable "inv" graphs, which take the float64 results from the caller, run
  (``Pipeline(graph="portable")`` picks them on openvino; docs/portable.md).
- **Unused inputs.** OpenVINO drops graph inputs nothing reads (none in the graphs exported today; before
  ``MetaUpscale`` contract v2: ``row_src``, ``row_idx``, ``col_src``, ``col_idx``). Feeds are checked against the
  manifest in full and then only the inputs the compiled model has are passed, looked up by name: any ONNX graph
  of the manifest runs, whatever its inputs are called.

Dynamic shapes: the graph is compiled once, with its dynamic dimensions; OpenVINO's CPU plugin keeps its
per-shape preparation in a cache of its own (``CPU_RUNTIME_CACHE_CAPACITY``), so a new input shape costs one
slower call, never a recompilation (measured in ``benchmarks/openvino_int8.py --shapes``: compiling a static copy
per shape gained nothing measurable). ``threads`` > 0 sets ``INFERENCE_NUM_THREADS``; ``properties`` adds other
OpenVINO compile properties (``NUM_STREAMS``, ``ENABLE_CPU_PINNING``, ...; not the precision). ``infer`` may be
called from several threads: each call takes an idle infer request (made when none is idle) and returns it.
OpenVINO's errors become one-line :class:`~metasr.runtime.backends.BackendError` messages.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from metasr.runtime.backends import BackendError, check_feeds, out_of_memory
from metasr.runtime.manifest import GraphSpec

if TYPE_CHECKING:
    import onnx

__all__ = [
    "DEFAULT_PROPERTIES",
    "FLOAT64_REFUSAL",
    "INFERENCE_PRECISION",
    "OpenVinoBackend",
    "convolution_kernels",
    "inline_functions",
    "openvino_message",
]

# OpenVINO's CPU plugin computes float64 in float32: the portable graphs' official float64 arithmetic (output size
# int(r * h), float32(1 / r)) changes (measured: x2.3 on 40x56, inv_scale 0.43478262 for 0.4347826, 23 offsets for
# 24, 1.7% of the values off by up to 71 levels); refused rather than run wrong (docs/portable.md)
FLOAT64_REFUSAL = (
    "{file}: OpenVINO computes float64 in float32 on the CPU, so this graph's float64 scale arithmetic would not be "
    "the official one; run the portable inv form (metasr.portable.inv.onnx) or the two-graph form on openvino"
)
INFERENCE_PRECISION = "f32"  # for every graph, FP16 and INT8 included (see the module docstring)
# one request at a time, all cores on it; threads not pinned to cores (OpenVINO's Linux default pins them: two
# processes, or two pipelines, then share the same cores; on this shared 2-core machine unpinned was faster in 14
# of 18 interleaved measurements, median time 0.92x pinned: benchmarks/openvino_int8.py --pinning, docs/openvino.md)
DEFAULT_PROPERTIES: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "ENABLE_CPU_PINNING": False}
_DEVICE = "CPU"


def inline_functions(model: bytes) -> bytes:
    """``model`` (ONNX bytes) with its model-local functions inlined; unchanged when it has none.
    Raises :class:`BackendError` for bytes that are not an ONNX model."""
    import onnx
    from google.protobuf.message import DecodeError
    from onnx import inliner

    try:
        proto = onnx.load_from_string(model)
    except (DecodeError, ValueError) as e:
        raise BackendError(f"not an ONNX model ({type(e).__name__}: {str(e)[:120]})") from None
    if not proto.functions:
        return model
    proto = inliner.inline_local_functions(proto)
    _take_grouped_path(proto.graph)
    return proto.SerializeToString()


# the MetaUpscale body's If nodes, by their then-branch's name, replaced by their else-branch on OpenVINO
_ELSE_BRANCHES = ("MetaUpscale_conv", "MetaUpscale_plain_filters")


def _take_grouped_path(graph: onnx.GraphProto) -> None:
    """Replace the ``MetaUpscale`` body's two ``If`` nodes by their else-branches, in place:

    - between its convolution path and its grouped path, the grouped path: OpenVINO's CPU plugin compiles a
      ``Conv`` only when its weights' output-channel count is static ("Unsupported operation of type:
      Convolution"), and the convolution path's filters are computed (3 * K_r * K_c channels, from the plan). The
      grouped path is exact for every valid plan (the body's contract), so the result is the same; only the speed
      at integer scales differs.
    - between the grouped path's filters for one-pixel blocks and for blocks of any size, the general one (the
      3x3 filters placed by one-hot products: exact). OpenVINO 2026.4's ``If`` returns stale data on the first
      call whose shapes outgrow the request's buffers (measured: upscale.onnx in one call at LR 300x300 x3.3,
      every value wrong, the features' contribution lost; right on the next call, and right with the ``If``
      gone: tests/test_openvino_portable.py).
    """
    from onnx import helper

    def flatten(nodes: list) -> list:
        out = []
        for node in nodes:
            branches = {a.name: a.g for a in node.attribute if a.name in ("then_branch", "else_branch")}
            then = branches.get("then_branch")
            if node.op_type == "If" and then is not None and then.name in _ELSE_BRANCHES:
                other = branches["else_branch"]
                out.extend(flatten(list(other.node)))
                out.append(helper.make_node("Identity", [other.output[0].name], [node.output[0]], name=node.name))
            else:
                out.append(node)
        return out

    nodes = flatten(list(graph.node))
    del graph.node[:]
    graph.node.extend(nodes)


# OpenVINO's messages: a chain of "Exception from <source>:" lines, "Check '...' failed at <source>:" and
# "FrontEnd API failed with <kind>:" around the one line that says what happened
_NOISE = re.compile(r"^(Exception from \S+:|Check '.*' failed at \S+:|FrontEnd API failed with \w+:)$")
_TAIL = re.compile(r" Check '.*' failed at \S+:$")


def openvino_message(e: BaseException) -> str:
    """One readable line from an OpenVINO exception."""
    text = str(e).strip()
    oom = out_of_memory(text, e)
    if oom:
        return oom
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for ln in lines:
        if ln.startswith("-- No conversion rule found for operations:"):
            return ln.removeprefix("-- ")[:300]
    useful = [_TAIL.sub("", ln) for ln in lines if not _NOISE.match(ln)]
    return (useful[0] if useful else (lines[0] if lines else type(e).__name__))[:300]


class OpenVinoBackend:
    """One ONNX graph (``model``: its verified bytes, described by ``spec``) compiled by OpenVINO."""

    def __init__(
        self, model: bytes, spec: GraphSpec, threads: int = 0, properties: Mapping[str, Any] | None = None
    ) -> None:
        if properties and "INFERENCE_PRECISION_HINT" in properties:
            raise ValueError(f"the inference precision is always {INFERENCE_PRECISION}; do not pass it")
        self.spec = spec
        # how the MetaUpscale body runs here (Pipeline.upscale_body; the ort backend's says its own)
        self.body = "the grouped path only (OpenVINO: inline_functions replaces the convolution path)"
        if any(t.dtype == "float64" for t in spec.inputs):
            raise BackendError(FLOAT64_REFUSAL.format(file=spec.file))
        try:
            data = inline_functions(model)
        except BackendError as e:
            raise BackendError(f"{spec.file}: OpenVINO cannot load it: {e}") from None
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": INFERENCE_PRECISION, **DEFAULT_PROPERTIES}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        config.update(properties or {})
        core = _core()
        try:
            self.compiled = core.compile_model(core.read_model(data), _DEVICE, config)
        except (RuntimeError, MemoryError) as e:
            raise BackendError(f"{spec.file}: OpenVINO cannot load it: {openvino_message(e)}") from None
        got = self.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        if got != INFERENCE_PRECISION:
            raise BackendError(f"{spec.file}: OpenVINO compiled it for {got}, not {INFERENCE_PRECISION}")
        self.inputs = _port_names(self.compiled.inputs, spec.inputs, spec.file, "input")
        self.output_names = [t.name for t in spec.outputs]
        outputs = _port_names(self.compiled.outputs, spec.outputs, spec.file, "output")
        missing = sorted(set(self.output_names) - set(outputs))
        if missing:
            raise BackendError(f"{spec.file}: OpenVINO's compiled model lacks the outputs {missing}")
        self._ports = {name: self.compiled.output(name) for name in self.output_names}
        self._idle: list[Any] = []
        self._lock = threading.Lock()

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """feeds (every input the manifest lists) -> outputs (float arrays the caller owns)."""
        check_feeds(self.spec, feeds)
        if self.compiled is None:
            raise BackendError(f"{self.spec.file}: the OpenVINO backend is closed")
        inputs = {name: np.asarray(feeds[name], order="C") for name in self.inputs}  # (rank 0 stays rank 0)
        with self._lock:
            request = self._idle.pop() if self._idle else self.compiled.create_infer_request()
        try:
            # inputs read in place (validated, contiguous); outputs copied out: the request's buffers are reused
            result = request.infer(inputs, share_inputs=True, share_outputs=False)
        except (RuntimeError, MemoryError) as e:
            raise BackendError(f"{self.spec.file}: OpenVINO failed: {openvino_message(e)}") from None
        finally:
            with self._lock:
                self._idle.append(request)
        return {name: result[port] for name, port in self._ports.items()}

    def runtime_model(self) -> Any:
        """The graph OpenVINO runs after its transformations (``ov.Model``; see :func:`convolution_kernels`)."""
        return self.compiled.get_runtime_model()

    def close(self) -> None:
        with self._lock:
            self._idle.clear()
        self.compiled = None

    def __enter__(self) -> OpenVinoBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def convolution_kernels(runtime_model: Any) -> list[tuple[str, str, tuple[str, ...]]]:
    """The convolutions of a compiled model's runtime graph (:meth:`OpenVinoBackend.runtime_model`): per layer,
    its kernel, its runtime precision and the ONNX nodes fused into it, e.g. ``("brgconv_avx512_I8", "u8",
    ("/body.0/Conv", "/body.0/Relu", ...))``: an INT8 convolution runs at ``"u8"`` or ``"i8"``."""
    out = []
    for op in runtime_model.get_ordered_ops():
        info = op.get_rt_info()
        if "layerType" in info and info["layerType"].astype(str) == "Convolution":
            fused = tuple(n for n in info["originalLayersNames"].astype(str).split(",") if n)
            out.append((info["primitiveType"].astype(str), info["runtimePrecision"].astype(str), fused))
    return out


_CORE: Any = None


def _core() -> Any:
    """One ``openvino.Core`` per process (it holds the loaded device plugins; thread-safe)."""
    global _CORE
    if _CORE is None:
        import openvino as ov

        _CORE = ov.Core()
    return _CORE


def _port_names(ports: Any, tensors: tuple, file: str, what: str) -> list[str]:
    """The manifest names of a compiled model's ports (each must carry one); a port the manifest does not list
    is an error (OpenVINO may drop unused inputs, never add any)."""
    known = {t.name for t in tensors}
    names = []
    for port in ports:
        found = sorted(port.get_names() & known)
        if not found:
            name = port.get_any_name()
            raise BackendError(f"{file}: OpenVINO's compiled model has an {what} {name!r} the manifest lacks")
        names.append(found[0])
    return names
