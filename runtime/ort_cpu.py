"""ONNX Runtime's CPU provider: the ``MetaUpscale`` body's convolution on its NCHWc kernels.

:func:`specialize` takes a graph's verified bytes and returns the bytes to load: the same model with the
``MetaUpscale`` function's body replaced by :mod:`metasr.export.metaupscale_nchwc`'s variant for this CPU's block
size, or the bytes unchanged, with one line saying which and why. The variant also interleaves by ``Col2Im``
instead of ``DepthToSpace`` (the same values; ONNX Runtime's ``DepthToSpace`` runs on one thread, 5-9x slower
at K = 2): an opset-18 operator, so the model's default opset is raised from 17 to 18, unless a node would
read differently there (:func:`col2im_opset`), in which case it keeps ``DepthToSpace``.

It rewrites only a body that is byte for byte this version's standard body (any other, e.g. an older export's or
one a graph tool changed, runs as it is) in a float32 graph (the NCHWc kernels are float32 only; FP16 graphs
keep theirs), and only after a probe, once per process, has found the kernels (``ReorderInput``'s channel
blocks give the block size) and checked the variant's convolution (its filter packing and the kernels) against
a numpy convolution, both forms (x2: 3x3, x1.5: 4x4 at stride 2): within 1e-4 of the output's magnitude, the
bound ``tests/test_upscale_body.py`` holds the body's two paths to. ``tests/test_ort_cpu.py`` checks the whole
variant on every branch. Anything missing (the ``onnx`` package, the kernels on this CPU or ONNX Runtime build,
a probe that disagrees) leaves the standard body, which is correct everywhere; only speed differs. A variant
that passes the probe but does not load in some graph falls back to the graph as exported
(:class:`~metasr.runtime.backends.OrtBackend`).

Cost per process, measured on the project's 2-core machine: ~60 ms for the probe, a few ms per graph. It reads
ONNX's protobuf classes without importing ``onnx`` (:mod:`metasr.export.onnx_proto`: that import alone takes
0.65-1 s here).

``METASR_ORT_NCHWC=0`` turns the rewrite off (measurements, or to rule it out).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from functools import lru_cache

import numpy as np
from metasr.export.metaupscale_nchwc import BRANCH_INPUTS, MIN_BLOCKS, NCHWC_DOMAIN, nchwc_branch
from metasr.export.metaupscale_phase import PHASE_MIN_PIXELS, PHASE_PERIODS
from metasr.export.onnx_proto import (
    ProtoUnavailable,
    make_graph,
    make_node,
    make_opsetid,
    make_tensor_value_info,
    protos,
)

__all__ = [
    "ENV",
    "branch_feeds",
    "branch_model",
    "features_in",
    "nchwc_block",
    "nchwc_model",
    "pack_filters",
    "specialize",
]

ENV = "METASR_ORT_NCHWC"
_TOL = 1e-4  # relative to the output's magnitude (see the module docstring)


def _session(model: object) -> object:  # a ModelProto or its bytes
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 4
    opts.intra_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # quicker to create; same kernels
    data = model if isinstance(model, bytes) else model.SerializeToString()
    return ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])


def nchwc_model(graph: object, domains: dict[str, int], functions: tuple = ()) -> object:
    """A ModelProto of ``graph`` importing ``domains`` (name -> opset version), the variant's and the direct
    paths' (``metasr.runtime.ort_direct``) graphs alike."""
    pb = protos()
    model = pb.ModelProto(ir_version=10, graph=graph, producer_name="metasr")
    model.opset_import.extend(make_opsetid(d, v) for d, v in domains.items())
    model.functions.extend(functions)
    return model


def _block_size() -> int:
    """The NCHWc block size ONNX Runtime's CPU kernels use here (raises where they are missing)."""
    f32 = protos().TensorProto.FLOAT
    node = make_node("ReorderInput", ["x"], ["y"], domain=NCHWC_DOMAIN)
    graph = make_graph(
        [node], "block", [make_tensor_value_info("x", f32, [1, 4, 1, 1])], [make_tensor_value_info("y", f32, None)]
    )
    model = nchwc_model(graph, {"": 17, NCHWC_DOMAIN: 1})
    (y,) = _session(model).run(None, {"x": np.zeros((1, 4, 1, 1), np.float32)})
    return int(y.shape[1])  # 4 channels rounded up to one block


def _reference_conv(x: np.ndarray, w: np.ndarray, pads: tuple[int, ...], stride: int) -> np.ndarray:
    """ONNX ``Conv`` (no bias, one group) in numpy: x (N, C, h, w), w (O, C, T, T), pads (before, after) on
    both axes, or ONNX's (top, left, bottom, right)."""
    top, left, bottom, right = pads if len(pads) == 4 else (pads[0], pads[0], pads[1], pads[1])
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (top, bottom), (left, right)))
    t = w.shape[2]
    oh, ow = ((n - t) // stride + 1 for n in xp.shape[2:])
    out = np.zeros((x.shape[0], w.shape[0], oh, ow))
    for ty in range(t):
        for tx in range(t):
            win = xp[:, :, ty : ty + stride * oh : stride, tx : tx + stride * ow : stride]
            out += np.einsum("oc,nchw->nohw", w[:, :, ty, tx], win)
    return out


def branch_feeds(features: np.ndarray, filters: np.ndarray, block: int) -> dict[str, np.ndarray]:
    """Feeds of :func:`branch_model`: features (N, C, h, w), the body's filters ``cv_w`` (3K^2, C, T, T) with
    T = 3 (3x3, one pixel of padding) or 4 (4x4 at stride 2, pads (1, 2))."""
    c, t = features.shape[1], filters.shape[2]
    ints = {"C": c, "nc_B": block, "nc_CB": c // block, "cv_Tr": t, "cv_Tc": t}
    feeds = {"features": features, "cv_w": filters, "cv_unit": np.array(t == 3)}
    return feeds | {name: np.array([v], np.int64) for name, v in ints.items()}


def branch_model(k: int, block: int) -> bytes:
    """The variant's convolution for slot count k alone (:func:`nchwc_branch`: filter packing, ONNX Runtime's NCHWc
    kernels, both forms), fed by :func:`branch_feeds`; output (N, 3k^2, nb_r, nb_c) as the standard ``Conv``."""
    pb = protos()
    f32, i64 = pb.TensorProto.FLOAT, pb.TensorProto.INT64
    types = {"features": f32, "cv_w": f32, "cv_unit": pb.TensorProto.BOOL}
    inputs = [make_tensor_value_info(n, types.get(n, i64), None) for n in BRANCH_INPUTS]
    graph = make_graph(
        list(nchwc_branch(k, block).node), "branch", inputs, [make_tensor_value_info(f"nc{k}_out", f32, None)]
    )
    return nchwc_model(graph, {"": 17, NCHWC_DOMAIN: 1}).SerializeToString()


def _strided_model(block: int, pads: list[int], stride: int) -> bytes:
    """``ReorderInput``, one ``nchwc:Conv`` (3x3, ``pads``, ``stride``) on a packed filter input, ``ReorderOutput``:
    the phase path's convolutions (:mod:`metasr.export.metaupscale_phase`), whose pads reach past the kernel."""
    f32 = protos().TensorProto.FLOAT
    nodes = [
        make_node("ReorderInput", ["x"], ["xb"], domain=NCHWC_DOMAIN, channels_last=0),
        make_node("Conv", ["xb", "w"], ["yb"], domain=NCHWC_DOMAIN, pads=pads, strides=[stride, stride]),
        make_node("ReorderOutput", ["yb"], ["y"], domain=NCHWC_DOMAIN, channels=block, channels_last=0),
    ]
    io = [make_tensor_value_info(n, f32, None) for n in ("x", "w")]
    graph = make_graph(nodes, "strided", io, [make_tensor_value_info("y", f32, None)])
    return nchwc_model(graph, {"": 17, NCHWC_DOMAIN: 1}).SerializeToString()


def features_in(blocked: bool) -> tuple[list, object]:
    """The direct graphs' first node and features input (``metasr.runtime.ort_direct``): x (N, C, h, w) and its
    ``ReorderInput`` to xb, or, where the features come ``blocked`` (:mod:`metasr.runtime.blocked_features`), xb
    itself."""
    f32 = protos().TensorProto.FLOAT
    if blocked:
        return [], make_tensor_value_info("xb", f32, None)
    reorder = make_node("ReorderInput", ["x"], ["xb"], domain=NCHWC_DOMAIN, channels_last=0)
    return [reorder], make_tensor_value_info("x", f32, None)


def pack_filters(w: np.ndarray, block: int) -> np.ndarray:
    """(O, C, T, T) -> the OIhw{B}i{B}o layout (the shape unchanged), as the variant packs in its graph (and
    the direct convolution path on the host, ``metasr.runtime.ort_direct``)."""
    o, c, t, _ = w.shape
    return w.reshape(o // block, block, c // block, block, t, t).transpose(0, 2, 4, 5, 3, 1).reshape(w.shape).copy()


def _agrees(block: int) -> str | None:
    """Why the variant's convolution (:func:`branch_model`) disagrees with a numpy convolution on this machine, for
    both forms (None: it agrees)."""
    rng = np.random.default_rng(0)
    c = 2 * block
    x = rng.standard_normal((1, c, 9, 7)).astype(np.float32)
    for k, unit in ((2, True), (3, False)):  # x2: 3x3; x1.5: 4x4 at stride 2
        t = 3 if unit else 4
        w = rng.standard_normal((3 * k * k, c, t, t)).astype(np.float32)
        got = _session(branch_model(k, block)).run(None, branch_feeds(x, w, block))[0]
        want = _reference_conv(x, w, (1, 1) if unit else (1, 2), 1 if unit else 2)
        err = float(np.abs(got - want).max()) if got.shape == want.shape else float("inf")
        if not err <= _TOL * max(1.0, float(np.abs(want).max())):
            return f"its convolution differs from numpy's ({3 * k * k} channels, max {err:.3g})"
    x = rng.standard_normal((1, c, 11, 8)).astype(np.float32)  # the phase path's form: stride 4, pads past 3x3
    w = rng.standard_normal((block, c, 3, 3)).astype(np.float32)
    pads = [4, 3, 2, 4]
    got = _session(_strided_model(block, pads, 4)).run(None, {"x": x, "w": pack_filters(w, block)})[0]
    want = _reference_conv(x, w, tuple(pads), 4)
    err = float(np.abs(got - want).max()) if got.shape == want.shape else float("inf")
    if not err <= _TOL * max(1.0, float(np.abs(want).max())):
        return f"its strided convolution differs from numpy's (max {err:.3g})"
    return None


_PROBE_LOCK = threading.Lock()


def nchwc_block() -> int | str:
    """This machine's NCHWc block size, once the variant has been checked here; or why the variant is not used
    (a one-line reason). Probed once per process; threads asking at once wait for the one probe."""
    with _PROBE_LOCK:
        return _probe()


@lru_cache(maxsize=1)
def _probe() -> int | str:
    try:
        protos()
    except ProtoUnavailable as e:
        return str(e)
    try:
        block = _block_size()
    except Exception as e:  # any failure means: no kernels here
        return f"ONNX Runtime has no NCHWc kernels here ({str(e).splitlines()[0][:120]})"
    if block < 2:
        return "ONNX Runtime's NCHWc kernels are off on this CPU"
    try:
        return _agrees(block) or block
    except Exception as e:
        return f"the NCHWc body failed its check ({str(e).splitlines()[0][:120]})"


def specialize(model: bytes, precision: str) -> tuple[bytes, str]:
    """(the bytes to load on ONNX Runtime's CPU provider, one line on what was done)."""
    if b"MetaUpscale" not in model:
        return model, "no MetaUpscale node"
    if os.environ.get(ENV, "1") == "0":
        return model, f"standard MetaUpscale body ({ENV}=0)"
    if precision == "fp16":
        return model, "standard MetaUpscale body (FP16 graph: the NCHWc kernels are float32)"
    block = nchwc_block()
    if isinstance(block, str):
        return model, f"standard MetaUpscale body ({block})"
    from metasr.export.metaupscale_op import DOMAIN, OP_TYPE

    proto = protos().ModelProto()
    try:
        proto.ParseFromString(model)
    except Exception:  # not a model (ONNX Runtime says so in its one line)
        return model, "standard MetaUpscale body (the graph does not parse)"
    for fn in proto.functions:
        if (fn.domain, fn.name) != (DOMAIN, OP_TYPE):
            continue
        opset = next((o.version for o in fn.opset_import if o.domain == ""), None)
        if opset is None or fn.SerializeToString() != _body(opset, None):
            return model, "standard MetaUpscale body (not this version's: left as it is)"
        channels = _feature_channels(proto)
        if channels is not None and channels % block:
            return model, f"standard MetaUpscale body ({channels} feature channels: not whole NCHWc blocks of {block})"
        model_opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), opset)
        target = col2im_opset(proto, model_opset)
        for o in proto.opset_import:
            if o.domain in ("", "ai.onnx"):
                o.version = target
        fn.ParseFromString(_body(target, block))  # (bytes: any module's classes)
        proto.opset_import.append(make_opsetid(NCHWC_DOMAIN, 1))
        if target < COL2IM_OPSET:
            return proto.SerializeToString(), f"{VARIANT} (block {block}, interleave by DepthToSpace; {WHERE})"
        phase = f"; {PHASE}" if 16 % block == 0 else ""
        return proto.SerializeToString(), f"{VARIANT} (block {block}, interleave by Col2Im; {WHERE}{phase})"
    return model, "no MetaUpscale function"


@lru_cache(maxsize=8)
def _body(opset: int, block: int | None) -> bytes:
    """The serialized function: the standard body (``block`` None) or the variant (built once per process)."""
    from metasr.export.metaupscale_op import function_proto

    return function_proto(opset, block).SerializeToString()


VARIANT = "NCHWc variant of the MetaUpscale body"
WHERE = f"taken by calls on the convolution path with K_r = K_c, >= {MIN_BLOCKS} blocks and C in whole blocks"
PHASE = f"phase path for r = p/q, q in {', '.join(map(str, PHASE_PERIODS))}, >= {PHASE_MIN_PIXELS} pixels"


def _feature_channels(proto: object) -> int | None:
    """C of the graph input ``features`` where the graph declares it (the upscale graph; None elsewhere)."""
    for value in proto.graph.input:
        if value.name == "features":
            dims = value.type.tensor_type.shape.dim
            if len(dims) == 4 and dims[1].HasField("dim_value"):
                return int(dims[1].dim_value)
    return None


COL2IM_OPSET = 18
# default-domain operators whose opset-18 form reads differently what an opset-17 graph holds: their ``axes``
# moved from an attribute to an input (without ``axes`` they mean the same: reduce every axis); and ``Split``
# without a ``split`` input (17: equal parts by its output count; 18 also wants ``num_outputs``). Every other
# change at 18 adds an optional input or attribute whose default is the old behaviour (Pad, Resize,
# ScatterElements, ScatterND, LpPool); tests/test_ort_cpu.py checks the list against onnx's schemas.
AXES_TO_INPUT_18 = frozenset(
    {"ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean", "ReduceMin",
     "ReduceProd", "ReduceSumSquare"}
)  # fmt: skip


def _nodes(graph: object) -> Iterator[object]:
    for node in graph.node:
        yield node
        for att in node.attribute:
            if att.HasField("g"):
                yield from _nodes(att.g)
            for g in att.graphs:
                yield from _nodes(g)


def _changes_at_18(node: object) -> bool:
    if node.domain not in ("", "ai.onnx"):
        return False
    if node.op_type in AXES_TO_INPUT_18:
        return any(a.name == "axes" for a in node.attribute)
    if node.op_type == "Split":
        return (len(node.input) < 2 or not node.input[1]) and not any(a.name == "num_outputs" for a in node.attribute)
    return False


def col2im_opset(proto: object, model_opset: int) -> int:
    """The default-domain opset the variant runs at: the model's when it has ``Col2Im`` (>= 18); 18 for an
    opset-17 graph whose every node means the same there; else the model's (the variant then keeps
    ``DepthToSpace``). Older graphs are not raised: 15 -> 18 would cross the changes of 16 and 17 too
    (``RoiAlign``'s coordinates, for one)."""
    if model_opset != COL2IM_OPSET - 1:
        return model_opset
    graphs = [proto.graph, *proto.functions]
    return model_opset if any(_changes_at_18(n) for g in graphs for n in _nodes(g)) else COL2IM_OPSET
