"""The Meta-Upscale weight predictor (``P2W``): [1/r, row offset, column offset] -> a 3x3 filter bank."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from metasr.runtime.projection import ProjectionPlan


class WeightPredictor(nn.Module):
    """Linear(3, hidden) -> ReLU -> Linear(hidden, C*k*k*3), key names as the official ``P2W.meta_block``.

    The C*k*k*3 outputs of one input vector form a (C, k, k, 3) array indexed
    [in_channel, ky, kx, out_channel] (the official layout).
    """

    def __init__(self, features: int, hidden: int = 256, kernel_size: int = 3, out_channels: int = 3) -> None:
        super().__init__()
        self.features, self.kernel_size, self.out_channels = features, kernel_size, out_channels
        self.meta_block = nn.Sequential(
            nn.Linear(3, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, features * kernel_size**2 * out_channels)
        )

    def forward(self, pos: torch.Tensor) -> torch.Tensor:
        """(P, 3) float32 ``[1/r, row offset, col offset]`` -> (P, C*k*k*3) raw official-layout weights."""
        return self.meta_block(pos)

    def table(self, plan: ProjectionPlan, like: torch.Tensor) -> torch.Tensor:
        """Filters for every distinct offset pair of ``plan``, laid out for the contraction.

        Returns (P_r, P_c, k*k*C, 3) with the reduction axis ordered (ky, kx, c): channels-last patches
        contract against it directly. ``like`` gives device and dtype.
        """
        pos = torch.from_numpy(np.ascontiguousarray(plan.pair_inputs())).to(like.device, like.dtype)
        pr, pc = plan.rows.offsets.size, plan.cols.offsets.size
        k, c = self.kernel_size, self.features
        raw = self(pos).view(pr, pc, c, k, k, self.out_channels)  # (Pr, Pc, C, ky, kx, o)
        return raw.permute(0, 1, 3, 4, 2, 5).reshape(pr, pc, k * k * c, self.out_channels)  # (Pr, Pc, ky kx C, o)
