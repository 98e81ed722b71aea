"""The phase path without the body's plan logic and filter packing (``runtime/ort_direct_phase.py``).

Oracles: the NCHWc variant's phase path on the split graph (``tests/test_ort_phase.py``'s cases), which the direct
path must equal bit for bit (the same kernels on the same filters), and must be taken exactly where the variant
takes its phase path, which shows as an output that differs from the standard body's (the grouped path, another
summation order); the graph forced onto the grouped path (no convolution), to float32 rounding. Also the packed
filters kept per plan and bounded, and the sessions kept per (q, p) bounded.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
from metasr.runtime import ort_cpu, ort_direct, ort_direct_phase
from metasr.runtime.feeds import plan_feeds, tile_feeds
from metasr.runtime.projection import project

from tests.test_ort_direct import split_parts
from tests.test_ort_phase import HINT_CASES, TAKEN, _agree, hint_case
from tests.test_upscale_body import cpu_session, grouped_model


@pytest.fixture(scope="module")
def parts(bundled_artifacts, block):
    raw = (bundled_artifacts / "upscale.onnx").read_bytes()
    split, variant, said, direct = split_parts(raw, block)
    assert ort_cpu.PHASE in said, said
    sessions = [cpu_session(m) for m in (split.predictor, split.body, variant, grouped_model(raw))]
    return sessions, split, direct


def _outputs(parts, feeds, h, w, n=1):
    (predictor, standard, variant, grouped), split, direct = parts
    feeds = {"features": np.random.default_rng(1).standard_normal((n, 32, h, w)).astype(np.float32) * 3, **feeds}
    table = predictor.run(None, {k: feeds[k] for k in split.inputs})[0]
    body = {k: v for k, v in feeds.items() if k not in split.inputs} | {split.table: table}
    before = direct.taken["phase"]
    got = direct.run(feeds, table)
    assert (got is not None) == (direct.taken["phase"] == before + 1)
    return got, standard.run(None, body)[0], variant.run(None, body)[0], grouped.run(None, feeds)[0]


def _check(parts, feeds, h, w, n=1):
    got, std, var, want = _outputs(parts, feeds, h, w, n)
    phase = not np.array_equal(var, std)  # the variant took its phase path
    assert (got is not None) == phase
    if got is not None:
        assert got.shape == var.shape and np.array_equal(got, var)
        assert _agree(got, want)
    return got is not None


@pytest.mark.parametrize(("scale", "h", "w"), TAKEN)
def test_direct_phase_path_equals_the_variant(parts, scale, h, w):
    assert _check(parts, plan_feeds(project(h, w, scale)), h, w), scale


@pytest.mark.parametrize("case", [*HINT_CASES, "x2.3", "x3.7", "under PHASE_MIN_PIXELS"])
def test_direct_phase_path_on_other_hints_and_where_it_does_not_apply(parts, case):
    if case in HINT_CASES:
        feeds, h, w, n, takes = hint_case(case)
    else:  # float32 exception rows out of the period, eleven groups, a call too small
        h, w = (31, 33) if case == "under PHASE_MIN_PIXELS" else (50, 64)
        feeds, n, takes = plan_feeds(project(h, w, {"x2.3": 2.3, "x3.7": 3.7}.get(case, 3.3))), 1, False
    assert _check(parts, feeds, h, w, n) == takes, case


def test_packed_filters_are_kept_per_table_and_bounded(parts, monkeypatch):
    direct = parts[2]
    cache = ort_direct_phase.PhaseFilters(direct.bias, direct.block)
    feeds = {"features": np.zeros((1, 32, 50, 64), np.float32), **plan_feeds(project(50, 64, 3.3))}
    plan = ort_direct_phase.phase_plan(feeds, direct.block)
    table = np.random.default_rng(0).standard_normal((33, 33, 27 * 32)).astype(np.float32)
    first = cache.pairs(plan, table)
    assert cache.packed == 100 and len(first) == 100  # q^2 phase pairs, each packed once
    again = cache.pairs(plan, table)
    assert cache.packed == 100 and all(a[0] is b[0] for a, b in zip(first, again, strict=True))
    other = table.copy()  # another plan's table: packed again, the old pairs dropped
    cache.pairs(plan, other)
    assert cache.packed == 200 and cache._bytes == sum(w.nbytes + b.nbytes for w, b in first)
    del table, other  # the pairs go with their table (a weak reference)
    assert cache._bytes == 0 and not cache._pairs
    monkeypatch.setattr(ort_direct_phase, "CACHE_CALLS", 1)  # a call that would overflow starts the cache over
    table = np.random.default_rng(1).standard_normal((33, 33, 27 * 32)).astype(np.float32)
    shifted = ort_direct_phase.phase_plan(tile_feeds(feeds, slice(7, 150), slice(20, 190)), direct.block)
    cache.pairs(plan, table)
    call = cache.pairs(shifted, table)
    assert cache._bytes <= sum(w.nbytes + b.nbytes for w, b in call)


def test_phase_sessions_are_bounded(parts, monkeypatch):
    direct = ort_direct.DirectPaths(parts[2].bias, parts[2].block, parts[2]._make)
    monkeypatch.setattr(ort_direct, "PHASE_SESSIONS", 2)
    for p in (4, 5, 7):
        direct._session(("phase", 3, p), lambda p=p: ort_direct_phase.phase_model(3, p, direct.block))
    direct._session(("conv", 2, 1), lambda: ort_direct._model(2, 1))
    assert list(direct._sessions) == [("phase", 3, 5), ("phase", 3, 7), ("conv", 2, 1)]


@pytest.mark.parametrize(("scale", "budget_mb"), [(3.9, 64), (1.7, 16), (3.3, 512)])
def test_pipelines_give_the_same_images_and_tiles_share_packed_filters(bundled_artifacts, monkeypatch, scale,
                                                                       budget_mb):  # fmt: skip
    from metasr.runtime.pipeline import Pipeline

    h, w = 150, 220
    features = np.random.default_rng(4).standard_normal((1, 32, h, w)).astype(np.float32)
    monkeypatch.setenv(ort_direct.ENV, "0")
    with Pipeline(bundled_artifacts, upscale_budget_mb=budget_mb) as p:
        want = p.upscale(features, scale)
    monkeypatch.setenv(ort_direct.ENV, "1")
    with Pipeline(bundled_artifacts, upscale_budget_mb=budget_mb) as p:
        direct = p._upscale.direct
        tiles = len(p.tiles(h, w, scale))
        got = p.upscale(features, scale)
        calls = direct.taken["phase"]
        again = p.upscale(features, scale)  # the same plan again (its table cached): nothing packed again
    assert np.array_equal(got, want) and np.array_equal(again, want)
    assert calls >= 1 and (calls > 1) == (budget_mb < 512) and direct.taken["phase"] == 2 * calls
    q = 10
    assert direct.phase_filters.packed < calls * q * q or calls == 1  # tiles share the plan's packed pairs
    assert calls <= tiles


def test_no_direct_phase_path_where_the_variant_has_none(bundled_artifacts, monkeypatch):
    """A variant that keeps DepthToSpace (an opset-15/16 export, or an opset-17 graph with a node that reads
    differently at 18) has no phase path: its calls at x3.3 run the grouped path, and so must the direct paths'
    (found in review: the direct phase path ran there, 57 of 4.4 M uint8 values off by one)."""
    from metasr.runtime.pipeline import Pipeline

    monkeypatch.setattr(ort_cpu, "col2im_opset", lambda proto, opset: opset)  # keeps the graph at 17
    features = np.random.default_rng(5).standard_normal((1, 32, 50, 64)).astype(np.float32)
    outs = {}
    for env in ("0", "1"):
        monkeypatch.setenv(ort_direct.ENV, env)
        with Pipeline(bundled_artifacts) as p:
            assert "DepthToSpace" in p.upscale_body and ort_cpu.PHASE not in p.upscale_body
            outs[env] = [p.upscale(features, s) for s in (3.3, 2.0)]
            if env == "1":
                assert not p._upscale.direct.phase and dict(p._upscale.direct.taken) == {"conv": 1}
    assert all(np.array_equal(a, b) for a, b in zip(outs["0"], outs["1"], strict=True))


def test_the_tiler_prices_phase_calls_as_the_backend_runs_them(bundled_artifacts, monkeypatch):
    """x3.3 on 1000 x 1500 features at 64 MiB: the cut plan on the direct path (measured 1.34 against 1.71 s), the
    plain one without it (1.64-1.65 against 1.99-2.09 s; tests/test_tile_cost.py)."""
    from metasr.runtime.pipeline import Pipeline

    counts = {}
    for env in ("0", "1"):
        monkeypatch.setenv(ort_direct.ENV, env)
        with Pipeline(bundled_artifacts, upscale_budget_mb=64) as p:
            counts[env] = len(p.tiles(1000, 1500, 3.3))
    assert counts == {"0": 165, "1": 350}
