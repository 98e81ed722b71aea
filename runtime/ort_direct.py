"""The upscale body's calls with its plan logic on the host (ONNX Runtime CPU): the "direct paths".

The ``MetaUpscale`` body decides its path and every shape from its inputs in the graph: about 220 small nodes a
call on the convolution path, about 400 and the filter packing on the phase path, paid again by every tile.
Where the ort backend holds the plan's filter table (:class:`~metasr.runtime.predictor_split.FilterCache`) and
loaded the NCHWc variant (:mod:`metasr.runtime.ort_cpu`), :class:`DirectPaths` decides on the host and runs small
graphs of its own, each created on first use:

* the **convolution path** (this module): the slot filters, their NCHWc packing and the output window computed in
  numpy (tens of microseconds), then ``ReorderInput``, ``com.microsoft.nchwc:Conv`` (add_mean's bias as the
  convolution's bias) and the interleave: the native one (:mod:`metasr.runtime.native`: straight from the
  convolution's NCHWc output to the output window) where it is built, else ``ReorderOutput``, ``Reshape`` and
  ``Col2Im``, a tile's output its rows and columns of that (a copy, as the body's ``Slice``);
* the **phase path** (:mod:`metasr.runtime.ort_direct_phase`): the variant's q^2 strided convolutions on filters
  packed once per plan.

A zoom's features (``Pipeline.encode``'s) are reordered once, not in every call
(:mod:`metasr.runtime.blocked_features`): the graphs then take their kept NCHWc copy in place of ``ReorderInput``.

The convolution path is taken exactly where the variant takes its NCHWc convolution (:func:`plan`: one group per
axis, blocks of s = 1 or 2 rows on the block grid, K_r = K_c = K in ``D2S_SLOTS``, at least ``MIN_BLOCKS`` member
blocks, whole channel blocks) and the output rows and columns are each one run of the interleaved layout; any
other call runs the graph (``None``), as does one whose direct graph does not load. Shapes: features (N, C, h, w)
-> nb = ceil(h / s) x ceil(w / s) blocks, filters (3K^2 -> Opad, C, T, T) with T = 3 (s = 1, pads 1) or 4 (s = 2,
stride 2, pads (1, 2)), the interleaved image (N, 3, nb_r K, nb_c K), the output its (H, W) window. The same
kernels on the same filters: the outputs are bit-identical to the variant's (the bias inside the convolution
rounds as the ``Add`` after the interleave did; ``tests/test_ort_direct.py``). Measured in
``benchmarks/direct_path.py`` (docs/upscale-stage.md).

``METASR_ORT_DIRECT=0`` turns them off (measurements, or to rule them out); ``METASR_ORT_NCHWC=0`` does too.
"""

from __future__ import annotations

import os
import threading
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from metasr.export.metaupscale_conv import D2S_SLOTS
from metasr.export.metaupscale_nchwc import MIN_BLOCKS, NCHWC_DOMAIN
from metasr.export.onnx_proto import make_graph, make_node, make_tensor_value_info, protos
from metasr.runtime import native
from metasr.runtime.backends import out_of_memory
from metasr.runtime.blocked_features import BlockedFeatures
from metasr.runtime.ort_cpu import COL2IM_OPSET, features_in, nchwc_model, pack_filters
from metasr.runtime.ort_direct_phase import PhaseFilters, phase_feeds, phase_model, phase_plan, phase_tables

__all__ = ["ENV", "PHASE_SESSIONS", "DirectPaths", "DirectPlan", "conv_tables", "mean_bias", "plan", "shared_arena"]

ENV = "METASR_ORT_DIRECT"
PHASE_SESSIONS = 8  # phase-path graphs kept (one per (q, p): a zoom through many scales creates more)


@dataclass(frozen=True, eq=False)  # (arrays: compared and hashed by identity)
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
    b = np.zeros(padded, np.float32)
    b[:out] = np.repeat(bias, k * k)
    return pack_filters(full, block), b


def reorder_model() -> bytes:
    """x (N, C, h, w) -> its NCHWc copy xb (the same shape, channels in blocks of B)."""
    nodes, x = features_in(False)
    out = make_tensor_value_info("xb", protos().TensorProto.FLOAT, None)
    return nchwc_model(make_graph(nodes, "reorder", [x], [out]), {"": 17, NCHWC_DOMAIN: 1}).SerializeToString()


def _model(k: int, s: int, interleave: bool = True, blocked: bool = False) -> bytes:
    """x (N, C, h, w) (or ``blocked``: xb, its NCHWc copy), w (Opad, C, T, T) packed, b (Opad,), image (2,) -> y
    (N, 3, nb_r k, nb_c k); without ``interleave`` (the native one follows: :mod:`metasr.runtime.native`) x, w, b
    -> the convolution's output yb (N, Opad, nb_r, nb_c) in NCHWc memory."""
    pb = protos()
    f32, i64 = pb.TensorProto.FLOAT, pb.TensorProto.INT64
    pads, strides = ([1, 1, 1, 1], [1, 1]) if s == 1 else ([1, 1, 2, 2], [2, 2])
    nodes, x = features_in(blocked)
    nodes.append(make_node("Conv", ["xb", "w", "b"], ["yb"], domain=NCHWC_DOMAIN, pads=pads, strides=strides))
    inputs = [x, *(make_tensor_value_info(n, f32, None) for n in ("w", "b"))]
    if not interleave:
        graph = make_graph(nodes, f"direct_k{k}_s{s}_conv", inputs, [make_tensor_value_info("yb", f32, None)])
        return nchwc_model(graph, {"": COL2IM_OPSET, NCHWC_DOMAIN: 1}).SerializeToString()
    nodes += [
        make_node("ReorderOutput", ["yb"], ["y3"], domain=NCHWC_DOMAIN, channels=3 * k * k, channels_last=0),
        make_node("Reshape", ["y3", "flat"], ["yf"]),
        make_node("Col2Im", ["yf", "image", "blocks"], ["y"], strides=[k, k]),
    ]
    flat = pb.TensorProto(name="flat", dims=[3], data_type=i64, int64_data=[0, 0, -1])
    blocks = pb.TensorProto(name="blocks", dims=[2], data_type=i64, int64_data=[k, k])
    inputs.append(make_tensor_value_info("image", i64, [2]))
    graph = make_graph(nodes, f"direct_k{k}_s{s}", inputs, [make_tensor_value_info("y", f32, None)])
    graph.initializer.extend([flat, blocks])
    return nchwc_model(graph, {"": COL2IM_OPSET, NCHWC_DOMAIN: 1}).SerializeToString()


def conv_tables(p: DirectPlan) -> tuple[np.ndarray, np.ndarray]:
    """The native interleave's row and column tables of a convolution-path call (one part, block index and slot
    of each window row: the image's row r0 + y is block (r0 + y) // k, slot (r0 + y) % k)."""

    def axis(first: int, count: int) -> np.ndarray:
        at = first + np.arange(count)
        return native.axis_table(np.zeros_like(at), at // p.k, at % p.k, np.full_like(at, p.k))

    return axis(*p.rows), axis(*p.cols)


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


@lru_cache(maxsize=1)
def shared_arena() -> bool:
    """Register one CPU memory arena in ONNX Runtime's environment (once per process) for the direct sessions:
    whether that worked. An arena per session would hold each one's largest run for as long as it lives: a zoom
    through 31 scales on one Pipeline (14 direct sessions, 200 x 300 features, 64 MiB tiles) grew the process by
    267 MiB that way, by 100 with the shared arena, 129 with no arena (every buffer faulted in again) and 62
    without the direct paths (``tests/test_memory.py``). Sessions that do not ask for it
    (``session.use_env_allocators``) keep their own."""
    try:
        import onnxruntime as ort

        info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
        ort.create_and_register_allocator(info, ort.OrtArenaCfg(0, -1, -1, -1))  # ONNX Runtime's defaults
    except Exception:  # an ONNX Runtime without it: each direct session keeps no arena
        return False
    return True


class DirectPaths:
    """The direct paths' sessions for one body: one per (slot count, block size) on the convolution path and per
    (q, p) on the phase path (:mod:`metasr.runtime.ort_direct_phase`; the last ``PHASE_SESSIONS`` used), each
    created on first use (~4.5 ms for the q = 10 graph's 100 convolutions); and the phase path's packed filters."""

    def __init__(
        self, bias: np.ndarray, block: int, make_session: Callable[[bytes], object], *, phase: bool = True
    ) -> None:
        self.bias, self.block = bias, block
        self.phase = phase  # the variant has a phase path (not where it interleaves by DepthToSpace: opset < 18)
        self._make = make_session  # bytes -> an ONNX Runtime session (the backend's: in the shared arena)
        self._sessions: OrderedDict[tuple, object] = OrderedDict()
        self._lock = threading.Lock()
        self.phase_filters = PhaseFilters(bias, block)
        self.blocked = BlockedFeatures()  # a zoom's features, reordered once
        self.taken: Counter[str] = Counter()  # calls answered here per path (the rest ran the graph)

    def close(self) -> None:
        """Drop what is kept between calls: the sessions and a zoom's features copy."""
        with self._lock:
            self._sessions.clear()
        self.blocked.clear()

    @staticmethod
    def enabled() -> bool:
        return os.environ.get(ENV, "1") != "0"

    def _session(self, key: tuple, build: Callable[[], bytes]) -> object | None:
        """The session of ``key``, or None where it does not load (the graph runs)."""
        with self._lock:
            if key not in self._sessions:
                try:
                    self._sessions[key] = self._make(build())
                except Exception as e:  # e.g. a build without Col2Im: the body, which has its own fallbacks, runs
                    if out_of_memory(str(e), e):  # transient: the graph runs this call, the next one tries again
                        return None
                    self._sessions[key] = None
                phase = [k for k in self._sessions if k[0] == "phase"]
                for old in phase[: max(0, len(phase) - PHASE_SESSIONS)]:
                    del self._sessions[old]
            self._sessions.move_to_end(key)
            return self._sessions[key]

    def run(self, feeds: dict[str, np.ndarray], table: np.ndarray) -> np.ndarray | None:
        """The body's output (N, 3, H, W) for these feeds and the plan's filter table, or None off both paths."""
        out = self._conv(feeds, table)
        if out is None and self.phase:
            out = self._phase(feeds, table)
        return out

    def _features(self, features: np.ndarray) -> dict[str, np.ndarray]:
        """{"xb": the features' kept NCHWc copy} (a zoom: :mod:`metasr.runtime.blocked_features`), or {"x": them}
        where they are not kept (or the reorder's session does not load)."""

        def reorder(x: np.ndarray) -> np.ndarray | None:
            session = self._session(("reorder",), reorder_model)
            return None if session is None else session.run(None, {"x": x})[0]

        xb = self.blocked.get(features, reorder)
        return {"x": features} if xb is None else {"xb": xb}

    def _conv(self, feeds: dict[str, np.ndarray], table: np.ndarray) -> np.ndarray | None:
        p = plan(feeds, self.block)
        if p is None:
            return None
        own = native.available()  # the interleave in one native pass, or the graph's
        x = self._features(feeds["features"])
        key = ("conv", p.k, p.s, own, "xb" in x)
        session = self._session(key, lambda: _model(p.k, p.s, not own, "xb" in x))
        if session is None:
            return None
        w, b = _filters(p, table, self.bias, self.block)
        x |= {"w": w, "b": b}
        if own:
            (yb,) = session.run(None, x)
            self._count("conv")
            return native.interleave([yb], self.block, 1, *conv_tables(p))
        (y,) = session.run(None, x | {"image": np.array([p.nb_r * p.k, p.nb_c * p.k], np.int64)})
        return self._window(y, p.rows, p.cols, "conv")

    def _phase(self, feeds: dict[str, np.ndarray], table: np.ndarray) -> np.ndarray | None:
        p = phase_plan(feeds, self.block)
        if p is None:
            return None
        own = native.available()
        x = self._features(feeds["features"])
        blocked = "xb" in x
        build = lambda: phase_model(p.q, p.p, self.block, not own, blocked)  # noqa: E731
        session = self._session(("phase", p.q, p.p, own, blocked), build)
        if session is None:
            return None
        pairs = self.phase_filters.pairs(p, table)
        if own:
            parts = session.run(None, phase_feeds(p, x, pairs, self.block, interleave=False))
            self._count("phase")
            return native.interleave(parts, self.block, p.q, *phase_tables(p))
        (y,) = session.run(None, phase_feeds(p, x, pairs, self.block))
        return self._window(y, p.rows, p.cols, "phase")

    def _count(self, path: str) -> None:
        with self._lock:
            self.taken[path] += 1

    def _window(self, y: np.ndarray, rows: tuple[int, int], cols: tuple[int, int], path: str) -> np.ndarray:
        self._count(path)
        (r0, h), (c0, w) = rows, cols
        if (r0, c0, h, w) == (0, 0, y.shape[2], y.shape[3]):
            return y
        return np.ascontiguousarray(y[:, :, r0 : r0 + h, c0 : c0 + w])  # (the body's Slice copies too)
