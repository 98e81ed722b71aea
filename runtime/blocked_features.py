"""Features kept in ONNX Runtime's NCHWc layout for a zoom: the direct paths' ``ReorderInput`` once per feature map.

Every direct-path call (:mod:`metasr.runtime.ort_direct`) starts by reordering its features (N, C, h, w) into
channel blocks of B (``ReorderInput``: 0.6-0.75 ms of CPU for 32 x 256 x 256 on the project's 2-core machine, a
fifth of the floor at x2 and a third at x1.5). A continuous zoom calls the stage again and again on the same
features, so :class:`BlockedFeatures` keeps the reordered copy of the last feature map it saw and hands it to the
next call on that map. It keeps it only where the features cannot change under it:

* :func:`freeze` made them: a copy on an immutable ``bytes`` object, which numpy refuses to make writable again
  (``Pipeline.encode`` returns its features so). A writable array, one only flagged read-only (which can be
  flagged back), or any other array over ``bytes`` (unpickling makes those writable) is reordered in every call
  as before;
* the call takes the whole map (a tile's window of it is reordered in its call, and not kept);
* the map is at most ``MAX_BYTES`` (larger ones are reordered in every call: the copy doubles their memory;
  :func:`freeze` only flags them read-only).

The copy lives as long as the map: a weak reference to the array over the bytes drops it with that array
(no reference cycle: it goes at once, not at the next garbage collection), and ``clear`` drops it with the backend.
Thread-safe; one map at a time (a zoom on another map replaces it).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable

import numpy as np

__all__ = ["MAX_BYTES", "BlockedFeatures", "freeze", "owner_if_frozen"]

MAX_BYTES = 64 << 20  # the largest copy kept (32 channels x 512 x 1024 float32)


_FROZEN: weakref.WeakValueDictionary[int, np.ndarray] = weakref.WeakValueDictionary()  # freeze's arrays by id


def freeze(x: np.ndarray) -> np.ndarray:
    """``x``'s values on immutable memory (a copy over ``bytes``, registered here) where it is at most
    ``MAX_BYTES``, else ``x`` flagged read-only with every array it views (its maker's own buffer: nothing else
    holds it)."""
    if x.nbytes <= MAX_BYTES and x.size:
        owner = np.frombuffer(np.ascontiguousarray(x).tobytes(), dtype=x.dtype)
        _FROZEN[id(owner)] = owner
        return owner.reshape(x.shape)
    a = x
    while isinstance(a, np.ndarray):
        a.flags.writeable = False
        a = a.base
    return x


def owner_if_frozen(x: np.ndarray) -> np.ndarray | None:
    """The array :func:`freeze` made over the immutable ``bytes`` that hold all of ``x`` (contiguous), else None.
    (Only its own: numpy makes other arrays over ``bytes`` writable, e.g. unpickling or ``__setstate__``.)"""
    owner = x
    while isinstance(owner.base, np.ndarray):
        owner = owner.base
    if type(owner.base) is not bytes or _FROZEN.get(id(owner)) is not owner or owner.flags.writeable:
        return None
    if not x.flags.c_contiguous:
        return None
    whole = x.ctypes.data == owner.ctypes.data and x.nbytes == len(owner.base)
    return owner if whole else None


class BlockedFeatures:
    """The NCHWc copy of the last frozen feature map (module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._owner: weakref.ref | None = None
        self._key: tuple = ()
        self._blocked: np.ndarray | None = None
        self.made = 0  # copies made (the other calls on frozen maps found theirs)

    def _watch(self, owner: np.ndarray) -> weakref.ref:
        """A weak reference to ``owner`` that drops the copy with it. The callback holds this cache weakly (no
        cycle) and takes no lock: the map may die on a thread that holds it (inside :meth:`get`)."""
        me = weakref.ref(self)

        def dropped(ref: weakref.ref) -> None:
            cache = me()
            if cache is not None and cache._owner is ref:  # (a race may drop a newer copy: it is made again)
                cache._owner, cache._key, cache._blocked = None, (), None

        return weakref.ref(owner, dropped)

    def get(self, x: np.ndarray, reorder: Callable[[np.ndarray], np.ndarray | None]) -> np.ndarray | None:
        """The NCHWc copy of ``x`` (kept, or made by ``reorder`` and kept), or None where ``x`` is not one to
        keep or ``reorder`` gave None (the call then reorders it in its own graph)."""
        if x.nbytes > MAX_BYTES:
            return None
        owner = owner_if_frozen(x)
        if owner is None:
            return None
        key = (x.ctypes.data, x.shape, x.dtype.str)
        with self._lock:
            kept = self._owner() if self._owner is not None else None
            if kept is owner and self._key == key:
                return self._blocked
            self._owner, self._key, self._blocked = None, (), None  # (the old copy goes before the new one is made)
        del kept  # (outside the lock: the last reference to an old map may go here)
        blocked = reorder(x)
        if blocked is None:
            return None
        with self._lock:
            self._owner, self._key, self._blocked = self._watch(owner), key, blocked
            self.made += 1
        return blocked

    def clear(self) -> None:
        with self._lock:
            self._owner, self._key, self._blocked = None, (), None
