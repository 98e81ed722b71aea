"""Property tests (hypothesis) for the projection and the tiling: any size and scale in range."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from metasr.runtime.feeds import check_hints, plan_feeds
from metasr.runtime.projection import MERGE_TOL, axis_projection, project
from metasr.runtime.tiling import MIN_TILE_COLS, MIN_TILE_ROWS, axis_tiles, plan_upscale_tiles, tile_bytes, window_feeds

scales = st.floats(min_value=1.0, max_value=4.0, exclude_min=True, allow_nan=False, allow_infinity=False)


@given(n=st.integers(1, 3000), r=scales)
@settings(max_examples=300, deadline=None)
def test_axis_projection(n, r):
    src, offset = axis_projection(n, r)
    assert src.size == int(r * n)
    assert src.dtype == np.int64 and offset.dtype == np.float32
    if src.size:
        assert src.min() >= 0 and src.max() < n  # in bounds
        assert np.all(np.diff(src) >= 0)  # monotone rows
        assert np.all((offset >= 0) & (offset < 1))  # offsets in [0, 1)


@given(h=st.integers(1, 400), w=st.integers(1, 400), r=scales)
@settings(max_examples=150, deadline=None)
def test_projection_plan(h, w, r):
    plan = project(h, w, r)
    assert plan.out_size == (int(r * h), int(r * w))
    for axis, n in ((plan.rows, h), (plan.cols, w)):
        src, offset = axis_projection(n, r)
        assert np.array_equal(axis.src, src)
        assert np.all((axis.offset_index >= 0) & (axis.offset_index < axis.offsets.size))
        assert np.all(np.abs(axis.offsets[axis.offset_index] - offset) <= MERGE_TOL)  # merged within tolerance
        assert np.all((axis.offsets >= 0) & (axis.offsets < 1))


@st.composite
def feature_tiling(draw):
    margin = draw(st.integers(0, 140))
    size = draw(st.integers(2 * margin + 1, 2 * margin + 600))
    fixed = draw(st.booleans())
    n = draw(st.integers(size if fixed else 1, 6000))
    return n, size, margin, fixed


@given(feature_tiling())
@settings(max_examples=300, deadline=None)
def test_feature_tiles(case):
    n, size, margin, fixed = case
    tiles = axis_tiles(n, size, margin, fixed)
    assert tiles[0][2] == 0 and tiles[-1][3] == n
    for (s, e, a, b), nxt in zip(tiles, [*tiles[1:], None], strict=True):
        assert 0 <= s <= a < b <= e <= n
        assert (e - s == size) if fixed else (e - s <= size)
        assert s == 0 or a - s >= margin  # every kept feature sees its whole receptive field
        assert e == n or e - b >= margin
        if nxt:
            assert nxt[2] == b  # cores tile the axis
    if not fixed:  # equal cores, nothing computed beyond the overlap
        cores = [b - a for _, _, a, b in tiles]
        assert max(cores) - min(cores) <= 1
        assert all(s == max(0, a - margin) and e == min(n, b + margin) for s, e, a, b in tiles)


@given(
    h=st.integers(1, 90), w=st.integers(1, 90), r=scales, budget_mb=st.floats(0.05, 20), c=st.sampled_from([8, 32, 64])
)
@settings(max_examples=120, deadline=None)
def test_upscale_tiles_cover_the_output_once_and_read_what_they_need(h, w, r, budget_mb, c):
    plan = project(h, w, r)
    feeds = plan_feeds(plan)
    out_h, out_w = plan.out_size
    tiles = plan_upscale_tiles(feeds, h, w, c, budget_mb * 2**20)
    covered = np.zeros((out_h, out_w), dtype=np.int64)
    over_budget = False
    cache: dict = {}  # the per-axis cache the runtime uses: the same feeds as computing every tile afresh
    order = [(t.rows.start, t.cols.start) for t in tiles]
    assert order == sorted(order)  # row-major
    for t in tiles:
        covered[t.rows, t.cols] += 1
        rows_src, cols_src = plan.rows.src[t.rows], plan.cols.src[t.cols]
        assert 0 <= t.in_rows.start and t.in_rows.stop <= h and 0 <= t.in_cols.start and t.in_cols.stop <= w
        # one context row/column before (two with 2-pixel blocks, keeping them on the window's block grid)
        before_r = 1 if feeds["row_groups"].shape[2] == 1 or rows_src.min() < 2 else 2
        before_c = 1 if feeds["col_groups"].shape[2] == 1 or cols_src.min() < 2 else 2
        assert t.in_rows.start == max(rows_src.min() - before_r, 0) and t.in_rows.stop == min(rows_src.max() + 2, h)
        assert t.in_cols.start == max(cols_src.min() - before_c, 0) and t.in_cols.stop == min(cols_src.max() + 2, w)
        tf = window_feeds(feeds, t)
        cached = window_feeds(feeds, t, cache=cache)
        assert tf.keys() == cached.keys() and all(np.array_equal(tf[k], cached[k]) for k in tf)
        assert tf["row_src"].min() >= 0 and tf["row_src"].max() < t.in_rows.stop - t.in_rows.start
        check_hints(tf)  # valid hints, sources inside the window
        assert tf["col_src"].min() >= 0 and tf["col_src"].max() < t.in_cols.stop - t.in_cols.start
        size = (t.in_rows.stop - t.in_rows.start, t.in_cols.stop - t.in_cols.start)
        over_budget |= tile_bytes(tf, c, *size) > budget_mb * 2**20
    assert np.all(covered == 1)
    if over_budget:  # only where even the smallest tiles (or the filters alone) exceed the budget
        # bands start on the plan's block grid: with 2-row blocks (r = p/2) a band grows by < one block's rows
        grid = math.ceil(2 * r) - 1 if feeds["row_groups"].shape[2] == 2 else 0
        assert max(t.rows.stop - t.rows.start for t in tiles) <= MIN_TILE_ROWS + grid
        assert max(t.cols.stop - t.cols.start for t in tiles) < 2 * MIN_TILE_COLS


@pytest.fixture(scope="module")
def pipelines(bundled_artifacts):
    pytest.importorskip("onnxruntime")
    from metasr.runtime.pipeline import Pipeline

    with Pipeline(bundled_artifacts, upscale_budget_mb=1e6) as whole:
        yield whole, bundled_artifacts


@given(h=st.integers(1, 40), w=st.integers(1, 40), r=scales, budget_mb=st.floats(0.01, 3), seed=st.integers(0, 99))
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_tiled_upscale_equals_untiled(pipelines, h, w, r, budget_mb, seed):
    """To float32 rounding on both of the body's paths: a tile computes the same products as the untiled run, but
    ONNX Runtime picks its MatMul / Conv kernels, and so the summation order, by the matrix sizes (MLAS handles a
    one-row product and a convolution's K chunks differently): measured <= 7.6e-6 (one float32 step) on outputs
    ~100; 30 of 163 random grouped-path cases were not bit-identical."""
    from metasr.runtime.pipeline import Pipeline

    whole, art = pipelines
    feats = np.random.default_rng(seed).standard_normal((1, whole.channels, h, w)).astype(np.float32)
    assert len(whole.tiles(h, w, r)) == 1
    with Pipeline(art, upscale_budget_mb=budget_mb) as tiled:
        a, b = tiled.upscale(feats, r), whole.upscale(feats, r)
    assert a.shape == b.shape
    assert np.abs(a - b).max() <= 1e-6 * np.abs(b).max() * 32  # 32 float32 steps of the largest value
