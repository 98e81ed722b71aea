"""The compiled interleave (``runtime/_native.c`` through ``runtime/native.py``).

Oracles: a numpy reading of the contract (each part unblocked to (n, C, J_r, J_c), then one value per output pixel
by fancy indexing), and the graphs' own interleave (``METASR_NATIVE=0``: ``ReorderOutput`` + ``Col2Im``, or
``Concat`` + ``ReorderOutput`` + ``Gather`` + ``DepthToSpace`` and the host's window), which the native pass must
equal bit for bit: it copies values. Hostile arguments get a ValueError, never a read or write out of bounds.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from metasr.runtime import native

pytestmark = pytest.mark.skipif(native._native is None, reason="metasr.runtime._native was not built (no compiler)")


def oracle(parts: list[np.ndarray], block: int, q_c: int, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """The contract in numpy: out[m, o, y, x] = logical part (pr q_c + pc)[m, (o Kr + kr) Kc + kc, jr, jc]."""
    logical = []
    for p in parts:
        n, c, j_r, j_c = p.shape
        blocked = p.reshape(-1).reshape(n, c // block, j_r, j_c, block)
        logical.append(blocked.transpose(0, 1, 4, 2, 3).reshape(n, c, j_r, j_c))
    n = parts[0].shape[0]
    out = np.empty((n, 3, len(rows), len(cols)), np.float32)
    for y, (pr, jr, kr, kk_r) in enumerate(rows.tolist()):
        for x, (pc, jc, kc, kk_c) in enumerate(cols.tolist()):
            for o in range(3):
                out[:, o, y, x] = logical[pr * q_c + pc][:, (o * kk_r + kr) * kk_c + kc, jr, jc]
    return out


def _axis(rng: np.random.Generator, phases: int, j: int, k: np.ndarray, count: int) -> np.ndarray:
    """A random valid table: every entry within range, each phase with its own slot count k[phase]."""
    ph = rng.integers(0, phases, count)
    slot = np.array([rng.integers(0, k[i]) for i in ph])
    return native.axis_table(ph, rng.integers(0, j, count), slot, k[ph])


def _case(seed: int, q_r: int, q_c: int, block: int, n: int = 1) -> tuple:
    rng = np.random.default_rng(seed)
    k_r, k_c = rng.integers(1, 5, q_r), rng.integers(1, 5, q_c)
    j_r, j_c = int(rng.integers(1, 6)), int(rng.integers(1, 6))
    parts = []
    for i in range(q_r * q_c):
        need = 3 * k_r[i // q_c] * k_c[i % q_c]
        cb = -(-need // block) + int(rng.integers(0, 2))  # whole blocks, sometimes one more
        parts.append(rng.standard_normal((n, cb * block, j_r, j_c)).astype(np.float32))
    rows = _axis(rng, q_r, j_r, k_r, int(rng.integers(1, 9)))
    cols = _axis(rng, q_c, j_c, k_c, int(rng.integers(1, 9)))
    return parts, rows, cols


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), q_r=st.integers(1, 4), q_c=st.integers(1, 4), block=st.sampled_from([8, 16]),
       n=st.integers(1, 2))  # fmt: skip
def test_interleave_equals_the_oracle(seed, q_r, q_c, block, n):
    parts, rows, cols = _case(seed, q_r, q_c, block, n)
    got = native.interleave(parts, block, q_c, rows, cols)
    assert got.shape == (n, 3, len(rows), len(cols)) and got.dtype == np.float32
    assert np.array_equal(got, oracle(parts, block, q_c, rows, cols))


def _raw_args(parts, rows, cols, block=8, q_c=1):
    n, _, j_r, j_c = parts[0].shape
    cb = np.array([p.shape[1] // block for p in parts], np.int32)
    out = np.empty((n, 3, len(rows), len(cols)), np.float32)
    return [parts, cb, block, n, q_c, j_r, j_c, rows, cols, out]


def _valid() -> list:
    parts = [np.ones((1, 16, 3, 4), np.float32)]
    at = np.arange(6)
    rows = native.axis_table(0 * at, at // 2, at % 2, 0 * at + 2)
    cols = native.axis_table(0 * at[:5], at[:5] // 2, at[:5] % 2, 0 * at[:5] + 2)
    return _raw_args(parts, rows, cols)


def _table(args: list, which: int, entry: int, column: int, value: int) -> list:
    t = args[which].copy()
    t[entry, column] = value
    args[which] = t
    return args


def _set(args: list, i: int, value: object) -> list:
    return [value if j == i else a for j, a in enumerate(args)]


PARTS, CB, BLOCK, N, Q_C, J_R, J_C, ROWS, COLS, OUT = range(10)  # the positions of interleave's arguments
BAD = {
    "phase out of range": lambda a: _table(a, ROWS, 0, 0, 1),
    "negative phase": lambda a: _table(a, COLS, 2, 0, -1),
    "block index past J": lambda a: _table(a, ROWS, 5, 1, 3),
    "negative block index": lambda a: _table(a, COLS, 0, 1, -1),
    "slot past its count": lambda a: _table(a, ROWS, 1, 2, 2),
    "slot count 0": lambda a: _table(a, COLS, 1, 3, 0),
    "slot count huge": lambda a: _table(a, ROWS, 1, 3, 2**30),
    "more channels than the part has": lambda a: _table(_table(a, ROWS, 0, 3, 3), ROWS, 0, 2, 0),
    "table of int64": lambda a: _set(a, ROWS, a[ROWS].astype(np.int64)),
    "table of 3 columns": lambda a: _set(a, COLS, np.ascontiguousarray(a[COLS][:, :3])),
    "part of float64": lambda a: _set(a, PARTS, [a[PARTS][0].astype(np.float64)]),
    "part one value short": lambda a: _set(a, PARTS, [a[PARTS][0].reshape(-1)[:-1]]),
    "part not contiguous": lambda a: _set(a, PARTS, [np.ones((1, 16, 3, 8), np.float32)[..., ::2]]),
    "part not a buffer": lambda a: _set(a, PARTS, [None]),
    "no parts": lambda a: _set(a, PARTS, []),
    "parts not a multiple of q_c": lambda a: _set(a, Q_C, 2),
    "channel blocks not int32": lambda a: _set(a, CB, a[CB].astype(np.int64)),
    "channel blocks 0": lambda a: _set(a, CB, np.zeros(1, np.int32)),
    "block 0": lambda a: _set(a, BLOCK, 0),
    "batch 0": lambda a: _set(a, N, 0),
    "J 0": lambda a: _set(a, J_C, 0),
    "out too small": lambda a: _set(a, OUT, np.empty((1, 3, 6, 4), np.float32)),
    "out read-only": lambda a: _set(a, OUT, np.frombuffer(bytes(4 * 90), np.float32).reshape(1, 3, 6, 5)),
    "out of float64": lambda a: _set(a, OUT, np.empty((1, 3, 6, 5), np.float64)),
    "empty window": lambda a: _set(_set(a, ROWS, a[ROWS][:0]), OUT, np.empty((1, 3, 0, 5), np.float32)),
    "J huge": lambda a: _set(_set(a, J_R, 2**31 - 1), J_C, 2**31 - 1),  # sizes that would wrap around
    "batch huge": lambda a: _set(a, N, 2**62),
}


def test_valid_arguments_pass():
    args = _valid()
    assert native._native.interleave(*args) is None
    assert np.array_equal(args[OUT], oracle(args[PARTS], 8, 1, args[ROWS], args[COLS]))


@pytest.mark.parametrize("case", BAD)
def test_hostile_arguments_are_refused(case):
    args = BAD[case](_valid())
    with pytest.raises((ValueError, TypeError, BufferError)):
        native._native.interleave(*args)


def test_the_wrapper_checks_part_shapes():
    parts, rows, cols = _case(3, 2, 2, 8)
    with pytest.raises(ValueError, match="part of shape"):
        native.interleave([*parts[:-1], parts[-1][:, :, :, :-1].copy()], 8, 2, rows, cols)


@pytest.mark.parametrize(("scale", "budget_mb"), [(1.5, 512), (2.0, 512), (3.0, 512), (3.3, 512), (3.9, 64),
                                                  (1.7, 16), (2.5, 8), (4.0, 16)])  # fmt: skip
def test_pipelines_give_the_same_images_with_and_without_it(bundled_artifacts, monkeypatch, scale, budget_mb):
    from metasr.runtime.pipeline import Pipeline

    h, w = 150, 220
    features = np.random.default_rng(5).standard_normal((1, 32, h, w)).astype(np.float32)
    out, taken = {}, {}
    for flag in ("0", "1"):
        monkeypatch.setenv(native.ENV, flag)
        with Pipeline(bundled_artifacts, upscale_budget_mb=budget_mb) as p:
            direct = p._upscale.direct
            if direct is None:
                pytest.skip("no direct paths here (the NCHWc variant did not load)")
            out[flag] = p.upscale(features, scale)
            taken[flag] = dict(direct.taken)
    assert taken["0"] == taken["1"] and sum(taken["1"].values()) >= 1, taken
    assert np.array_equal(out["0"], out["1"]), (scale, float(np.abs(out["0"] - out["1"]).max()))


def test_without_the_build_the_graphs_interleave(bundled_artifacts, monkeypatch):
    from metasr.runtime.pipeline import Pipeline

    features = np.random.default_rng(6).standard_normal((1, 32, 60, 70)).astype(np.float32)
    with Pipeline(bundled_artifacts) as p:
        want = [p.upscale(features, r) for r in (2.0, 3.3)]
    monkeypatch.setattr(native, "_native", None)
    assert not native.available()
    with Pipeline(bundled_artifacts) as p:
        got = [p.upscale(features, r) for r in (2.0, 3.3)]
        assert p._upscale.direct is None or sum(p._upscale.direct.taken.values()) == 2
    assert all(np.array_equal(a, b) for a, b in zip(got, want, strict=True))


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), kr=st.integers(1, 5), kc=st.integers(1, 5), block=st.sampled_from([8, 16]),
       n=st.integers(1, 4), cb=st.integers(1, 3))  # fmt: skip
def test_pack_equals_numpys_packing(seed, kr, kc, block, n, cb):
    from metasr.runtime.ort_direct_phase import _pack

    rng = np.random.default_rng(seed)
    c = cb * block
    table = rng.standard_normal((int(rng.integers(1, 7)), int(rng.integers(1, 7)), 27 * c)).astype(np.float32)
    roffs, coffs = rng.integers(0, table.shape[0], (n, kr)), rng.integers(0, table.shape[1], (n, kc))
    bias = rng.standard_normal(3).astype(np.float32)
    got = _pack(table, roffs, coffs, bias, block)
    with pytest.MonkeyPatch.context() as m:
        m.setenv(native.ENV, "0")
        want = _pack(table, roffs, coffs, bias, block)  # numpy's gather, transposed fill and transposed copy
    assert got[0].shape == want[0].shape and np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])


def _pack_args() -> list:
    table = np.ones((4, 5, 27 * 16), np.float32)
    roffs, coffs = np.zeros((2, 2), np.int32), np.zeros((2, 3), np.int32)
    return [table, 5, roffs, coffs, 2, 3, 16, 16, np.empty((2, 32, 16, 3, 3), np.float32)]


TABLE, NC, ROFFS, COFFS, KR, KC, C, PBLOCK, POUT = range(9)  # the positions of pack's arguments
BAD_PACK = {
    "row offset past the table": lambda a: _set(a, ROFFS, np.full((2, 2), 4, np.int32)),
    "negative column offset": lambda a: _set(a, COFFS, np.full((2, 3), -1, np.int32)),
    "column count that does not divide the table": lambda a: _set(a, NC, 3),
    "offsets of int64": lambda a: _set(a, ROFFS, a[ROFFS].astype(np.int64)),
    "pair counts that differ": lambda a: _set(a, COFFS, np.zeros((3, 3), np.int32)),
    "more channels than out has": lambda a: _set(a, KC, 6),
    "channels not whole blocks": lambda a: _set(a, C, 12),
    "out too small": lambda a: _set(a, POUT, np.empty((2, 16, 16, 3, 3), np.float32)),
    "out read-only": lambda a: _set(a, POUT, np.frombuffer(bytes(4 * 2 * 32 * 16 * 9), np.float32)),
    "table of float64": lambda a: _set(a, TABLE, a[TABLE].astype(np.float64)),
    "slot count 0": lambda a: _set(a, KR, 0),
    "block 0": lambda a: _set(a, PBLOCK, 0),
    "channels huge": lambda a: _set(a, C, 2**31 - 16),
    "column count huge": lambda a: _set(a, NC, 2**31 - 1),
}


def test_pack_with_valid_arguments():
    args = _pack_args()
    assert native._native.pack(*args) is None
    by_channel = args[POUT].reshape(2, 2, 1, 9, 16, 16).transpose(0, 1, 5, 2, 3, 4).reshape(2, 32, -1)  # (n, oc, ...)
    assert np.all(by_channel[:, :18] == 1) and np.all(by_channel[:, 18:] == 0)  # 3 x 2 x 3 channels, then zeros


@pytest.mark.parametrize("case", BAD_PACK)
def test_pack_refuses_hostile_arguments(case):
    with pytest.raises((ValueError, TypeError, BufferError)):
        native._native.pack(*BAD_PACK[case](_pack_args()))


def test_tables_are_read_once_even_where_they_alias_the_output():
    """The reviewer's out-of-bounds read: a row table that is an int32 view of the output, each entry valid
    when checked, rewritten by the loop's own writes (a segfault before the tables were copied first)."""
    h = 64
    raw = np.zeros(4 * h, np.int32)
    rows = raw.reshape(h, 4)
    rows[:] = (0, 0, 0, 1)
    out = raw[: 3 * h].view(np.float32).reshape(1, 3, h, 1)
    part = np.full((1, 3, 1, 1), 1e30, np.float32)  # 3 channel blocks of 1
    native._native.interleave(
        [part], np.array([3], np.int32), 1, 1, 1, 1, 1, rows, np.array([[0, 0, 0, 1]], np.int32), out
    )
    table, packed = np.full((1, 1, 27 * 16), 1e30, np.float32), np.zeros((2, 16, 16, 3, 3), np.float32)
    roffs = packed.reshape(-1)[96:98].view(np.int32).reshape(2, 1)
    roffs[:] = 0
    native.pack(table, roffs, np.zeros((2, 1), np.int32), 16, packed)
    assert np.all(packed.reshape(2, -1)[1, :3] == np.float32(1e30))  # the second pair's first values: row (0, 0)
