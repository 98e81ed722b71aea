"""Features kept in ONNX Runtime's NCHWc layout for a zoom: the direct paths' ``ReorderInput`` once per feature map.

Every direct-path call (:mod:`metasr.runtime.ort_direct`) starts by reordering its features (N, C, h, w) into
channel blocks of B (``ReorderInput``: 0.6-0.75 ms of CPU for 32 x 256 x 256 on the project's 2-core machine, a
fifth of the floor at x2 and a third at x1.5). A continuous zoom calls the stage again and again on the same
features, so :class:`BlockedFeatures` keeps the reordered copy of the last feature map it saw and hands it to the
next call on that map. It keeps it only where the features cannot change under it:

* the array and every array it views are read-only, and the last one owns its memory (``Pipeline.encode``
  returns such features; a writable array, or a view of a bytes-like buffer, is reordered in every call as
  before);
* the call takes the whole map (a tile's window of it is reordered in its call, and not kept);
* the copy is at most ``MAX_BYTES`` (larger maps are reordered in every call: the copy doubles their memory).

The copy lives as long as the map: a weak reference to the array that owns the memory drops it with that array.
Thread-safe; one map at a time (a zoom on another map replaces it).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable

import numpy as np

__all__ = ["MAX_BYTES", "BlockedFeatures", "freeze", "owner_if_frozen"]

MAX_BYTES = 64 << 20  # the largest copy kept (32 channels x 512 x 1024 float32)


def freeze(x: np.ndarray) -> np.ndarray:
    """``x`` made read-only with every array it views (its maker's own buffer: nothing else holds it)."""
    a = x
    while isinstance(a, np.ndarray):
        a.flags.writeable = False
        a = a.base
    return x


def owner_if_frozen(x: np.ndarray) -> np.ndarray | None:
    """The array that owns ``x``'s memory where ``x`` covers all of it and nothing in its chain of views can
    write to it (every array read-only, the owner's memory its own), else None."""
    owner = x
    while isinstance(owner, np.ndarray):
        if owner.flags.writeable:
            return None
        if owner.base is None:
            break
        owner = owner.base
    if not isinstance(owner, np.ndarray) or not owner.flags.owndata:
        return None
    whole = x.ctypes.data == owner.ctypes.data and x.nbytes == owner.nbytes and x.flags.c_contiguous
    return owner if whole else None


class BlockedFeatures:
    """The NCHWc copy of the last frozen feature map (module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._owner: weakref.ref | None = None
        self._key: tuple = ()
        self._blocked: np.ndarray | None = None
        self.made = 0  # copies made (the other calls on frozen maps found theirs)

    def _dropped(self, ref: weakref.ref) -> None:  # the map is gone: so is its copy
        with self._lock:
            if self._owner is ref:
                self._owner, self._key, self._blocked = None, (), None

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
            if self._owner is not None and self._owner() is owner and self._key == key:
                return self._blocked
            self._owner, self._key, self._blocked = None, (), None  # (the old copy goes before the new one is made)
        blocked = reorder(x)
        if blocked is None:
            return None
        with self._lock:
            self._owner, self._key, self._blocked = weakref.ref(owner, self._dropped), key, blocked
            self.made += 1
        return blocked

    def clear(self) -> None:
        with self._lock:
            self._owner, self._key, self._blocked = None, (), None
