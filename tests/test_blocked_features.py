"""A zoom's features reordered once (``runtime/blocked_features.py``).

Oracle: the same calls on a writable copy of the features, which every call reorders in its own graph; the kept
copy must give the same images bit for bit, be made once per feature map, never outlive its map, and never be
used for features that could have changed since it was made.
"""

from __future__ import annotations

import dis
import gc
import pickle
import sys
import threading
import weakref

import numpy as np
import pytest
from metasr.runtime import blocked_features
from metasr.runtime.blocked_features import BlockedFeatures, freeze, owner_if_frozen


def _frozen(shape=(1, 32, 6, 7)) -> np.ndarray:
    return freeze(np.random.default_rng(0).standard_normal(shape).astype(np.float32))  # (on immutable bytes)


def test_only_whole_maps_on_immutable_memory_are_kept():
    frozen = _frozen()
    owner = owner_if_frozen(frozen)
    assert owner is not None and type(owner.base) is bytes
    assert owner_if_frozen(frozen[:, :, :]) is owner  # a whole view
    assert owner_if_frozen(frozen[:, :, 1:]) is None  # a window of it: a tile's, reordered in its call
    assert owner_if_frozen(frozen[:, :, :, ::2]) is None
    assert owner_if_frozen(np.zeros((1, 32, 6, 7), np.float32)) is None  # writable
    flagged = np.zeros((1, 32, 6, 7), np.float32)
    flagged.flags.writeable = False
    assert owner_if_frozen(flagged) is None  # read-only by a flag, which can be set back
    data = bytearray(4 * 32 * 42)
    over_bytearray = np.frombuffer(data, np.float32).reshape(1, 32, 6, 7)
    over_bytearray.flags.writeable = False
    assert owner_if_frozen(over_bytearray) is None  # the bytearray under it can change
    over_bytes = np.frombuffer(bytes(4 * 32 * 42), np.float32).reshape(1, 32, 6, 7)
    assert owner_if_frozen(over_bytes) is None  # not freeze's: only its own arrays count


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_unpickled_features_are_not_kept(protocol):
    """The second review's stale image: unpickling (protocols <= 4) gives a *writable* array directly over
    ``bytes``, which the cache took for immutable; changed in place, the next call returned the old image."""
    back = pickle.loads(pickle.dumps(_frozen(), protocol=protocol))
    assert owner_if_frozen(back) is None
    cache = BlockedFeatures()
    assert cache.get(back, lambda x: x.copy()) is None and cache.made == 0


def test_frozen_features_cannot_be_made_writable_again():
    before = np.random.default_rng(0).standard_normal((1, 32, 6, 7)).astype(np.float32)
    view = before[:]  # a writable view made before: it writes the old memory, not the frozen map's
    frozen = freeze(before)
    view += 1
    assert np.array_equal(frozen, before - 1) is False and not np.shares_memory(frozen, before)
    for a in (frozen, owner_if_frozen(frozen)):
        with pytest.raises(ValueError):
            a.flags.writeable = True


def test_maps_over_the_limit_are_only_flagged(monkeypatch):
    monkeypatch.setattr(blocked_features, "MAX_BYTES", 1000)
    x = np.zeros((1, 32, 6, 7), np.float32)
    assert freeze(x) is x and not x.flags.writeable and owner_if_frozen(x) is None


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
    with pytest.raises(ValueError):
        feats.flags.writeable = True
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


def test_the_copy_goes_with_the_backend(bundled_artifacts):
    from metasr.runtime.pipeline import Pipeline

    feats = _frozen((1, 32, 40, 40))
    p = Pipeline(bundled_artifacts)
    paths = p._upscale.direct
    if paths is None:
        pytest.skip("no direct paths here (the NCHWc variant did not load)")
    p.upscale(feats, 2.0)
    assert paths.blocked.made == 1 and paths.blocked._blocked is not None
    p.close()
    assert paths.blocked._blocked is None  # the features still live: the closed backend's copy does not


def test_no_reference_cycle_keeps_a_copy():
    """A cache dropped while its map lives goes at once, with its copy (not at the next garbage collection)."""
    feats, cache = _frozen(), BlockedFeatures()
    copy = weakref.ref(cache.get(feats, lambda x: x.copy()))
    gc.disable()
    try:
        del cache
        assert copy() is None
    finally:
        gc.enable()


def test_a_map_that_dies_inside_get_does_not_hang():
    """The reviewer's deadlock, made deterministic: a tracer plays another thread dropping the kept map's last
    reference right after ``get`` looked it up (a point where CPython may switch threads). Its weak reference's
    callback then ran on this thread, inside ``get``, and took the cache's lock, which that thread held."""
    cache = BlockedFeatures()
    holder = [_frozen()]
    cache.get(holder[0], lambda x: x.copy())  # the kept map is only "the other thread's"
    mine = _frozen((1, 32, 5, 5))
    code = BlockedFeatures.get.__code__
    is_ops = {i.offset for i in dis.get_instructions(code) if i.opname == "IS_OP"}

    def tracer(frame, event, arg):
        if frame.f_code is code:
            frame.f_trace_opcodes = True
            if event == "opcode" and frame.f_lasti in is_ops and holder:
                holder.clear()  # "the other thread" lets its map go now
        return tracer

    def run() -> None:
        sys.settrace(tracer)
        try:
            out.append(cache.get(mine, lambda x: x.copy()))
        finally:
            sys.settrace(None)

    out: list = []
    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout=30)
    assert not holder and len(out) == 1 and np.array_equal(out[0], mine), "get hung or failed"
