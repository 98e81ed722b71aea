"""The convolution path of the upscale body as a five-node graph, its plan logic on the host (ONNX Runtime CPU).

The ``MetaUpscale`` body decides its path and every shape from its inputs in the graph: about 220 small nodes a
call, 0.35 ms of CPU time on the project's 2-core machine, 0.85-0.95 ms right after a feature-graph call (cold
caches), against a whole x2 stage of 7-9 ms on 256 x 256 features (``benchmarks/upscale_floor.py``). Where the
runtime holds the plan's filter table (:class:`~metasr.runtime.predictor_split.FilterCache`) and the call takes
the NCHWc variant's convolution (:mod:`metasr.export.metaupscale_nchwc`), the host already knows all of it:
:class:`DirectConv` computes the slot filters, their NCHWc packing and the output window in numpy (tens of
microseconds) and runs a graph of ``ReorderInput``, ``com.microsoft.nchwc:Conv`` (with add_mean's bias as the
convolution's bias), ``ReorderOutput``, ``Reshape`` and ``Col2Im``; a tile's output is its rows and columns of
that (a copy, as the body's ``Slice``).

Taken exactly where the variant's body takes its NCHWc convolution (:func:`plan`: one group per axis, blocks of
s = 1 or 2 rows on the block grid, K_r = K_c = K in ``D2S_SLOTS``, at least ``MIN_BLOCKS`` member blocks, whole
channel blocks) and the output rows and columns are each one run of the interleaved layout; any other call runs
the graph (``None``). Shapes: features (N, C, h, w) -> nb = ceil(h / s) x ceil(w / s) blocks, filters
(3K^2 -> Opad, C, T, T) with T = 3 (s = 1, pads 1) or 4 (s = 2, stride 2, pads (1, 2)), the interleaved image
(N, 3, nb_r K, nb_c K), the output its (H, W) window. The same kernels on the same filters: the output equals
the body's to float32 rounding (the bias is added inside the convolution instead of after the interleave;
``tests/test_ort_direct.py`` measures the difference).

``METASR_ORT_DIRECT=0`` turns it off (measurements, or to rule it out); ``METASR_ORT_NCHWC=0`` does too.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

import numpy as np
from metasr.export.metaupscale_conv import D2S_SLOTS
from metasr.export.metaupscale_nchwc import MIN_BLOCKS, NCHWC_DOMAIN
from metasr.export.onnx_proto import make_graph, make_node, make_opsetid, make_tensor_value_info, protos

__all__ = ["ENV", "DirectConv", "DirectPlan", "mean_bias", "plan"]

ENV = "METASR_ORT_DIRECT"
COL2IM_OPSET = 18


@dataclass(frozen=True)
class DirectPlan:
    """One call on the direct path: slot count ``k``, block size ``s``, the slots' offset indices and rows within
    their block per axis, the blocks per axis and the output window (first row / column, count) in the
    interleaved image."""

    k: int
    s: int
    row_off: np.ndarray
    col_off: np.ndarray
    row_d: np.ndarray
    col_d: np.ndarray
    nb_r: int
    nb_c: int
    rows: tuple[int, int]
    cols: tuple[int, int]


def _axis(feeds: dict[str, np.ndarray], axis: str, size: int) -> tuple[np.ndarray, np.ndarray, int, int] | None:
    """(slot offset indices, slot rows within the block, first row, count) of one axis, or None off the path."""
    src, idx = feeds[f"{axis}_src"], feeds[f"{axis}_idx"]
    groups, slots, pick = feeds[f"{axis}_groups"], feeds[f"{axis}_slots"], feeds[f"{axis}_pick"]
    if groups.ndim != 3 or slots.ndim != 2 or groups.shape[0] != 1 or slots.shape[0] != 1 or not pick.size:
        return None
    length, k, s = groups.shape[1], slots.shape[1], groups.shape[2]
    first = src[groups[0, :, 0]]  # each member block's first input row
    if np.any(first % s):
        return None
    member = (pick // k) % length
    run = first[member] // s * k + pick % k  # each output row's row in the interleaved image
    if run[0] < 0 or run[-1] >= -(-size // s) * k or np.any(run - run[0] != np.arange(run.size)):
        return None
    rep = pick[slots[0]]  # the output row each slot is taken from: its member gives the slot's row in the block
    d = src[slots[0]] - first[(rep // k) % length]
    if d.min() < 0 or d.max() >= s:
        return None
    return idx[slots[0]], d, int(run[0]), int(run.size)


def plan(feeds: dict[str, np.ndarray], block: int) -> DirectPlan | None:
    """The direct call for these (valid) upscale feeds, or None where the graph must run (module docstring)."""
    f = feeds["features"]
    if f.ndim != 4 or f.dtype != np.float32 or f.shape[1] % block:
        return None
    k, s = feeds["row_slots"].shape[-1], feeds["row_groups"].shape[-1]
    if k not in D2S_SLOTS or feeds["col_slots"].shape[-1] != k or feeds["col_groups"].shape[-1] != s or s > 2:
        return None
    rows, cols = _axis(feeds, "row", f.shape[2]), _axis(feeds, "col", f.shape[3])
    nb_r, nb_c = -(-f.shape[2] // s), -(-f.shape[3] // s)
    if rows is None or cols is None or nb_r * nb_c < MIN_BLOCKS:
        return None
    return DirectPlan(k, s, rows[0], cols[0], rows[1], cols[1], nb_r, nb_c, rows[2:], cols[2:])


def _filters(p: DirectPlan, table: np.ndarray, bias: np.ndarray, block: int) -> tuple[np.ndarray, np.ndarray]:
    """The slot pairs' filters in the NCHWc kernels' OIhw{B}i{B}o layout (Opad, C, T, T) and the bias (Opad,):
    the body's ``cv_w`` (channels (o, kr, kc); the 3x3 taps placed at each slot's row and column of its block's
    window, as the body's one-hot products do) padded to whole blocks with zero filters."""
    k, t = p.k, 3 if p.s == 1 else 4
    c = table.shape[-1] // 27
    w = table[p.row_off][:, p.col_off].reshape(k, k, 3, 3, c, 3)  # (kr, kc, ky, kx, c, o)
    emb = np.zeros((3, k, k, c, t, t), np.float32)  # (o, kr, kc, c, ty, tx)
    wt = w.transpose(5, 0, 1, 4, 2, 3)
    for kr in range(k):
        for kc in range(k):
            dr, dc = int(p.row_d[kr]), int(p.col_d[kc])
            emb[:, kr, kc, :, dr : dr + 3, dc : dc + 3] = wt[:, kr, kc]
    out = 3 * k * k
    padded = -(-out // block) * block
    full = np.zeros((padded, c, t, t), np.float32)
    full[:out] = emb.reshape(out, c, t, t)
    packed = full.reshape(padded // block, block, c // block, block, t, t).transpose(0, 2, 4, 5, 3, 1)
    b = np.zeros(padded, np.float32)
    b[:out] = np.repeat(bias, k * k)
    return np.ascontiguousarray(packed).reshape(padded, c, t, t), b


def _model(k: int, s: int) -> bytes:
    """x (N, C, h, w), w (Opad, C, T, T) packed, b (Opad,), image (2,) -> y (N, 3, nb_r k, nb_c k)."""
    pb = protos()
    f32, i64 = pb.TensorProto.FLOAT, pb.TensorProto.INT64
    pads, strides = ([1, 1, 1, 1], [1, 1]) if s == 1 else ([1, 1, 2, 2], [2, 2])
    nodes = [
        make_node("ReorderInput", ["x"], ["xb"], domain=NCHWC_DOMAIN, channels_last=0),
        make_node("Conv", ["xb", "w", "b"], ["yb"], domain=NCHWC_DOMAIN, pads=pads, strides=strides),
        make_node("ReorderOutput", ["yb"], ["y3"], domain=NCHWC_DOMAIN, channels=3 * k * k, channels_last=0),
        make_node("Reshape", ["y3", "flat"], ["yf"]),
        make_node("Col2Im", ["yf", "image", "blocks"], ["y"], strides=[k, k]),
    ]
    flat = pb.TensorProto(name="flat", dims=[3], data_type=i64, int64_data=[0, 0, -1])
    blocks = pb.TensorProto(name="blocks", dims=[2], data_type=i64, int64_data=[k, k])
    inputs = [make_tensor_value_info(n, f32, None) for n in ("x", "w", "b")]
    inputs.append(make_tensor_value_info("image", i64, [2]))
    graph = make_graph(nodes, f"direct_k{k}_s{s}", inputs, [make_tensor_value_info("y", f32, None)])
    graph.initializer.extend([flat, blocks])
    model = pb.ModelProto(ir_version=10, graph=graph, producer_name="metasr")
    model.opset_import.extend([make_opsetid("", COL2IM_OPSET), make_opsetid(NCHWC_DOMAIN, 1)])
    return model.SerializeToString()


def mean_bias(body: bytes, output: str) -> np.ndarray | None:
    """add_mean's bias (3,) where the graph's ``output`` is ``Add(MetaUpscale's output, a (1, 3, 1, 1) float32
    initializer)`` (the float32 upscale body as exported), else None (the direct path does not apply)."""
    proto = protos().ModelProto()
    proto.ParseFromString(body)
    g = proto.graph
    made = {o: n for n in g.node for o in n.output}
    add = made.get(output)
    if add is None or add.op_type != "Add" or add.domain not in ("", "ai.onnx") or len(add.input) != 2:
        return None
    up = made.get(add.input[0])
    if up is None or up.op_type != "MetaUpscale":
        return None
    init = next((t for t in g.initializer if t.name == add.input[1]), None)
    if init is None or list(init.dims) != [1, 3, 1, 1] or init.data_type != protos().TensorProto.FLOAT:
        return None
    raw = np.frombuffer(init.raw_data, np.float32) if init.raw_data else np.asarray(init.float_data, np.float32)
    return raw.reshape(3).copy() if raw.size == 3 else None


class DirectConv:
    """The direct path's sessions (one per slot count and block size, created on first use) for one body."""

    def __init__(self, bias: np.ndarray, block: int, make_session: object) -> None:
        self.bias, self.block = bias, block
        self._make = make_session  # bytes -> an ONNX Runtime session, the body's options
        self._sessions: dict[tuple[int, int], object] = {}
        self._lock = threading.Lock()
        self.taken = 0  # calls answered here (the rest ran the graph)

    @staticmethod
    def enabled() -> bool:
        return os.environ.get(ENV, "1") != "0"

    def _session(self, k: int, s: int) -> object | None:
        """The session of slot count k and block size s, or None where it does not load (the graph runs)."""
        with self._lock:
            if (k, s) not in self._sessions:
                try:
                    self._sessions[(k, s)] = self._make(_model(k, s))
                except Exception:  # e.g. a build without Col2Im: the body, which has its own fallbacks, runs
                    self._sessions[(k, s)] = None
            return self._sessions[(k, s)]

    def run(self, feeds: dict[str, np.ndarray], table: np.ndarray) -> np.ndarray | None:
        """The body's output (N, 3, H, W) for these feeds and the plan's filter table, or None off the path."""
        p = plan(feeds, self.block)
        session = None if p is None else self._session(p.k, p.s)
        if session is None:
            return None
        w, b = _filters(p, table, self.bias, self.block)
        image = np.array([p.nb_r * p.k, p.nb_c * p.k], np.int64)
        (y,) = session.run(None, {"x": feeds["features"], "w": w, "b": b, "image": image})
        with self._lock:
            self.taken += 1
        (r0, h), (c0, w_) = p.rows, p.cols
        if (r0, c0, h, w_) == (0, 0, y.shape[2], y.shape[3]):
            return y
        return np.ascontiguousarray(y[:, :, r0 : r0 + h, c0 : c0 + w_])  # (the body's Slice copies too)
