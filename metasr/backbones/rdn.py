"""Residual Dense Network (Zhang et al. 2018) without its upscaler: the Meta-RDN feature extractor.

Module names follow the official state-dict keys (``SFENet1``, ``RDBs.{d}.convs.{c}.conv.0``, ``LFF``,
``GFF.0``/``GFF.1``) so the authors' checkpoint loads key for key.
"""

from __future__ import annotations

import torch
from torch import nn

from metasr.backbones.limits import check_kernel, check_size
from metasr.config import receptive_radius


class _DenseConv(nn.Module):
    """conv3x3 + ReLU whose output is concatenated to its input: (N, Cin, h, w) -> (N, Cin + G, h, w)."""

    def __init__(self, in_channels: int, growth: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, growth, kernel_size, padding=(kernel_size - 1) // 2), nn.ReLU(inplace=True)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((x, self.conv(x)), dim=1)


class _RDB(nn.Module):
    """Residual dense block: ``n_layers`` dense convs, 1x1 local fusion, local residual."""

    def __init__(self, channels: int, growth: int, n_layers: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.convs = nn.Sequential(*[_DenseConv(channels + c * growth, growth, kernel_size) for c in range(n_layers)])
        self.LFF = nn.Conv2d(channels + n_layers * growth, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.LFF(self.convs(x)) + x


class RDN(nn.Module):
    """RDN feature extractor. Configuration B of the paper: ``channels=64, n_blocks=16, n_layers=8, growth=64``.

    Input (N, 3, h, w) float32, output (N, channels, h, w).
    """

    def __init__(
        self, channels: int = 64, n_blocks: int = 16, n_layers: int = 8, growth: int = 64, kernel_size: int = 3
    ) -> None:
        super().__init__()
        pad = (kernel_size - 1) // 2
        self.out_channels = channels
        self.SFENet1 = nn.Conv2d(3, channels, kernel_size, padding=pad)
        self.SFENet2 = nn.Conv2d(channels, channels, kernel_size, padding=pad)
        self.RDBs = nn.ModuleList([_RDB(channels, growth, n_layers, kernel_size) for _ in range(n_blocks)])
        self.GFF = nn.Sequential(
            nn.Conv2d(n_blocks * channels, channels, 1), nn.Conv2d(channels, channels, kernel_size, padding=pad)
        )
        self.receptive_radius = receptive_radius("rdn", {"n_blocks": n_blocks, "n_layers": n_layers})

    @staticmethod
    def parameter_count(
        channels: int = 64, n_blocks: int = 16, n_layers: int = 8, growth: int = 64, kernel_size: int = 3
    ) -> int:
        """Parameters of ``RDN(...)``, computed without building it; ``ValueError`` for out-of-range values."""
        check_size(channels=channels, n_blocks=n_blocks, n_layers=n_layers, growth=growth)
        check_kernel(kernel_size)
        k2 = kernel_size**2
        dense = sum((channels + c * growth) * growth * k2 + growth for c in range(n_layers))
        block = dense + (channels + n_layers * growth) * channels + channels  # + the 1x1 local fusion
        sfe = 3 * channels * k2 + channels + channels * channels * k2 + channels
        gff = n_blocks * channels * channels + channels + channels * channels * k2 + channels
        return sfe + n_blocks * block + gff

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shallow = self.SFENet1(x)
        x = self.SFENet2(shallow)
        block_outputs = []
        for block in self.RDBs:
            x = block(x)
            block_outputs.append(x)
        return self.GFF(torch.cat(block_outputs, dim=1)) + shallow
