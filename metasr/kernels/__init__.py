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

from metasr.lazy import lazy_getattr

_HOMES = {
    "KernelUnavailableError": "metasr.kernels.launch",
    "meta_upscale_triton": "metasr.kernels.launch",
    "meta_upscale_triton_filter": "metasr.kernels.launch",
    "triton_available": "metasr.kernels.launch",
    "PtxKernel": "metasr.kernels.ptx",
    "compile_ptx": "metasr.kernels.ptx",
    "PARAMS": "metasr.kernels.spec",
    "KernelConfig": "metasr.kernels.spec",
    "default_config": "metasr.kernels.spec",
}
__all__ = sorted(_HOMES)
__getattr__ = lazy_getattr(__name__, _HOMES)
