"""The Meta-SR network: mean shift, a backbone, and the Meta-Upscale module.

Stateless two-phase API mirroring the two exported graphs:
``encode(lr) -> features``, ``upscale(features, scale) -> sr``, ``forward(lr, scale) = upscale(encode(lr))``.
Images are float32 RGB on the 0..255 scale, NCHW; outputs are unclamped.
"""

from __future__ import annotations

import torch
from torch import nn

from metasr.backbones import backbone_parameters, build_backbone
from metasr.config import ModelConfig
from metasr.runtime.projection import ProjectionPlan, project
from metasr.upscale import DEFAULT_TILE, meta_upscale
from metasr.weight_predictor import WeightPredictor

__all__ = ["MAX_PARAMETERS", "MeanShift", "MetaSR", "parameter_count"]

# 1 GiB of float32 weights: 12x the paper's Meta-EDSR (43 M), 48x Meta-RDN (22.4 M)
MAX_PARAMETERS = 2**28


def parameter_count(config: ModelConfig) -> int:
    """Parameters of ``MetaSR(config)``, computed from the config alone (nothing is built or allocated).

    ``ValueError`` for an unknown backbone, its params out of range, or more than :data:`MAX_PARAMETERS`.
    """
    backbone = backbone_parameters(config.backbone, config.backbone_params)
    c, k, hidden = config.features, config.kernel_size, config.hidden
    mean_shifts = 2 * (3 * 3 + 3)  # two 1x1 convolutions 3 -> 3 with bias
    predictor = 3 * hidden + hidden + hidden * c * k * k * 3 + c * k * k * 3  # Linear(3, hidden), Linear(hidden, ...)
    total = mean_shifts + backbone + predictor
    if total > MAX_PARAMETERS:
        raise ValueError(f"the model config describes {total:,} parameters; at most {MAX_PARAMETERS:,} are built")
    return total


def _use_kernel(impl: str, features: torch.Tensor, table: torch.Tensor) -> bool:
    if impl not in ("auto", "grouped", "triton"):
        raise ValueError(f"impl must be 'auto', 'grouped' or 'triton', got {impl!r}")
    if impl != "auto":
        return impl == "triton"
    from metasr.kernels.launch import triton_available

    needs_grad = torch.is_grad_enabled() and (features.requires_grad or table.requires_grad)
    return features.is_cuda and not needs_grad and triton_available()


class MeanShift(nn.Conv2d):
    """1x1 conv 3->3 initialised to ``x + sign * rgb_range * mean``.

    As in the official code its parameters are trainable and stored with the weights: loaded values win.
    """

    def __init__(self, rgb_range: float, rgb_mean: tuple[float, float, float], sign: int) -> None:
        super().__init__(3, 3, kernel_size=1)
        with torch.no_grad():
            self.weight.copy_(torch.eye(3).view(3, 3, 1, 1))
            self.bias.copy_(sign * rgb_range * torch.tensor(rgb_mean))


class MetaSR(nn.Module):
    """Meta-SR with any registered backbone. Parameter names follow the official Meta-RDN checkpoint
    (``sub_mean``, ``add_mean``, ``P2W.meta_block``) with the backbone's own under ``backbone.``."""

    def __init__(self, config: ModelConfig) -> None:
        parameter_count(config)  # ranges and size, before any module or tensor exists
        super().__init__()
        self.config = config
        self.sub_mean = MeanShift(config.rgb_range, config.rgb_mean, -1)
        self.add_mean = MeanShift(config.rgb_range, config.rgb_mean, +1)
        self.backbone = build_backbone(config.backbone, config.backbone_params)
        if self.backbone.out_channels != config.features:
            raise ValueError(
                f"config.features is {config.features} but the backbone emits {self.backbone.out_channels} channels"
            )
        self.P2W = WeightPredictor(config.features, config.hidden, config.kernel_size)

    def encode(self, lr: torch.Tensor) -> torch.Tensor:
        """(N, 3, h, w) float32 in [0, 255] -> features (N, C, h, w)."""
        return self.backbone(self.sub_mean(lr))

    def plan(self, h: int, w: int, scale: float) -> ProjectionPlan:
        """Projection plan for an h x w input, validated against this model's scale range."""
        return project(h, w, scale, max_scale=self.config.max_scale)

    def upscale(
        self,
        features: torch.Tensor,
        scale: float | ProjectionPlan,
        tile: int | None = DEFAULT_TILE,
        impl: str = "auto",
    ) -> torch.Tensor:
        """features (N, C, h, w) -> SR (N, 3, int(r*h), int(r*w)) float32, unclamped, 0..255 scale.

        ``scale`` is a float in (1, max_scale] or a precomputed plan; ``tile`` bounds memory (output tile
        side, None for one tile) without changing the result. ``impl``: "grouped" (the batched-GEMM path,
        any device, differentiable), "triton" (the GPU kernel, inference only) or "auto": the kernel for
        CUDA tensors when Triton is installed and no gradient is needed, else the grouped path.
        """
        h, w = features.shape[-2:]
        plan = scale if isinstance(scale, ProjectionPlan) else self.plan(h, w, scale)
        table = self.P2W.table(plan, features)
        if _use_kernel(impl, features, table):
            from metasr.kernels.torch_op import kernel_upscale

            return self.add_mean(kernel_upscale(features, table, plan))
        return self.add_mean(meta_upscale(features, table, plan, tile))

    def forward(self, lr: torch.Tensor, scale: float, tile: int | None = DEFAULT_TILE) -> torch.Tensor:
        """(N, 3, h, w) in [0, 255] -> (N, 3, int(r*h), int(r*w)), unclamped."""
        return self.upscale(self.encode(lr), scale, tile)
