"""Optimization profiles of the TensorRT upscale engine, derived from the projection (numpy only).

TensorRT needs, for every dynamic input dimension, a (min, opt, max) range fixed at build time. The upscale
graph's inputs are the features of one LR region (N, C, h, w) and the plan arrays of
:data:`metasr.runtime.feeds.UPSCALE_PLAN_INPUTS`, whose lengths follow from (h, w, r). For LR regions up to
``max_lr`` = (Hm, Wm) and scales r in (1, S] the bounds are (H = int(r*h), W = int(r*w)):

=====================  =====================================================================================
H, W (output rows/cols) 1 .. int(S*Hm), 1 .. int(S*Wm)
P_r, P_c (offsets)      1 .. min(H_max, max_offsets): the runtime feeds each tile only the offsets it uses, so a
                        scale with more distinct offsets than ``max_offsets`` (default 64) is cut into smaller
                        tiles. The weight tensor (P_r, P_c, 27C) lives in the engine at its max shape.
G_r, L_r (row groups)   1 .. Hm: groups of member blocks of input rows, and the members of one
K_r (slots per group)   1 .. min(2 * ceil(S) + 2, H_max): the outputs a member hosts (ceil(r) + 1 for one-row
                        blocks, float32 exception rows included; 2r for the 2-row blocks of r = p/2)
S_r (rows per block)    1 .. 2
G_c, L_c, K_c, S_c      likewise for columns (Wm, W_max)
=====================  =====================================================================================

The property tests check that every plan in range fits. A region outside the profile is refused with the
input, the dimension and the allowed range; :class:`~metasr.runtime.pipeline.Pipeline` tiles to stay inside.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from metasr.runtime.feeds import UPSCALE_PLAN_INPUTS, plan_feeds
from metasr.runtime.projection import project

__all__ = ["DEFAULT_MAX_OFFSETS", "ProfileError", "UpscaleProfile", "upscale_profile"]

# distinct offsets per axis per upscale call: x3.3 needs 37 (33 phases + float32 exception rows), x3.7 47;
# 64 x 64 pairs of 27C filters is 28 MiB at C = 64
DEFAULT_MAX_OFFSETS = 64


class ProfileError(ValueError):
    """Inputs outside the engine's optimization profile, or a profile that makes no sense."""


Shape = tuple[int, ...]


@dataclass(frozen=True)
class UpscaleProfile:
    """(min, opt, max) shape per upscale-graph input, plus the LR region and scale range they were made for."""

    shapes: dict[str, tuple[Shape, Shape, Shape]]
    max_lr: tuple[int, int]
    scale_max: float
    channels: int
    batch: int = 1
    extra: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, (lo, opt, hi) in self.shapes.items():
            ordered = len(lo) == len(opt) == len(hi) and all(a <= b <= c for a, b, c in zip(lo, opt, hi, strict=True))
            if not ordered:
                raise ProfileError(f"profile for {name} is not min <= opt <= max: {lo}, {opt}, {hi}")

    def check(self, feeds: dict[str, np.ndarray]) -> None:
        """Raise :class:`ProfileError` unless every input of ``feeds`` lies inside the profile."""
        for name, (lo, _, hi) in self.shapes.items():
            if name not in feeds:
                raise ProfileError(f"upscale engine input {name} is missing")
            shape = feeds[name].shape
            if len(shape) != len(lo):
                raise ProfileError(f"upscale engine input {name} has rank {len(shape)}, the engine takes {len(lo)}")
            for d, (v, a, b) in enumerate(zip(shape, lo, hi, strict=True)):
                if not a <= v <= b:
                    raise ProfileError(
                        f"upscale engine input {name} dim {d} is {v}; the engine's profile allows {a}..{b} "
                        f"(built for LR regions up to {self.max_lr[0]}x{self.max_lr[1]} at scales up to "
                        f"x{self.scale_max:g})"
                    )

    def to_json(self) -> dict[str, object]:
        return {
            "shapes": {k: [list(s) for s in v] for k, v in self.shapes.items()},
            "max_lr": list(self.max_lr),
            "scale_max": self.scale_max,
            "channels": self.channels,
            "batch": self.batch,
        }

    @classmethod
    def from_json(cls, data: dict[str, object]) -> UpscaleProfile:
        try:
            shapes = {str(k): tuple(tuple(int(x) for x in s) for s in v) for k, v in dict(data["shapes"]).items()}
            h, w = (int(x) for x in data["max_lr"])
            return cls(shapes, (h, w), float(data["scale_max"]), int(data["channels"]), int(data.get("batch", 1)))
        except (KeyError, TypeError, ValueError) as e:
            raise ProfileError(f"malformed upscale profile: {e}") from None


def _bounds(max_lr: tuple[int, int], scale_max: float, max_offsets: int) -> dict[str, tuple[int, int]]:
    hm, wm = max_lr
    big_h, big_w = int(scale_max * hm), int(scale_max * wm)
    return {
        "H": (1, big_h),
        "W": (1, big_w),
        "P_r": (1, min(big_h, max_offsets)),
        "P_c": (1, min(big_w, max_offsets)),
        "G_r": (1, hm),
        "L_r": (1, hm),
        "K_r": (1, min(2 * math.ceil(scale_max) + 2, big_h)),
        "G_c": (1, wm),
        "L_c": (1, wm),
        "K_c": (1, min(2 * math.ceil(scale_max) + 2, big_w)),
        "S_r": (1, 2),
        "S_c": (1, 2),
    }


def upscale_profile(
    channels: int,
    max_lr: tuple[int, int],
    scale_max: float,
    merge_tol: float,
    *,
    opt_lr: tuple[int, int] | None = None,
    opt_scale: float = 2.0,
    batch: int = 1,
    max_offsets: int = DEFAULT_MAX_OFFSETS,
) -> UpscaleProfile:
    """The profile covering every LR region up to ``max_lr`` (h, w) at every scale in (1, ``scale_max``], for
    tiles fed only the offsets they use (at most ``max_offsets`` per axis).

    ``opt`` is the shape of the plan for ``opt_lr`` (default ``max_lr``) at ``opt_scale``, where TensorRT tunes.
    """
    hm, wm = max_lr
    if hm < 1 or wm < 1 or channels < 1 or batch < 1 or not scale_max > 1:
        raise ProfileError(f"bad profile request: max_lr {max_lr}, channels {channels}, batch {batch}, x{scale_max}")
    opt_h, opt_w = opt_lr or max_lr
    if not (1 <= opt_h <= hm and 1 <= opt_w <= wm):
        raise ProfileError(f"opt LR size {opt_h}x{opt_w} lies outside the max {hm}x{wm}")
    if max_offsets < 2:
        raise ProfileError(f"max_offsets must be at least 2, got {max_offsets}")
    bounds = _bounds(max_lr, scale_max, max_offsets)
    opt_feeds = plan_feeds(project(opt_h, opt_w, min(opt_scale, scale_max), max_scale=scale_max, merge_tol=merge_tol))
    shapes: dict[str, tuple[Shape, Shape, Shape]] = {
        "features": ((1, channels, 1, 1), (batch, channels, opt_h, opt_w), (batch, channels, hm, wm))
    }
    for name, (_, dims) in UPSCALE_PLAN_INPUTS.items():
        lo = tuple(d if isinstance(d, int) else bounds[d][0] for d in dims)
        hi = tuple(d if isinstance(d, int) else bounds[d][1] for d in dims)
        opt = tuple(int(np.clip(v, a, b)) for v, a, b in zip(opt_feeds[name].shape, lo, hi, strict=True))
        shapes[name] = (lo, opt, hi)
    return UpscaleProfile(shapes, (hm, wm), float(scale_max), channels, batch)
