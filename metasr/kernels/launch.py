"""Launching the ``MetaUpscale`` Triton kernel on torch tensors (CUDA, or CPU under ``TRITON_INTERPRET=1``)."""

from __future__ import annotations

import functools
import os

import torch

from metasr.kernels.spec import KernelConfig, default_config, filter_launch_geometry, launch_geometry

__all__ = [
    "KernelUnavailableError",
    "check_inputs",
    "meta_upscale_triton",
    "meta_upscale_triton_filter",
    "triton_available",
]

_FLOAT = (torch.float32, torch.float16)


class KernelUnavailableError(RuntimeError):
    """The kernel cannot run here: Triton missing, or CPU tensors without ``TRITON_INTERPRET=1``."""


def triton_available() -> bool:
    """True when Triton imports (the optional ``metasr[triton]`` extra)."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


@functools.cache
def _kernel(interpret: bool, layout: str = "pixel") -> object:
    try:
        from metasr.kernels import source, source_filter
    except ImportError as e:
        msg = f"the MetaUpscale kernel needs Triton (pip install 'metasr[triton]'): {e}"
        raise KernelUnavailableError(msg) from None
    module = source_filter if layout == "filter" else source
    return module.interpreted() if interpret else module.jit()


def check_inputs(
    features: torch.Tensor,
    weights: torch.Tensor,
    row_src: torch.Tensor,
    row_idx: torch.Tensor,
    col_src: torch.Tensor,
    col_idx: torch.Tensor,
) -> None:
    """Raise ``ValueError`` unless the tensors meet the ``MetaUpscale`` contract (shapes, dtypes, index ranges)."""
    if features.dim() != 4 or features.dtype not in _FLOAT:
        raise ValueError(f"features must be float32/float16 (N, C, h, w), got {features.dtype} {tuple(features.shape)}")
    n, c, h, w = features.shape
    if weights.dtype != features.dtype or weights.dim() != 3 or weights.shape[2] != 27 * c:
        raise ValueError(
            f"weights must be {features.dtype} (P_r, P_c, {27 * c}), got {weights.dtype} {tuple(weights.shape)}"
        )
    for name, t, hi in (
        ("row_src", row_src, h),
        ("row_idx", row_idx, weights.shape[0]),
        ("col_src", col_src, w),
        ("col_idx", col_idx, weights.shape[1]),
    ):
        if t.dtype != torch.int64 or t.dim() != 1:
            raise ValueError(f"{name} must be int64 (n,), got {t.dtype} {tuple(t.shape)}")
        if t.device != features.device:
            raise ValueError(f"{name} is on {t.device}, features on {features.device}")
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= hi):
            raise ValueError(f"{name} must lie in [0, {hi}), got [{int(t.min())}, {int(t.max())}]")
    if row_src.shape != row_idx.shape or col_src.shape != col_idx.shape:
        raise ValueError("row_src/row_idx and col_src/col_idx must have equal lengths")
    if max(features.numel(), weights.numel(), n * 3 * row_src.numel() * col_src.numel()) >= 2**62:
        raise ValueError("tensors too large for the kernel's 64-bit indexing")


def meta_upscale_triton(
    features: torch.Tensor,
    weights: torch.Tensor,
    row_src: torch.Tensor,
    row_idx: torch.Tensor,
    col_src: torch.Tensor,
    col_idx: torch.Tensor,
    config: KernelConfig | None = None,
) -> torch.Tensor:
    """``MetaUpscale`` inputs 0-5 -> out (N, 3, H, W) in the features' dtype (float32 accumulation).

    ``features`` (N, C, h, w) float32/float16; ``weights`` (P_r, P_c, 9*C*3) ordered (ky, kx, c, out);
    int64 ``row_src``/``row_idx`` (H,) and ``col_src``/``col_idx`` (W,) (see :mod:`metasr.kernels.spec`).
    CUDA tensors run the compiled kernel; CPU tensors run it in Triton's interpreter when the environment
    sets ``TRITON_INTERPRET=1`` (slow: meant for tests).
    """
    check_inputs(features, weights, row_src, row_idx, col_src, col_idx)
    return _launch(features, weights, row_src, row_idx, col_src, col_idx, config)


def _check_hints(features: torch.Tensor, hints: tuple[torch.Tensor, ...], big_h: int, big_w: int) -> None:
    names = ("row_groups", "row_slots", "row_pick", "col_groups", "col_slots", "col_pick")
    ranks = (3, 2, 1, 3, 2, 1)
    for name, t, rank in zip(names, hints, ranks, strict=True):
        n = big_h if name.startswith("row") else big_w
        if t.dtype != torch.int64 or t.dim() != rank or t.device != features.device:
            got = f"{t.dtype} {tuple(t.shape)} on {t.device}"
            raise ValueError(f"{name} must be int64 of rank {rank} on {features.device}, got {got}")
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= (n if name.endswith(("groups", "slots")) else 2**62)):
            raise ValueError(f"{name} must lie in [0, {n})")
    if hints[0].shape[0] != hints[1].shape[0] or hints[3].shape[0] != hints[4].shape[0]:
        raise ValueError("groups and slots must have one row per group")
    if hints[2].numel() != big_h or hints[5].numel() != big_w:
        raise ValueError("row_pick / col_pick must have one entry per output row / column")


def meta_upscale_triton_filter(
    features: torch.Tensor,
    weights: torch.Tensor,
    row_src: torch.Tensor,
    row_idx: torch.Tensor,
    col_src: torch.Tensor,
    col_idx: torch.Tensor,
    *hints: torch.Tensor,
    config: KernelConfig | None = None,
) -> torch.Tensor:
    """``MetaUpscale`` inputs 0-11 -> out (N, 3, H, W) with the filter-stationary kernel (behind a flag; see
    :mod:`metasr.kernels.source_filter`). ``hints``: row_groups, row_slots, row_pick, col_groups, col_slots,
    col_pick (valid hints: ``metasr.runtime.feeds.check_hints``)."""
    check_inputs(features, weights, row_src, row_idx, col_src, col_idx)
    big_h, big_w = row_src.numel(), col_src.numel()
    _check_hints(features, hints, big_h, big_w)
    interpret = _interpreting(features)
    cfg = config or default_config("fp16" if features.dtype == torch.float16 else "fp32", "filter")
    if cfg.layout != "filter":
        raise ValueError(f"the filter-stationary kernel needs a layout='filter' config, got {cfg.layout!r}")
    out = features.new_zeros((features.shape[0], 3, big_h, big_w))
    if out.numel() == 0:
        return out
    (g_r, l_r, s_r), (g_c, l_c, s_c) = hints[0].shape, hints[3].shape
    shapes = ((g_r, l_r, hints[1].shape[1], s_r), (g_c, l_c, hints[4].shape[1], s_c))
    pairs = (weights.shape[0], weights.shape[1])
    grid, scalars = filter_launch_geometry(cfg, tuple(features.shape), big_h, big_w, pairs, shapes, triton_cdiv)
    tensors = [t.contiguous() for t in (features, weights, row_src, row_idx, col_src, col_idx, *hints)]
    _kernel(interpret, "filter")[grid](
        *tensors, *scalars, out,
        BLOCK_Y=cfg.block_h, BLOCK_X=cfg.block_w, BLOCK_C=cfg.block_c, WIN=cfg.window,
        IEEE=features.dtype == torch.float32, num_warps=cfg.num_warps,
    )  # fmt: skip
    return out


def _interpreting(features: torch.Tensor) -> bool:
    interpret = features.device.type == "cpu"
    if interpret and os.environ.get("TRITON_INTERPRET", "0") not in ("1", "true", "on"):
        raise KernelUnavailableError("CPU tensors run the Triton kernel only under TRITON_INTERPRET=1")
    if not interpret and features.device.type != "cuda":
        raise KernelUnavailableError(f"the Triton kernel runs on CUDA (or CPU interpreted), not {features.device}")
    return interpret


def _launch(
    features: torch.Tensor,
    weights: torch.Tensor,
    row_src: torch.Tensor,
    row_idx: torch.Tensor,
    col_src: torch.Tensor,
    col_idx: torch.Tensor,
    config: KernelConfig | None,
) -> torch.Tensor:
    """Launch without the host-side contract checks (what the TensorRT plugin does): shapes as the contract."""
    interpret = _interpreting(features)
    cfg = config or default_config("fp16" if features.dtype == torch.float16 else "fp32")
    n, c, h, w = features.shape
    big_h, big_w = row_src.numel(), col_src.numel()
    out = features.new_empty((n, 3, big_h, big_w))
    if out.numel() == 0:
        return out
    features, weights = features.contiguous(), weights.contiguous()
    unused = row_src  # the grouping hints are never read; any valid pointer fills their slots
    pairs = (weights.shape[0], weights.shape[1])
    grid, scalars = launch_geometry(cfg, (n, c, h, w), big_h, big_w, pairs, triton_cdiv)
    _kernel(interpret)[grid](
        features, weights, row_src.contiguous(), row_idx.contiguous(), col_src.contiguous(), col_idx.contiguous(),
        unused, unused, unused, unused, unused, unused,
        *scalars,
        out,
        BLOCK_H=cfg.block_h, BLOCK_W=cfg.block_w, BLOCK_C=cfg.block_c, num_warps=cfg.num_warps, enable_fp_fusion=True,
    )  # fmt: skip
    return out


def triton_cdiv(a: int, b: int) -> int:
    return -(-a // b)
