"""Run a :class:`~metasr.kernels.ptx.PtxKernel` through the CUDA driver exactly as TensorRT's AOT plugin does.

The PTX is loaded with ``cuModuleLoadData`` (the driver JIT-compiles it for the GPU at hand) and launched
with ``cuLaunchKernel``: the 12 input pointers in op order, the seven int32 scalars, the output pointer, and
null for Triton's two hidden scratch pointers; grid ``(cdiv(W, block_w), cdiv(H, block_h), N)``. This checks
the AOT contract (parameter order, launch shape, no scratch) on a GPU without TensorRT. Needs
``cuda-bindings`` and torch CUDA tensors.
"""

from __future__ import annotations

import ctypes

import torch

from metasr.kernels.launch import check_inputs, triton_cdiv
from metasr.kernels.ptx import PtxKernel
from metasr.kernels.spec import launch_geometry

__all__ = ["launch_ptx"]


def _driver():
    try:
        from cuda.bindings import driver
    except ImportError:
        from cuda import cuda as driver  # cuda-python < 12.6
    return driver


def _check(result: tuple) -> object:
    err, *rest = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise RuntimeError(f"CUDA driver error {err!r}")
    return rest[0] if len(rest) == 1 else rest


_MODULES: dict[tuple[str, int], object] = {}


def _function(kernel: PtxKernel, device: int) -> object:
    drv = _driver()
    key = (kernel.ptx, device)
    if key not in _MODULES:
        _check(drv.cuInit(0))
        ctx = _check(drv.cuDevicePrimaryCtxRetain(_check(drv.cuDeviceGet(device))))
        _check(drv.cuCtxSetCurrent(ctx))
        image = ctypes.create_string_buffer(kernel.ptx.encode())  # NUL-terminated PTX text
        module = _check(drv.cuModuleLoadData(ctypes.addressof(image)))
        _MODULES[key] = _check(drv.cuModuleGetFunction(module, kernel.name.encode()))
    return _MODULES[key]


def launch_ptx(
    kernel: PtxKernel,
    features: torch.Tensor,
    weights: torch.Tensor,
    row_src: torch.Tensor,
    row_idx: torch.Tensor,
    col_src: torch.Tensor,
    col_idx: torch.Tensor,
) -> torch.Tensor:
    """Run ``kernel`` on CUDA tensors (the ``MetaUpscale`` inputs 0-5) on torch's current stream.

    Returns out (N, 3, H, W) in the features' dtype.
    """
    check_inputs(features, weights, row_src, row_idx, col_src, col_idx)
    want = torch.float32 if kernel.dtype == "fp32" else torch.float16
    if features.dtype != want or not features.is_cuda:
        got = f"{features.device} {features.dtype}"
        raise ValueError(f"the {kernel.dtype} kernel needs CUDA {want} features, got {got}")
    big_h, big_w = row_src.numel(), col_src.numel()
    pairs = (weights.shape[0], weights.shape[1])
    grid, scalars = launch_geometry(kernel.config, tuple(features.shape), big_h, big_w, pairs, triton_cdiv)
    out = features.new_empty((features.shape[0], 3, big_h, big_w))
    tensors = [t.contiguous() for t in (features, weights, row_src, row_idx, col_src, col_idx)]
    hints = [tensors[2]] * 6  # declared, never read: any valid pointer
    values = [ctypes.c_void_p(t.data_ptr()) for t in tensors + hints]
    values += [ctypes.c_int32(v) for v in scalars]
    values += [ctypes.c_void_p(out.data_ptr()), ctypes.c_void_p(0), ctypes.c_void_p(0)]  # out, null scratch
    params = (ctypes.c_void_p * len(values))(*[ctypes.addressof(v) for v in values])
    func = _function(kernel, features.device.index or 0)
    drv = _driver()
    stream = drv.CUstream(torch.cuda.current_stream(features.device).cuda_stream)
    args = ctypes.addressof(params)
    _check(drv.cuLaunchKernel(func, *grid, kernel.threads, 1, 1, kernel.shared_bytes, stream, args, 0))
    return out
