"""Feature-learning backbones and their tiny registry.

Every backbone maps (N, 3, h, w) float32 (mean-shifted RGB on the 0..255 scale) to (N, C, h, w) features,
with C = ``backbone.out_channels``, at the input's resolution.
"""

from __future__ import annotations

from typing import Any, Protocol

from torch import nn

from metasr.backbones.edsr import EDSR
from metasr.backbones.rdn import RDN

__all__ = ["BACKBONES", "EDSR", "RDN", "Backbone", "backbone_parameters", "build_backbone", "register_backbone"]


class Backbone(Protocol):
    """A backbone class: ``Backbone(**params) -> nn.Module`` and the parameter count of those params, computed
    without building anything (``ValueError`` for params out of range): a checkpoint's config is checked
    before any module exists."""

    def __call__(self, **params: Any) -> nn.Module: ...

    def parameter_count(self, **params: Any) -> int: ...


BACKBONES: dict[str, Backbone] = {}


def register_backbone(name: str, factory: Backbone) -> None:
    """Register ``factory`` (see :class:`Backbone`) under ``name``; names are unique."""
    if name in BACKBONES:
        raise ValueError(f"backbone {name!r} is already registered")
    if not callable(getattr(factory, "parameter_count", None)):
        raise ValueError(f"backbone {name!r} has no parameter_count(**params): its size could not be checked")
    BACKBONES[name] = factory


def _factory(name: str) -> Backbone:
    try:
        return BACKBONES[name]
    except KeyError:
        raise ValueError(f"unknown backbone {name!r}; known: {sorted(BACKBONES)}") from None


def backbone_parameters(name: str, params: dict[str, Any]) -> int:
    """The parameter count of backbone ``name`` built with ``params``; ``ValueError`` for an unknown backbone,
    unknown or out-of-range params. Builds nothing."""
    factory = _factory(name)
    try:
        return factory.parameter_count(**params)
    except TypeError as e:  # an unknown keyword argument
        raise ValueError(f"backbone {name!r} params {sorted(params)}: {e}") from None


def build_backbone(name: str, params: dict[str, Any]) -> nn.Module:
    """Instantiate a registered backbone after checking its params (:func:`backbone_parameters`)."""
    backbone_parameters(name, params)
    return _factory(name)(**params)


register_backbone("rdn", RDN)
register_backbone("edsr", EDSR)
