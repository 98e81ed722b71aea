"""EDSR (Lim et al. 2017) without its upscaler: the Meta-EDSR feature extractor.

Key names follow the EDSR-PyTorch layout (``head.0``, ``body.{i}.body.{0,2}``, ``body.{n}``).
Meta-EDSR in the paper: ``channels=256, n_blocks=32, res_scale=0.1``; EDSR-baseline: 64 / 16 / 1.0.
"""

from __future__ import annotations

import torch
from torch import nn

from metasr.backbones.limits import check_kernel, check_size
from metasr.config import receptive_radius
from metasr.limits import check_float


class _ResBlock(nn.Module):
    """conv-ReLU-conv with a scaled residual: (N, C, h, w) -> (N, C, h, w)."""

    def __init__(self, channels: int, kernel_size: int, res_scale: float) -> None:
        super().__init__()
        pad = (kernel_size - 1) // 2
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, kernel_size, padding=pad),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, kernel_size, padding=pad),
        )
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) * self.res_scale + x if self.res_scale != 1 else self.body(x) + x


class EDSR(nn.Module):
    """EDSR feature extractor: head conv, ``n_blocks`` residual blocks + conv, global residual.

    Input (N, 3, h, w) float32, output (N, channels, h, w).
    """

    def __init__(self, channels: int = 64, n_blocks: int = 16, res_scale: float = 1.0, kernel_size: int = 3) -> None:
        super().__init__()
        pad = (kernel_size - 1) // 2
        self.out_channels = channels
        self.head = nn.Sequential(nn.Conv2d(3, channels, kernel_size, padding=pad))
        self.body = nn.Sequential(
            *[_ResBlock(channels, kernel_size, res_scale) for _ in range(n_blocks)],
            nn.Conv2d(channels, channels, kernel_size, padding=pad),
        )
        self.receptive_radius = receptive_radius("edsr", {"n_blocks": n_blocks})

    @staticmethod
    def parameter_count(channels: int = 64, n_blocks: int = 16, res_scale: float = 1.0, kernel_size: int = 3) -> int:
        """Parameters of ``EDSR(...)``, computed without building it; ``ValueError`` for out-of-range values."""
        check_size(channels=channels, n_blocks=n_blocks)
        check_kernel(kernel_size)
        check_float(res_scale, "res_scale", 0.0, 10.0)
        conv = channels * channels * kernel_size**2 + channels  # a C -> C convolution with bias
        return 3 * channels * kernel_size**2 + channels + 2 * n_blocks * conv + conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(x)
        return self.body(x) + x
