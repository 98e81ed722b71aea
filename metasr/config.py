"""Model configuration: a frozen, validated dataclass and the named presets."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

from metasr.jsonio import loads_bounded
from metasr.limits import check_int
from metasr.runtime.projection import DEFAULT_MAX_SCALE

__all__ = ["PRESETS", "ModelConfig", "preset", "receptive_radius"]

MAX_CONFIG_CHARS = 64 * 1024  # a config is ~300 characters
MAX_CONFIG_DEPTH = 4  # {backbone_params: {...}, rgb_mean: [...]} is 2 deep
MAX_FEATURES = 1024  # C: the paper's largest backbone (Meta-EDSR) has 256
MAX_HIDDEN = 4096  # the weight predictor's hidden width (256 in the paper)

# DIV2K RGB mean used by EDSR/RDN/Meta-SR to initialise the mean-shift convolutions.
DIV2K_RGB_MEAN = (0.4488, 0.4371, 0.4040)


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a Meta-SR network (stored inside every checkpoint).

    ``backbone`` names a registered backbone, ``backbone_params`` its keyword arguments; ``features`` is the
    backbone's output channel count C (the weight predictor emits C*k*k*3 values per offset pair).
    """

    backbone: str
    backbone_params: dict[str, Any] = field(default_factory=dict)
    features: int = 64
    hidden: int = 256
    kernel_size: int = 3
    rgb_range: float = 255.0
    rgb_mean: tuple[float, float, float] = DIV2K_RGB_MEAN
    max_scale: float = DEFAULT_MAX_SCALE
    name: str = ""

    def __post_init__(self) -> None:
        _check_types(self)
        check_int(self.features, "model config features", 1, MAX_FEATURES)
        check_int(self.hidden, "model config hidden", 1, MAX_HIDDEN)
        if self.kernel_size != 3:
            raise ValueError(f"only 3x3 Meta-Upscale kernels are supported, got {self.kernel_size}")
        if not 1.0 < self.max_scale <= 16.0:
            raise ValueError(f"max_scale must be in (1, 16], got {self.max_scale}")
        object.__setattr__(self, "rgb_mean", tuple(float(v) for v in self.rgb_mean))
        object.__setattr__(self, "backbone_params", dict(self.backbone_params))

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ModelConfig:
        """The config written by :meth:`to_json`; text over 64 KiB or nested deeper than 4 levels is refused
        before it is parsed (a checkpoint's metadata is untrusted input)."""
        data = loads_bounded(text, "the model config", max_chars=MAX_CONFIG_CHARS, max_depth=MAX_CONFIG_DEPTH)
        if not isinstance(data, dict):
            raise ValueError(f"a model config must be a JSON object, got {type(data).__name__}")
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown model config keys: {sorted(unknown)}")
        return cls(**data)


def _check_types(c: ModelConfig) -> None:
    """``ValueError`` (not a TypeError deep inside a constructor) for fields of the wrong type."""

    def number(v: object) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    checks = [
        ("backbone", isinstance(c.backbone, str), "a string"),
        ("backbone_params", isinstance(c.backbone_params, dict), "an object"),
        ("features", isinstance(c.features, int) and not isinstance(c.features, bool), "an integer"),
        ("hidden", isinstance(c.hidden, int) and not isinstance(c.hidden, bool), "an integer"),
        ("kernel_size", isinstance(c.kernel_size, int) and not isinstance(c.kernel_size, bool), "an integer"),
        ("rgb_range", number(c.rgb_range) and c.rgb_range > 0, "a positive number"),
        (
            "rgb_mean",
            isinstance(c.rgb_mean, (list, tuple)) and len(c.rgb_mean) == 3 and all(map(number, c.rgb_mean)),
            "3 numbers",
        ),
        ("max_scale", number(c.max_scale), "a number"),
        ("name", isinstance(c.name, str), "a string"),
    ]
    for name, ok, what in checks:
        if not ok:
            raise ValueError(f"model config {name} must be {what}, got {getattr(c, name)!r}")


PRESETS: dict[str, ModelConfig] = {
    # Meta-RDN as released by the authors (configuration B): 22.4 M parameters.
    "rdn": ModelConfig("rdn", {"channels": 64, "n_blocks": 16, "n_layers": 8, "growth": 64}, 64, name="rdn"),
    # Meta-EDSR of the paper (EDSR backbone, 256 features, 32 blocks, residual scaling 0.1).
    "edsr": ModelConfig("edsr", {"channels": 256, "n_blocks": 32, "res_scale": 0.1}, 256, name="edsr"),
    # EDSR-baseline backbone (16 blocks, 64 features).
    "edsr-baseline": ModelConfig("edsr", {"channels": 64, "n_blocks": 16, "res_scale": 1.0}, 64, name="edsr-baseline"),
    # Small model for CPUs and edge devices; the bundled default model uses it.
    "small": ModelConfig("edsr", {"channels": 32, "n_blocks": 8, "res_scale": 1.0}, 32, name="small"),
}


# Per backbone, the radius of the region of input pixels one feature pixel depends on: one pixel per 3x3
# convolution on the longest path (keyword defaults as in the backbones' constructors; a test ties them).
# Torch-free, so the runtime can check an artifact's recorded radius (its feature tiles' overlap) against it.
_RECEPTIVE = {
    "edsr": lambda n_blocks=16, **_: 1 + 2 * n_blocks + 1,  # head, 2 per residual block, body's last conv
    "rdn": lambda n_blocks=16, n_layers=8, **_: 1 + 1 + n_blocks * n_layers + 1,  # SFENet1/2, dense convs, GFF
}


def receptive_radius(backbone: str, params: dict[str, Any]) -> int:
    """The receptive radius (pixels on each side) of a backbone with these constructor ``params``.

    >>> receptive_radius("edsr", {"channels": 32, "n_blocks": 8}), receptive_radius("rdn", {})
    (18, 131)
    """
    if backbone not in _RECEPTIVE:
        raise ValueError(f"backbone {backbone!r} has no known receptive radius (known: {sorted(_RECEPTIVE)})")
    return int(_RECEPTIVE[backbone](**params))


def preset(name: str) -> ModelConfig:
    """The named preset's config; unknown names list the known ones."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; known: {sorted(PRESETS)}") from None
