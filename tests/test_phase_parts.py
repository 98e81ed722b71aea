"""Cutting long axes for the phase path (``runtime/phase_parts.py``) and the tiles that follow the cuts.

Oracle for the cuts: each part between them, checked pixel by pixel with plain Python lists (every input pixel
hosts the offset indices of the pixel q before it; the axis' last pixel may host a prefix), and every cut needed
(a change within its first q pixels). On ONNX Runtime's CPU variant: the uncut call of a wide plan runs the
grouped path (bit-identical to the standard body), every cut part the phase path (not bit-identical, and equal
to the grouped path's oracle to float32 rounding), and the parts together equal the uncut call to that rounding.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from metasr.runtime import tiling
from metasr.runtime.feeds import check_hints, plan_feeds
from metasr.runtime.phase_parts import MIN_PART, phase_cuts, phase_period
from metasr.runtime.projection import project
from metasr.runtime.tiling import (
    MIN_TILE_COLS,
    MIN_TILE_ROWS,
    plan_upscale_tiles,
    tile_bytes,
    window_feeds,
)

PERIODS = (3, 4, 5, 10)


def test_phase_period_is_the_denominator_of_an_exact_ratio():
    exact = (3.3, 1.1, 3.9, 1.25, 3.75, 4 / 3, 1.2, 3.4)
    assert [phase_period(s, PERIODS) for s in exact] == [10, 10, 10, 4, 4, 3, 5, 5]
    assert [phase_period(s, PERIODS) for s in (2.0, 2.5, 1.5, 3.0, 1.7 + 1e-9, 2.35, 3.35)] == [None] * 7
    assert phase_period(1 / 0.3, PERIODS) == 3  # the float of 10/3
    assert phase_period(3.3, ()) is None  # a backend without the path


def _signatures(src, idx) -> list[list[int]]:
    sig: dict[int, list[int]] = {}
    for s, i in zip(src.tolist(), idx.tolist(), strict=True):
        sig.setdefault(s, []).append(i)
    first = min(sig)
    return [sig[first + k] for k in range(len(sig))]


def _check_cuts(src, idx, q, cuts):
    sig = _signatures(src, idx)
    first_out: dict[int, int] = {}  # pixel -> its first output position
    for j, s in enumerate(src.tolist()):
        first_out.setdefault(s - int(src[0]), j)
    pixel_at = {j: p for p, j in first_out.items()}
    cut_pix = [pixel_at[c] for c in cuts]  # every cut is some pixel's first output (else KeyError)
    bounds = [0, *cut_pix, len(sig)]
    for k, (a, b) in enumerate(itertools.pairwise(bounds)):
        last_part = k == len(bounds) - 2
        assert b - a >= MIN_PART * q or last_part
        for x in range(a + q, b):
            same = sig[x] == sig[x - q]
            truncated_end = x == len(sig) - 1 and sig[x] == sig[x - q][: len(sig[x])]
            # the last part may have absorbed a narrower one (its own cut dropped): changes in its tail only
            absorbed = last_part and x >= len(sig) - MIN_PART * q
            assert same or truncated_end or absorbed, (q, a, b, x)
    for c in cut_pix:  # needed: the period changes within the cut's first q pixels
        assert any(sig[x] != sig[x - q] for x in range(c, min(c + q, len(sig)))), c


@pytest.mark.parametrize("scale", [3.3, 3.9, 1.7, 1.1, 3.4, 1.25, 2.1, 1.2])
@pytest.mark.parametrize("n", [1100, 1500, 2300, 4100])
def test_cuts_make_every_part_periodic(scale, n):
    q = phase_period(scale, PERIODS)
    plan = project(2, n, scale)
    cuts = phase_cuts(plan.cols.src, plan.cols.offset_index, q)
    assert cuts == sorted(set(cuts)) and all(0 < c < plan.out_size[1] for c in cuts)
    _check_cuts(plan.cols.src, plan.cols.offset_index, q, cuts)


def test_where_no_cut_is_made():
    for scale in (3.3, 3.9, 1.7, 1.1):  # below the drift: one period along the whole axis
        plan = project(2, 1000, scale)
        assert phase_cuts(plan.cols.src, plan.cols.offset_index, 10) == []
    assert len(phase_cuts(project(2, 1500, 3.3).cols.src, project(2, 1500, 3.3).cols.offset_index, 10)) == 4
    for scale in (2.3, 2.7, 3.7):  # float32 "exception" rows every few pixels: parts of 10-40 pixels, no cuts
        plan = project(2, 4000, scale)
        assert phase_cuts(plan.cols.src, plan.cols.offset_index, 10) == []
    plan = project(2, 4000, 4 / 3)  # the last pixel hosts a prefix of its period (the output size's truncation)
    assert phase_cuts(plan.cols.src, plan.cols.offset_index, 3) == []
    assert phase_cuts(np.zeros(0, np.int64), np.zeros(0, np.int64), 10) == []


@pytest.mark.parametrize("scale,h,w", [(3.3, 200, 1500), (1.7, 400, 2300), (3.9, 1100, 300), (1.1, 900, 1400)])
@pytest.mark.parametrize("budget_mb", [0.5, 8, 512])
def test_cut_tiles_cover_the_output_once_within_the_budget(scale, h, w, budget_mb):
    plan = project(h, w, scale)
    feeds = plan_feeds(plan)
    q = phase_period(scale, PERIODS)
    tiles = plan_upscale_tiles(feeds, h, w, 32, budget_mb * 2**20, phase_q=q)
    out_h, out_w = plan.out_size
    covered = np.zeros((out_h, out_w), np.int64)
    order = [(t.rows.start, t.cols.start) for t in tiles]
    assert order == sorted(order)
    col_starts, row_starts = {t.cols.start for t in tiles}, {t.rows.start for t in tiles}
    plain = plan_upscale_tiles(feeds, h, w, 32, budget_mb * 2**20)
    if [(t.rows, t.cols) for t in tiles] != [(t.rows, t.cols) for t in plain]:  # cut: every cut a tile start
        assert set(phase_cuts(feeds["col_src"], feeds["col_idx"], q)) <= col_starts
        assert set(phase_cuts(feeds["row_src"], feeds["row_idx"], q)) <= row_starts
    else:  # not cut: the cut tiles would have been more and small
        assert budget_mb < 512
    bands = {}
    for t in tiles:
        covered[t.rows, t.cols] += 1
        bands.setdefault((t.rows.start, t.rows.stop), []).append(t.cols)
        tf = window_feeds(feeds, t)
        check_hints(tf)
        size = (t.in_rows.stop - t.in_rows.start, t.in_cols.stop - t.in_cols.start)
        if tile_bytes(tf, 32, *size) > budget_mb * 2**20:  # only tiles already at their minimum
            assert t.rows.stop - t.rows.start <= MIN_TILE_ROWS or t.cols.stop - t.cols.start < 2 * MIN_TILE_COLS
    assert np.all(covered == 1)
    assert all(c[0].start == 0 and c[-1].stop == out_w for c in bands.values())  # every band whole


def test_without_phase_q_the_tiles_are_as_before():
    feeds = plan_feeds(project(20, 1500, 3.3))
    plain = plan_upscale_tiles(feeds, 20, 1500, 32, 2**29)
    assert [(t.rows, t.cols) for t in plain] == [
        (t.rows, t.cols) for t in plan_upscale_tiles(feeds, 20, 1500, 32, 2**29, phase_q=None)
    ]
    assert {t.cols.start for t in plain} == {0}  # one full-width band: the drift is not looked at


@pytest.fixture(scope="module")
def sessions(bundled_artifacts):
    pytest.importorskip("onnx")
    from metasr.runtime import ort_cpu

    from tests.test_upscale_body import cpu_session, grouped_model

    block = ort_cpu.nchwc_block()
    if isinstance(block, str):
        pytest.skip(f"no NCHWc variant here: {block}")
    raw = (bundled_artifacts / "upscale.onnx").read_bytes()
    variant, said = ort_cpu.specialize(raw, "fp32")
    if ort_cpu.PHASE not in said:
        pytest.skip(f"no phase path here: {said}")
    return cpu_session(raw), cpu_session(variant), cpu_session(grouped_model(raw))


def _agree(got, want):
    # as tests/test_ort_phase.py: the phase path's other summation order, measured <= 1.5e-5 on outputs ~100
    return np.abs(got - want).max() <= 1e-4 * max(1.0, np.abs(want).max())


@pytest.mark.parametrize("scale,h,w", [(3.3, 16, 1500), (1.7, 1250, 14), (3.4, 14, 1250)])
def test_each_cut_part_runs_the_phase_path_on_the_variant(sessions, scale, h, w, monkeypatch):
    standard, variant, grouped = sessions
    monkeypatch.setattr(tiling, "_plan_seconds", lambda feeds, tiles, *_: -len(tiles))  # cut these too
    feeds = plan_feeds(project(h, w, scale))
    features = np.random.default_rng(3).standard_normal((1, 32, h, w)).astype(np.float32) * 3
    whole = [s.run(None, {"features": features, **feeds})[0] for s in (standard, variant)]
    assert np.array_equal(whole[0], whole[1])  # uncut: the drift keeps the whole call on the grouped path
    tiles = plan_upscale_tiles(feeds, h, w, 32, 2**29, phase_q=phase_period(scale, PERIODS))
    assert len(tiles) > 1
    out = np.empty_like(whole[0])
    for t in tiles:
        tf = {"features": np.ascontiguousarray(features[:, :, t.in_rows, t.in_cols]), **window_feeds(feeds, t)}
        std, var, grp = (s.run(None, tf)[0] for s in (standard, variant, grouped))
        assert not np.array_equal(var, std), (t.rows, t.cols)  # the phase path ran
        assert _agree(var, grp)
        out[:, :, t.rows, t.cols] = var
    assert _agree(out, whole[0])


def test_the_pipeline_cuts_only_where_its_backend_has_the_phase_path(bundled_artifacts, monkeypatch):
    pytest.importorskip("onnxruntime")
    from metasr.runtime import ort_cpu
    from metasr.runtime.pipeline import Pipeline

    feeds = plan_feeds(project(300, 1500, 3.3))
    cuts = phase_cuts(feeds["col_src"], feeds["col_idx"], 10)
    with Pipeline(bundled_artifacts, backend="ort") as p:
        starts = {t.cols.start for t in p.tiles(300, 1500, 3.3)}
        phase = ort_cpu.PHASE in p.upscale_body
        assert set(cuts) <= starts if phase else starts == {0}
        assert {t.cols.start for t in p.tiles(300, 1500, 3.0)} == {0}  # integer scales: no phase path, no cuts
        # a small plan too, since the direct phase path (measured: 5 tiles 0.02 s of CPU, the uncut one 0.03)
        assert set(cuts) <= {t.cols.start for t in p.tiles(16, 1500, 3.3)} if phase else True
    monkeypatch.setenv(ort_cpu.ENV, "0")
    with Pipeline(bundled_artifacts, backend="ort") as p:
        assert {t.cols.start for t in p.tiles(300, 1500, 3.3)} == {0}


@pytest.mark.parametrize("scale", [3.1, 2.2, 3.25, 2.75, 3.3, 1.7, 3.9])
def test_the_cost_models_path_is_the_path_the_variant_takes(sessions, scale, monkeypatch):
    """runtime/tile_cost.py prices a call by the path its feeds take; its port of the variant's test agrees with
    ONNX Runtime on every tile of the plain and the cut plan (the variant's output differs from the standard
    body's in the last bits exactly where the phase path ran). x3.1, x2.2, x3.25 and x2.75 fold a drifted offset
    into its phase's group: a band spanning the drift keeps q groups and still runs the grouped path."""
    from metasr.runtime.tile_cost import phase_call

    standard, variant, _ = sessions
    h, w = 40, 1500
    feeds = plan_feeds(project(h, w, scale))
    q = phase_period(scale, PERIODS)
    features = np.random.default_rng(4).standard_normal((1, 32, h, w)).astype(np.float32)
    plain = plan_upscale_tiles(feeds, h, w, 32, 2**29)
    monkeypatch.setattr(tiling, "_plan_seconds", lambda feeds, tiles, *_: -len(tiles))  # the cut plan, always
    cut = plan_upscale_tiles(feeds, h, w, 32, 2**29, phase_q=q)
    seen = set()
    for t in {(t.rows.start, t.rows.stop, t.cols.start, t.cols.stop): t for t in plain + cut}.values():
        tf = window_feeds(feeds, t)
        window = np.ascontiguousarray(features[:, :, t.in_rows, t.in_cols])
        ran_phase = not np.array_equal(*(s.run(None, {"features": window, **tf})[0] for s in (standard, variant)))
        predicted = phase_call(tf, window.shape[2] * window.shape[3], q) is not None
        assert predicted == ran_phase, (scale, t.rows, t.cols)
        seen.add(ran_phase)
    assert seen == {True, False}  # both paths occur among these tiles
