"""Lazy module attributes (PEP 562): a package's public names imported from their modules on first use, so that
importing the package loads none of their dependencies (PyTorch, Triton) until a name is used."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_getattr"]


def lazy_getattr(package: str, homes: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package``: ``name`` in ``homes`` is ``homes[name]``'s attribute of that
    name (the module imported then); any other name is an ``AttributeError``, as for a plain module."""

    def __getattr__(name: str) -> Any:
        if name in homes:
            return getattr(importlib.import_module(homes[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
