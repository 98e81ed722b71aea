"""Ranges of the backbones' size parameters, checked before any module is built (a checkpoint's config is
untrusted input: ``channels`` 1e12 or ``n_blocks`` 1e7 must be refused, not allocated)."""

from __future__ import annotations

from metasr.limits import check_int

__all__ = ["SIZE_RANGES", "check_kernel", "check_size"]

# the paper's largest backbones: Meta-EDSR 256 channels x 32 blocks; Meta-RDN 16 blocks x 8 layers, growth 64
SIZE_RANGES = {"channels": (1, 1024), "n_blocks": (1, 256), "n_layers": (1, 64), "growth": (1, 1024)}


def check_size(**sizes: int) -> None:
    """``ValueError`` unless every named size is an integer in its :data:`SIZE_RANGES` range."""
    for name, value in sizes.items():
        check_int(value, f"backbone {name}", *SIZE_RANGES[name])


def check_kernel(kernel_size: int) -> None:
    """``ValueError`` unless ``kernel_size`` is an odd integer in 1..7."""
    check_int(kernel_size, "backbone kernel_size", 1, 7)
    if kernel_size % 2 == 0:
        raise ValueError(f"backbone kernel_size must be odd, got {kernel_size}")
