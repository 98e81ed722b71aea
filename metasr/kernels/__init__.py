"""The ``MetaUpscale`` GPU kernel: one Triton kernel for the PyTorch CUDA path and the TensorRT plugin.

* :func:`meta_upscale_triton` runs it on torch tensors (CUDA; CPU under ``TRITON_INTERPRET=1``);
  :func:`meta_upscale_triton_filter` the filter-stationary variant (behind a flag, see ``source_filter``);
* :func:`compile_ptx` compiles it to PTX for a compute capability with no GPU present (what the TensorRT
  ahead-of-time plugin stores in an engine);
* :mod:`metasr.kernels.spec` states its parameters and launch contract (no Triton needed to read it).

Triton is optional (``pip install 'metasr[triton]'``) and imported only when a kernel is launched or compiled.
The names below load their modules (and PyTorch) on first use: :mod:`metasr.kernels.spec` imports without them
(the ONNX op's input list is read from it by the torch-free runtime).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_HOMES = {
    "KernelUnavailableError": "launch",
    "meta_upscale_triton": "launch",
    "meta_upscale_triton_filter": "launch",
    "triton_available": "launch",
    "PtxKernel": "ptx",
    "compile_ptx": "ptx",
    "PARAMS": "spec",
    "KernelConfig": "spec",
    "default_config": "spec",
}
__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(import_module(f"metasr.kernels.{_HOMES[name]}"), name)
    raise AttributeError(f"module 'metasr.kernels' has no attribute {name!r}")
