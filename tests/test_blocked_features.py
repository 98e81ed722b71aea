"""A zoom's features reordered once (``runtime/blocked_features.py``).

Oracle: the same calls on a writable copy of the features, which every call reorders in its own graph; the kept
copy must give the same images bit for bit, be made once per feature map, never outlive its map, and never be
used for features that could have changed since it was made.
"""

from __future__ import annotations

import gc
import threading

import numpy as np
import pytest
from metasr.runtime import blocked_features
from metasr.runtime.blocked_features import BlockedFeatures, freeze, owner_if_frozen


def _frozen(shape=(1, 32, 6, 7)) -> np.ndarray:
    return freeze(np.random.default_rng(0).standard_normal(shape).astype(np.float32))


def test_only_whole_frozen_maps_that_own_their_memory_are_kept():
    owner = _frozen()
    assert owner_if_frozen(owner) is owner
    assert owner_if_frozen(owner[:, :, :]) is owner  # a whole view
    assert owner_if_frozen(owner[:, :, 1:]) is None  # a window of it: a tile's, reordered in its call
    assert owner_if_frozen(owner[:, :, :, ::2]) is None
    assert owner_if_frozen(np.zeros((1, 32, 6, 7), np.float32)) is None  # writable
    view = np.zeros((1, 32, 6, 7), np.float32)[:]
    view.flags.writeable = False
    assert owner_if_frozen(view) is None  # read-only, but its owner is not
    data = bytearray(4 * 32 * 42)
    over_bytes = np.frombuffer(data, np.float32).reshape(1, 32, 6, 7)
    over_bytes.flags.writeable = False
    assert owner_if_frozen(over_bytes) is None  # the bytearray under it can change


def test_the_copy_is_made_once_and_dropped_with_its_map():
    cache, calls = BlockedFeatures(), []

    def reorder(x):
        calls.append(1)
        return x.copy()

    f = _frozen()
    first = cache.get(f, reorder)
    assert cache.get(f[:, :, :], reorder) is first and len(calls) == 1 and cache.made == 1
    assert cache.get(np.array(f), reorder) is None and len(calls) == 1  # writable: not kept
    other = _frozen((1, 32, 5, 5))
    assert cache.get(other, reorder) is not first and cache.made == 2  # one map at a time
    del other
    gc.collect()
    assert cache._blocked is None  # gone with its map


def test_large_maps_are_not_kept(monkeypatch):
    monkeypatch.setattr(blocked_features, "MAX_BYTES", 1000)
    assert BlockedFeatures().get(_frozen(), lambda x: x.copy()) is None


@pytest.fixture(scope="module")
def pipeline(bundled_artifacts):
    from metasr.runtime.pipeline import Pipeline

    with Pipeline(bundled_artifacts) as p:
        if p._upscale.direct is None:
            pytest.skip("no direct paths here (the NCHWc variant did not load)")
        yield p


def test_a_zoom_on_encoded_features_reorders_them_once(pipeline):
    rgb = (np.random.default_rng(1).random((70, 90, 3)) * 255).astype(np.uint8)
    feats = pipeline.encode(rgb)
    assert not feats.flags.writeable and owner_if_frozen(feats) is not None
    with pytest.raises(ValueError, match="read-only"):
        feats[0, 0, 0, 0] = 1.0
    blocked = pipeline._upscale.direct.blocked
    made = blocked.made
    scales = (1.5, 2.0, 2.5, 3.0, 3.3, 4.0)
    got = [pipeline.upscale(feats, r) for r in scales]
    assert blocked.made == made + 1
    want = [pipeline.upscale(np.array(feats), r) for r in scales]  # writable: each call reorders in its graph
    assert blocked.made == made + 1
    assert all(np.array_equal(a, b) for a, b in zip(got, want, strict=True))


def test_writable_features_changed_between_calls_are_read_again(pipeline):
    feats = np.random.default_rng(2).standard_normal((1, 32, 40, 50)).astype(np.float32)
    first = pipeline.upscale(feats, 2.0)
    feats *= 0.5
    again = pipeline.upscale(feats, 2.0)
    assert np.array_equal(again, pipeline.upscale(np.array(feats), 2.0)) and not np.array_equal(again, first)


def test_concurrent_zooms_on_two_maps(pipeline):
    maps = [freeze(np.random.default_rng(s).standard_normal((1, 32, 48, 40)).astype(np.float32)) for s in (3, 4)]
    want = [[pipeline.upscale(np.array(m), r) for r in (2.0, 3.3)] for m in maps]
    errors = []

    def zoom(i: int) -> None:
        for _ in range(4):
            for j, r in enumerate((2.0, 3.3)):
                if not np.array_equal(pipeline.upscale(maps[i], r), want[i][j]):
                    errors.append((i, r))

    threads = [threading.Thread(target=zoom, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_a_reorder_that_gives_nothing_keeps_nothing():
    cache, f = BlockedFeatures(), _frozen()
    assert cache.get(f, lambda x: None) is None and cache.made == 0
    assert cache.get(f, lambda x: x.copy()) is not None and cache.made == 1
