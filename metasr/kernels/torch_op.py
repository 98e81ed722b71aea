"""``torch.ops.metasr.meta_upscale``: the Triton kernel as a PyTorch custom op (one opaque op for
``torch.compile``; inference only, no autograd formula). Importing this module registers the op."""

from __future__ import annotations

import numpy as np
import torch

from metasr.kernels.launch import meta_upscale_triton
from metasr.runtime.projection import ProjectionPlan

__all__ = ["kernel_upscale", "meta_upscale_op"]


@torch.library.custom_op("metasr::meta_upscale", mutates_args=())
def meta_upscale_op(
    features: torch.Tensor,
    weights: torch.Tensor,
    row_src: torch.Tensor,
    row_idx: torch.Tensor,
    col_src: torch.Tensor,
    col_idx: torch.Tensor,
) -> torch.Tensor:
    """``MetaUpscale`` inputs 0-5 -> (N, 3, H, W); see :func:`metasr.kernels.meta_upscale_triton`."""
    return meta_upscale_triton(features, weights, row_src, row_idx, col_src, col_idx)


@meta_upscale_op.register_fake
def _(features, weights, row_src, row_idx, col_src, col_idx):
    return features.new_empty((features.shape[0], 3, row_src.shape[0], col_src.shape[0]))


def kernel_upscale(features: torch.Tensor, table: torch.Tensor, plan: ProjectionPlan) -> torch.Tensor:
    """Like :func:`metasr.upscale.meta_upscale` (``table`` (P_r, P_c, 9C, 3) in (ky, kx, c) order) on the kernel.

    Returns (N, 3, out_h, out_w) in the features' dtype and device; no mean added, no clamping.
    """
    pr, pc, k, _ = table.shape
    weights = table.reshape(pr, pc, k * 3)  # (P_r, P_c, 9C*3): (ky, kx, c, o), the op's filter layout

    def idx(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64)).to(features.device, non_blocking=True)

    rows, cols = plan.rows, plan.cols
    return torch.ops.metasr.meta_upscale(
        features, weights.to(features.dtype), idx(rows.src), idx(rows.offset_index), idx(cols.src),
        idx(cols.offset_index),
    )  # fmt: skip
