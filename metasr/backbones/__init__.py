"""Feature-learning backbones and their tiny registry.

Every backbone maps (N, 3, h, w) float32 (mean-shifted RGB on the 0..255 scale) to (N, C, h, w) features,
with C = ``backbone.out_channels``, at the input's resolution.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from metasr.backbones.edsr import EDSR
from metasr.backbones.rdn import RDN

__all__ = ["BACKBONES", "EDSR", "RDN", "build_backbone", "register_backbone"]

BACKBONES: dict[str, Callable[..., nn.Module]] = {}


def register_backbone(name: str, factory: Callable[..., nn.Module]) -> None:
    """Register ``factory(**params) -> nn.Module`` under ``name``; names are unique."""
    if name in BACKBONES:
        raise ValueError(f"backbone {name!r} is already registered")
    BACKBONES[name] = factory


def build_backbone(name: str, params: dict[str, Any]) -> nn.Module:
    """Instantiate a registered backbone; unknown names list the known ones."""
    try:
        factory = BACKBONES[name]
    except KeyError:
        raise ValueError(f"unknown backbone {name!r}; known: {sorted(BACKBONES)}") from None
    return factory(**params)


register_backbone("rdn", RDN)
register_backbone("edsr", EDSR)
