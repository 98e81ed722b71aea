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
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

__all__ = [
    "DTYPES",
    "INPUT_PARAMS",
    "OUTPUT_PARAMS",
    "PARAMS",
    "SCALAR_PARAMS",
    "KernelConfig",
    "default_config",
    "launch_geometry",
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
OUTPUT_PARAMS = ("out",)
PARAMS = INPUT_PARAMS + SCALAR_PARAMS + OUTPUT_PARAMS
DTYPES = ("fp32", "fp16")


@dataclass(frozen=True)
class KernelConfig:
    """Block shape of one kernel instance: ``block_h x block_w`` output pixels, channels in chunks of
    ``block_c``, ``num_warps`` warps. All powers of two (Triton's block shapes)."""

    block_h: int = 4
    block_w: int = 32
    block_c: int = 4
    num_warps: int = 4

    def __post_init__(self) -> None:
        for name in ("block_h", "block_w", "block_c", "num_warps"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1 or v & (v - 1):
                raise ValueError(f"KernelConfig.{name} must be a power of two >= 1, got {v!r}")
        if self.block_h * self.block_w * self.block_c < self.threads:
            shape = f"{self.block_h}x{self.block_w}x{self.block_c}"
            raise ValueError(f"a {shape} tile has fewer elements than {self.threads} threads")

    @property
    def threads(self) -> int:
        return self.num_warps * 32


def default_config(dtype: str = "fp32") -> KernelConfig:
    """The block shape used by the PyTorch path and the plugin for ``dtype`` ("fp32" | "fp16")."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    return KernelConfig()


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
