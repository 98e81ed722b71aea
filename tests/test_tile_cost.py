"""The tiler's cost model for phase cuts (runtime/tile_cost.py): the path a call's shapes take, and the plans it
picks on the cases measured side by side (process CPU time, 2 threads, Intel Xeon with AVX-512 VNNI, ONNX Runtime
1.32; ``Pipeline.upscale`` of random features, plain / cut plan, docs/upscale-stage.md)."""

from __future__ import annotations

import numpy as np
import pytest
from metasr.runtime.feeds import plan_feeds
from metasr.runtime.phase_parts import phase_cuts, phase_period
from metasr.runtime.projection import project
from metasr.runtime.tile_cost import call_seconds, phase_call
from metasr.runtime.tiling import plan_upscale_tiles, window_feeds

PERIODS = (3, 4, 5, 10)


def test_the_path_follows_the_shapes():
    feeds = plan_feeds(project(200, 200, 3.3))  # one period per phase: q groups of one-pixel blocks
    assert phase_call(feeds, 200 * 200, 10) is not None
    assert phase_call(feeds, 30 * 30, 10) is None  # below PHASE_MIN_PIXELS: the variant's grouped path
    assert phase_call(feeds, 200 * 200, 5) is None
    assert phase_call(feeds, 200 * 200, 10, channels=24) is None  # not whole NCHWc blocks
    half = plan_feeds(project(200, 200, 2.5))  # 2-row blocks
    assert phase_call(half, 200 * 200, 10) is None
    phase, grouped = call_seconds(feeds, 200 * 200, 10), call_seconds(feeds, 200 * 200, None)
    assert 0 < phase < grouped  # the same call: the phase path has no patch matrix
    assert call_seconds(feeds, 200 * 200, None, channels=64) == pytest.approx(2 * grouped)


def test_the_constants_are_the_variants():
    from metasr.export import metaupscale_phase as mp
    from metasr.runtime import tile_cost

    assert tile_cost.PHASE_MIN_PIXELS == mp.PHASE_MIN_PIXELS
    assert (tile_cost.PHASE_MIN_P, tile_cost.PHASE_MAX_P, tile_cost.PHASE_MAX_O) == (
        mp.PHASE_MIN_P,
        mp.PHASE_MAX_P,
        mp.PHASE_MAX_O,
    )


def test_a_wide_bands_grouped_call_costs_more_per_pixel():
    """A full-width band of a long axis spans the drift: more column groups, more filters gathered per call."""
    narrow, wide = project(40, 900, 3.9), project(40, 4000, 3.9)
    per_px = [call_seconds(plan_feeds(p), 40 * p.cols.src.size // 4, None) / p.cols.src.size for p in (narrow, wide)]
    assert plan_feeds(wide)["col_groups"].shape[0] > plan_feeds(narrow)["col_groups"].shape[0] == 10
    assert per_px[1] > 1.3 * per_px[0]  # both priced on the grouped path: 1.57x


def _plans(h, w, scale, budget_mb, direct=True):
    feeds = plan_feeds(project(h, w, scale))
    q = phase_period(scale, PERIODS)
    assert phase_cuts(feeds["col_src"], feeds["col_idx"], q)  # the axis is long enough to drift
    budget = budget_mb * 2**20
    plain = plan_upscale_tiles(feeds, h, w, 32, budget, compact_offsets=False)
    chosen = plan_upscale_tiles(feeds, h, w, 32, budget, phase_q=q, compact_offsets=False, phase_direct=direct)
    return feeds, plain, chosen


@pytest.mark.parametrize(
    ("scale", "h", "w", "budget_mb", "cut"),
    [
        # measured plain / cut with the body's phase path (METASR_ORT_DIRECT=0, or before the direct path)
        (3.3, 1000, 1500, 64, False),  # 165 tiles 1.64-1.65 s, 350 tiles 1.99-2.09 s
        (3.9, 1000, 1500, 128, True),  # 163 tiles 2.64-2.97 s, 324 tiles 2.47-2.61 s
        (3.3, 1000, 1500, 512, True),  # 16 tiles 1.31 s, 35 tiles 0.89 s
    ],
)
def test_without_the_direct_path_the_model_prices_the_bodys_calls(scale, h, w, budget_mb, cut):
    _, plain, chosen = _plans(h, w, scale, budget_mb, direct=False)
    assert len(chosen) > len(plain) if cut else chosen == plain


@pytest.mark.parametrize(
    ("scale", "h", "w", "budget_mb", "cut"),
    [
        # measured plain / cut with the ort backend's direct phase path (benchmarks/phase_cut_plans.py); before it
        # (the body's plan logic and packing in every call) x3.3 at 64 MiB was the other way: 1.64 / 1.99-2.09 s
        (3.9, 3000, 4000, 512, True),  # plain 325 tiles 35.97 s, cut 2808 tiles 20.12 s (before: 32.05 / 23.91)
        (3.9, 1000, 1500, 128, True),  # 163 tiles 3.13 s, 324 tiles 1.47 s
        (3.3, 1000, 1500, 512, True),  # 16 tiles 1.33 s, 35 tiles 0.80 s
        (3.3, 1000, 1500, 64, True),  # 165 tiles 1.71 s, 350 tiles 1.34 s
        (3.9, 300, 1500, 32, False),  # 720 tiles 2.90 s, 744 tiles 4.08 s
    ],
)
def test_the_faster_plan_of_the_measured_cases(scale, h, w, budget_mb, cut):
    feeds, plain, chosen = _plans(h, w, scale, budget_mb)
    assert len(chosen) > len(plain) if cut else chosen == plain
    # the cut tiles that are large enough run the phase path, as the model counts them
    if cut:
        sizes = [(t.in_rows.stop - t.in_rows.start) * (t.in_cols.stop - t.in_cols.start) for t in chosen]
        cache: dict = {}
        on_phase = [
            phase_call(window_feeds(feeds, t, compact_offsets=False, cache=cache), n, 10) is not None
            for t, n in zip(chosen, sizes, strict=True)
        ]
        assert np.mean(on_phase) > 0.75
