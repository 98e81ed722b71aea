"""The phase path of the upscale body (r = p/q) with its plan logic and filter packing on the host (ONNX Runtime CPU).

The NCHWc variant's phase path (:mod:`metasr.export.metaupscale_phase`) runs a call as q^2 strided convolutions,
and in every call it also tests the layout, packs each phase pair's filters from the table (x3.3: 4016 filters
of 9C floats, 4.6 MB moved three times) and runs about 400 small nodes: a fixed cost of ~5 ms of CPU time per
call after a feature-graph call on the project's 2-core machine, which a tiled image pays in each of its tiles.
Here the host decides (:func:`~metasr.runtime.tile_cost.phase_layouts`, the variant's own test ported and
checked against it), packs each phase pair's filters once per plan (:class:`PhaseFilters`, vectorized per
slot-count shape) and runs one graph per (q, p): ``ReorderInput``, the q^2 ``com.microsoft.nchwc:Conv`` (stride
q, pads q+1-phi before and phi+1 after, add_mean's bias as each one's bias), and the interleave: the native one
(:mod:`metasr.runtime.native`, which also packs the filters) where it is built, else ``Concat``, ``ReorderOutput``
per block of B channels, the ``Gather`` of planes into the period's order and ``DepthToSpace`` with block p, the
output window cut on the host (a copy, as the body's ``Slice``). The same kernels on the same filters: the
output equals the variant's bit for bit (``tests/test_ort_direct_phase.py``).

Shapes (window features (N, C, h, w), nb = ceil(n / q), J = nb + 1 outputs per phase and axis): filters of
phase pair (phi_r, phi_c) (Opad_i, C, 3, 3), Opad_i = 3 Kr_i Kc_i rounded up to 16, channels (o, kr, kc), the
phases' own slot counts; the convolutions' outputs (N, sum Opad_i, J_r, J_c); planes (N, 3p^2, J_r, J_c); the
interleaved image (N, 3, J_r p, J_c p); the output its rows y0_r .. y0_r + H and columns alike.

Memory: the packed filters of the pairs a plan's calls read are kept while its table lives (at most
``CACHE_CALLS`` calls' worth; the body made and dropped them in every call, with three intermediate copies).
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass

import numpy as np
from metasr.export.metaupscale_nchwc import NCHWC_DOMAIN
from metasr.export.metaupscale_phase import PHASE_PERIODS
from metasr.export.onnx_proto import make_graph, make_node, make_tensor_value_info, protos
from metasr.runtime import native
from metasr.runtime.ort_cpu import features_in, nchwc_model
from metasr.runtime.tile_cost import AxisPhase, phase_layouts

__all__ = ["CACHE_CALLS", "PhaseFilters", "PhasePlan", "phase_feeds", "phase_model", "phase_plan", "phase_tables"]

OPAD = 16  # each pair's channels are rounded up to this (as the body: a multiple of every block size, 8 or 16)
CACHE_CALLS = 4  # the packed-filter cache holds at most this many calls' filters (then it starts over)
PACK_CHUNK = 10  # phase pairs per numpy batch (x3.3's 100 pairs, ms of CPU: 10 2.4-2.8, 25 2.6-2.8, 100 2.8-3.1)


@dataclass(frozen=True, eq=False)  # (arrays: compared and hashed by identity)
class PhasePlan:
    """One call on the direct phase path: the period q, p output positions per period, per axis the phases' own
    slot counts (q,), their slots' offset indices (one array per phase), the first output's position and the
    output count, and the phase blocks per axis."""

    q: int
    p: int
    row_k: np.ndarray
    col_k: np.ndarray
    row_off: tuple[np.ndarray, ...]
    col_off: tuple[np.ndarray, ...]
    rows: tuple[int, int]
    cols: tuple[int, int]
    nb_r: int
    nb_c: int


def _offsets(feeds: dict[str, np.ndarray], axis: str, lay: AxisPhase) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    idx, slots = feeds[f"{axis}_idx"], feeds[f"{axis}_slots"]
    k = lay.own[lay.gop]  # each phase's own slot count
    return k, tuple(idx[slots[g, :n]] for g, n in zip(lay.gop, k, strict=True))


def phase_plan(feeds: dict[str, np.ndarray], block: int) -> PhasePlan | None:
    """The direct phase call for these (valid) upscale feeds, or None where the variant does not take its phase
    path (the graph then runs)."""
    f = feeds["features"]
    q = feeds["row_groups"].shape[0]
    if f.ndim != 4 or f.dtype != np.float32 or f.shape[0] < 1 or OPAD % block or q not in PHASE_PERIODS:
        return None
    if f.shape[1] % block or feeds["col_groups"].shape[0] != q:
        return None
    layouts = phase_layouts(feeds, f.shape[2] * f.shape[3], q, f.shape[1], block=block)
    if layouts is None:
        return None
    rows, cols = layouts
    row_k, row_off = _offsets(feeds, "row", rows)
    col_k, col_off = _offsets(feeds, "col", cols)
    return PhasePlan(
        q, rows.p, row_k, col_k, row_off, col_off, (rows.y0, feeds["row_src"].size), (cols.y0, feeds["col_src"].size),
        -(-f.shape[2] // q), -(-f.shape[3] // q),
    )  # fmt: skip


def _pack(table: np.ndarray, roffs: np.ndarray, coffs: np.ndarray, bias: np.ndarray, block: int) -> tuple:
    """n pairs of one slot-count shape, ``roffs`` (n, Kr), ``coffs`` (n, Kc) -> filters (n, Opad, C, 3, 3) in
    the OIhw{B}i{B}o layout, channels (o, kr, kc) then zero padding, and biases (n, Opad) (add_mean's)."""
    n, kr = roffs.shape
    kc = coffs.shape[1]
    c = table.shape[-1] // 27
    o = 3 * kr * kc
    opad = -(-o // OPAD) * OPAD
    b = np.zeros((n, opad), np.float32)
    b[:, :o] = np.repeat(bias, kr * kc)
    if native.available() and table.ndim == 3 and table.dtype == np.float32 and table.flags.c_contiguous:
        packed = np.empty((n, opad, c, 3, 3), np.float32)  # the same values in one pass (runtime/_native.c)
        native.pack(table, roffs.astype(np.int32), coffs.astype(np.int32), block, packed)
        return packed, b
    rows = table[roffs[:, :, None], coffs[:, None, :]]  # (n, kr, kc, 27C) as (ky, kx, c, o)
    w = rows.reshape(n, kr, kc, 3, 3, c // block, block, 3)  # (n, kr, kc, ky, kx, cb, bi, o)
    full = np.zeros((n, opad, c // block, 3, 3, block), np.float32)  # (n, (o, kr, kc), cb, ky, kx, bi)
    full[:, :o] = w.transpose(0, 7, 1, 2, 5, 3, 4, 6).reshape(n, o, c // block, 3, 3, block)
    packed = full.reshape(n, opad // block, block, c // block, 3, 3, block).transpose(0, 1, 3, 4, 5, 6, 2)
    return np.ascontiguousarray(packed).reshape(n, opad, c, 3, 3), b


class PhaseFilters:
    """Each phase pair's packed filters and bias for one plan's table (the ort backend's
    :class:`~metasr.runtime.predictor_split.FilterCache` hands every call of a plan the same table object), held
    through a weak reference: dropped with the table. Packed on a plan's first call (x3.3's 100 pairs: 2.4-2.8 ms
    of CPU in chunks of ``PACK_CHUNK`` pairs, 2.8-3.1 in one batch) and reused by its later calls (tiles, the same
    scale again)."""

    def __init__(self, bias: np.ndarray, block: int) -> None:
        self.bias, self.block = bias, block
        self._lock = threading.Lock()
        self._table: weakref.ref | None = None  # the table the pairs below belong to
        self._pairs: dict[tuple[bytes, bytes], tuple[np.ndarray, np.ndarray]] = {}
        self._bytes = 0
        self.packed = 0  # pairs packed (the rest came from the cache)

    def _dropped(self, ref: weakref.ref) -> None:  # the table is gone: so are its pairs
        if self._table is ref:
            self._table, self._pairs, self._bytes = None, {}, 0

    def pairs(self, plan: PhasePlan, table: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """(filters, bias) of every phase pair (phi_r, phi_c), row-major."""
        q = plan.q
        keys = [(plan.row_off[i // q].tobytes(), plan.col_off[i % q].tobytes()) for i in range(q * q)]
        with self._lock:
            if self._table is None or self._table() is not table:
                self._table, self._pairs, self._bytes = weakref.ref(table, self._dropped), {}, 0
            found = {k: self._pairs[k] for k in keys if k in self._pairs}
        missing: dict[tuple[int, int], list[int]] = {}
        for i, k in enumerate(keys):
            if k not in found:
                missing.setdefault((plan.row_k[i // q], plan.col_k[i % q]), []).append(i)
        made: dict[tuple[bytes, bytes], tuple[np.ndarray, np.ndarray]] = {}
        for group in missing.values():
            for start in range(0, len(group), PACK_CHUNK):
                pairs = group[start : start + PACK_CHUNK]
                roffs = np.stack([plan.row_off[i // q] for i in pairs])
                coffs = np.stack([plan.col_off[i % q] for i in pairs])
                w, b = _pack(table, roffs, coffs, self.bias, self.block)
                made.update((keys[i], (w[j], b[j])) for j, i in enumerate(pairs))
        out = [found[k] if k in found else made[k] for k in keys]
        call_bytes = sum(w.nbytes + b.nbytes for w, b in out)
        with self._lock:
            self.packed += len(made)
            if self._table is not None and self._table() is table:
                if self._bytes + sum(w.nbytes + b.nbytes for w, b in made.values()) > CACHE_CALLS * call_bytes:
                    self._pairs, self._bytes = {}, 0  # start over with this call's pairs
                for k, v in ((k, v) for k, v in zip(keys, out, strict=True) if k not in self._pairs):
                    self._pairs[k] = v
                    self._bytes += v[0].nbytes + v[1].nbytes
        return out


def phase_model(q: int, p: int, block: int, interleave: bool = True, blocked: bool = False) -> bytes:
    """x (N, C, h, w) (or ``blocked``: xb, its NCHWc copy); w{i}, b{i} per phase pair; yb_shape, y3_shape (4,)
    and pidx (3p^2,) -> the interleaved image (N, 3, J_r p, J_c p) (module docstring); without ``interleave``
    (the native one follows: :mod:`metasr.runtime.native`) x, w{i}, b{i} -> the convolutions' outputs y{i} (N,
    Opad_i, J_r, J_c) in NCHWc memory."""
    pb = protos()
    f32, i64 = pb.TensorProto.FLOAT, pb.TensorProto.INT64
    nodes, x = features_in(blocked)
    inputs = [x]
    for i in range(q * q):
        pr, pc = divmod(i, q)
        pads = [q + 1 - pr, q + 1 - pc, pr + 1, pc + 1]  # J = nb + 1 outputs per axis (the body's)
        conv = make_node("Conv", ["xb", f"w{i}", f"b{i}"], [f"y{i}"], domain=NCHWC_DOMAIN, pads=pads, strides=[q, q])
        nodes.append(conv)
        inputs += [make_tensor_value_info(f"w{i}", f32, None), make_tensor_value_info(f"b{i}", f32, None)]
    if not interleave:
        outputs = [make_tensor_value_info(f"y{i}", f32, None) for i in range(q * q)]
        graph = make_graph(nodes, f"direct_phase_q{q}_p{p}_conv", inputs, outputs)
        return nchwc_model(graph, {"": 17, NCHWC_DOMAIN: 1}).SerializeToString()
    nodes += [
        make_node("Concat", [f"y{i}" for i in range(q * q)], ["yc"], axis=1),  # whole blocks: the blocked layout's
        make_node("Reshape", ["yc", "yb_shape"], ["yb"]),  # (N sum Opad / B, B, J_r, J_c), the same bytes
        make_node("ReorderOutput", ["yb"], ["ybt"], domain=NCHWC_DOMAIN, channels=block, channels_last=0),
        make_node("Reshape", ["ybt", "y3_shape"], ["planes_all"]),  # (N, sum Opad, J_r, J_c)
        make_node("Gather", ["planes_all", "pidx"], ["planes"], axis=1),  # (N, 3 p p, J_r, J_c)
        make_node("DepthToSpace", ["planes"], ["image"], blocksize=p, mode="CRD"),
    ]
    inputs += [make_tensor_value_info(n, i64, None) for n in ("yb_shape", "y3_shape", "pidx")]
    graph = make_graph(nodes, f"direct_phase_q{q}_p{p}", inputs, [make_tensor_value_info("image", f32, None)])
    return nchwc_model(graph, {"": 17, NCHWC_DOMAIN: 1}).SerializeToString()


def _period(k: np.ndarray, p: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each position t of a period: its phase, its slot within the phase and that phase's slot count."""
    t = np.arange(p)
    phase = np.searchsorted(np.cumsum(k), t, side="right")
    start = np.concatenate(([0], np.cumsum(k)[:-1]))
    return phase, t - start[phase], k[phase]


def phase_tables(plan: PhasePlan) -> tuple[np.ndarray, np.ndarray]:
    """The native interleave's row and column tables of a phase-path call: the image's row y0 + y is position t
    = (y0 + y) % p of period (y0 + y) // p, whose phase, slot and slot count :func:`_period` gives."""

    def axis(k: np.ndarray, first: int, count: int) -> np.ndarray:
        phase, slot, kk = _period(k, plan.p)
        at = first + np.arange(count)
        t = at % plan.p
        return native.axis_table(phase[t], at // plan.p, slot[t], kk[t])

    return axis(plan.row_k, *plan.rows), axis(plan.col_k, *plan.cols)


def phase_feeds(
    plan: PhasePlan,
    x: dict[str, np.ndarray],
    pairs: list[tuple[np.ndarray, np.ndarray]],
    block: int,
    interleave: bool = True,
) -> dict[str, np.ndarray]:
    """The feeds of :func:`phase_model` for one call, ``x`` its features' feed ({"x": features} or {"xb": their
    NCHWc copy})."""
    q, p = plan.q, plan.p
    features = next(iter(x.values()))
    feeds = dict(x)
    for i, (w, b) in enumerate(pairs):
        feeds[f"w{i}"], feeds[f"b{i}"] = w, b
    if not interleave:
        return feeds
    opad = np.array([w.shape[0] for w, _ in pairs], np.int64)
    base = np.concatenate(([0], np.cumsum(opad)[:-1]))
    total, n = int(opad.sum()), features.shape[0]
    j_r, j_c = plan.nb_r + 1, plan.nb_c + 1
    feeds["yb_shape"] = np.array([n * total // block, block, j_r, j_c], np.int64)
    feeds["y3_shape"] = np.array([n, total, j_r, j_c], np.int64)
    (ph_r, k_r, kk_r), (ph_c, k_c, kk_c) = _period(plan.row_k, p), _period(plan.col_k, p)
    first = base[ph_r[:, None] * q + ph_c[None, :]] + k_r[:, None] * kk_c[None, :] + k_c[None, :]  # (p, p)
    per_o = kk_r[:, None] * kk_c[None, :]  # (p, p): the pair's Kr Kc, the stride of o
    feeds["pidx"] = (np.arange(3)[:, None, None] * per_o + first).reshape(-1).astype(np.int64)
    return feeds
