"""The kernel's launch contract, importable without Triton or TensorRT (the plugin reads it at build time).

Kernel parameters, in the order TensorRT's ahead-of-time plugins pass them (all op inputs, then 32-bit
scalars, then the output):

==  ==================  =====================================================================================
 0  features           float32/float16 (N, C, h, w), contiguous
 1  weights            same dtype (P_r, P_c, 9*C*3), per offset pair a filter ordered (ky, kx, c, out)
 2  row_src            int64 (H,)  source row of each output row, in [0, h)
 3  row_idx            int64 (H,)  row-offset index of each output row, in [0, P_r)
 4  col_src            int64 (W,)  source column of each output column, in [0, w)
 5  col_idx            int64 (W,)  column-offset index of each output column, in [0, P_c)
 6  row_groups         int64, the op's grouping hints 6-11 (``metasr.runtime.feeds``): the per-pixel kernel
 7  row_slots          never reads them (declared so the parameter list matches the op); the filter-stationary
 8  row_pick           kernel reads 6, 7, 9 and 10
 9  col_groups
10  col_slots
11  col_pick
12  C, h, w, H, W,     int32 scalars (from the inputs' shapes)
    P_r, P_c
19  out                same dtype as features (N, 3, H, W), contiguous
==  ==================  =====================================================================================

Grid: ``(cdiv(W, block_w), cdiv(H, block_h), N)``; threads per block ``num_warps * 32``; no dynamic shared
memory beyond what the compiled kernel reports and no Triton scratch memory.

The filter-stationary kernel (``KernelConfig(layout="filter")``, behind a flag: not yet measured on a GPU) takes
the same 12 inputs, the 15 scalars of :data:`FILTER_SCALAR_PARAMS` (the seven above, then the hints' G_r, L_r,
K_r, S_r, G_c, L_c, K_c, S_c) and the output; grid ``(cdiv(L_c, block_w), cdiv(L_r, block_h), N * G_r * G_c)``
(a program per group pair and tile of member blocks, see ``metasr.kernels.source_filter``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

__all__ = [
    "DTYPES",
    "FILTER_SCALAR_PARAMS",
    "INPUT_PARAMS",
    "LAYOUTS",
    "OUTPUT_PARAMS",
    "PARAMS",
    "SCALAR_PARAMS",
    "KernelConfig",
    "default_config",
    "filter_launch_geometry",
    "launch_geometry",
    "scalar_params",
]

INPUT_PARAMS = (
    "features",
    "weights",
    "row_src",
    "row_idx",
    "col_src",
    "col_idx",
    "row_groups",
    "row_slots",
    "row_pick",
    "col_groups",
    "col_slots",
    "col_pick",
)
SCALAR_PARAMS = ("C", "h", "w", "H", "W", "P_r", "P_c")
FILTER_SCALAR_PARAMS = (*SCALAR_PARAMS, "G_r", "L_r", "K_r", "S_r", "G_c", "L_c", "K_c", "S_c")
LAYOUTS = ("pixel", "filter")
OUTPUT_PARAMS = ("out",)
PARAMS = INPUT_PARAMS + SCALAR_PARAMS + OUTPUT_PARAMS
DTYPES = ("fp32", "fp16")


@dataclass(frozen=True)
class KernelConfig:
    """Block shape of one kernel instance: ``block_h x block_w`` output pixels (``layout="filter"``: member
    blocks of one group pair), channels in chunks of ``block_c``, ``num_warps`` warps. All powers of two
    (Triton's block shapes). ``layout``: "pixel" (the default kernel) or "filter" (filter-stationary; needs
    block_h * block_w >= 16 and block_c >= 16 for its matrix products; ``window``: output positions searched
    for a member's slots, >= 2 * K * S + 1)."""

    block_h: int = 4
    block_w: int = 32
    block_c: int = 4
    num_warps: int = 4
    layout: str = "pixel"
    window: int = 64

    def __post_init__(self) -> None:
        for name in ("block_h", "block_w", "block_c", "num_warps", "window"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1 or v & (v - 1):
                raise ValueError(f"KernelConfig.{name} must be a power of two >= 1, got {v!r}")
        if self.layout not in LAYOUTS:
            raise ValueError(f"KernelConfig.layout must be one of {LAYOUTS}, got {self.layout!r}")
        if self.layout == "filter" and (self.block_h * self.block_w < 16 or self.block_c < 16):
            raise ValueError("the filter layout needs block_h * block_w >= 16 and block_c >= 16")
        if self.block_h * self.block_w * self.block_c < self.threads:
            shape = f"{self.block_h}x{self.block_w}x{self.block_c}"
            raise ValueError(f"a {shape} tile has fewer elements than {self.threads} threads")

    @property
    def threads(self) -> int:
        return self.num_warps * 32


def default_config(dtype: str = "fp32", layout: str = "pixel") -> KernelConfig:
    """The block shape used by the PyTorch path and the plugin for ``dtype`` ("fp32" | "fp16") and ``layout``."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    if layout == "filter":
        return KernelConfig(block_h=4, block_w=8, block_c=16, num_warps=4, layout="filter")
    return KernelConfig(layout=layout)


def scalar_params(config: KernelConfig) -> tuple[str, ...]:
    """The int32 scalar parameters of the kernel ``config`` selects."""
    return FILTER_SCALAR_PARAMS if config.layout == "filter" else SCALAR_PARAMS


T = TypeVar("T")


def launch_geometry(
    config: KernelConfig,
    features_shape: tuple[T, T, T, T],
    big_h: T,
    big_w: T,
    pairs: tuple[T, T],
    cdiv: Callable[[T, int], T],
) -> tuple[tuple[T, T, T], tuple[T, ...]]:
    """Grid and the seven scalar arguments (C, h, w, H, W, P_r, P_c) of one launch.

    Works on ints (a direct launch) and on TensorRT shape expressions (the AOT plugin), so both launch
    the kernel identically: ``features_shape`` (N, C, h, w), ``big_h``/``big_w`` the output size, ``pairs`` the
    weights' (P_r, P_c), ``cdiv`` ceiling division for that type.
    """
    n, c, h, w = features_shape
    grid = (cdiv(big_w, config.block_w), cdiv(big_h, config.block_h), n)
    return grid, (c, h, w, big_h, big_w, pairs[0], pairs[1])


def filter_launch_geometry(
    config: KernelConfig,
    features_shape: tuple[T, T, T, T],
    big_h: T,
    big_w: T,
    pairs: tuple[T, T],
    hints: tuple[tuple[T, T, T, T], tuple[T, T, T, T]],
    cdiv: Callable[[T, int], T],
    mul: Callable[[T, T], T] = lambda a, b: a * b,
) -> tuple[tuple[T, T, T], tuple[T, ...]]:
    """Grid and the 15 scalars of the filter-stationary kernel; ``hints`` per axis (G, L, K, S) from the shapes
    of ``*_groups`` (G, L, S) and ``*_slots`` (G, K). Ints or TensorRT shape expressions, like
    :func:`launch_geometry`."""
    n, c, h, w = features_shape
    (g_r, l_r, k_r, s_r), (g_c, l_c, k_c, s_c) = hints
    grid = (cdiv(l_c, config.block_w), cdiv(l_r, config.block_h), mul(mul(n, g_r), g_c))
    return grid, (c, h, w, big_h, big_w, pairs[0], pairs[1], g_r, l_r, k_r, s_r, g_c, l_c, k_c, s_c)
