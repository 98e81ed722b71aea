"""The ``MetaUpscale`` GPU kernel: one Triton kernel for the PyTorch CUDA path and the TensorRT plugin.

* :func:`meta_upscale_triton` runs it on torch tensors (CUDA; CPU under ``TRITON_INTERPRET=1``);
  :func:`meta_upscale_triton_filter` the filter-stationary variant (behind a flag, see ``source_filter``);
* :func:`compile_ptx` compiles it to PTX for a compute capability with no GPU present (what the TensorRT
  ahead-of-time plugin stores in an engine);
* :mod:`metasr.kernels.spec` states its parameters and launch contract (no Triton needed to read it).

Triton is optional (``pip install 'metasr[triton]'``) and imported only when a kernel is launched or compiled.
"""

from __future__ import annotations

from metasr.kernels.launch import (
    KernelUnavailableError,
    meta_upscale_triton,
    meta_upscale_triton_filter,
    triton_available,
)
from metasr.kernels.ptx import PtxKernel, compile_ptx
from metasr.kernels.spec import PARAMS, KernelConfig, default_config

__all__ = [
    "PARAMS",
    "KernelConfig",
    "KernelUnavailableError",
    "PtxKernel",
    "compile_ptx",
    "default_config",
    "meta_upscale_triton",
    "meta_upscale_triton_filter",
    "triton_available",
]
