"""The ``metasr::MetaUpscale`` TensorRT plugin: a Quickly Deployable Plugin (``tensorrt.plugin``, TRT >= 10.9).

Importing this module registers the plugin with TensorRT's plugin registry; it needs TensorRT, and Triton
at engine build time. The ONNX parser maps the exported ``MetaUpscale`` node (``plugin_namespace="metasr"``,
``plugin_version="1"``, ``aot=1``) to it, in preference to the node's ONNX function body (TRT >= 10.7).

* ``register``: the output (N, 3, H, W) follows from the *shapes* of ``features`` (N), ``row_src`` (H) and
  ``col_src`` (W); its dtype is the features'. The plugin declares no attributes.
* ``autotune``: features, weights and output FP32 together or FP16 together; the ten index inputs INT64.
* ``aot_impl`` (what ``aot=1`` selects): the Triton kernel compiled to PTX for the building GPU's compute
  capability (:func:`metasr.kernels.compile_ptx`); the engine stores it and runs with no Python
  (``trtexec --loadEngine``). Kernel arguments as TensorRT passes them: the 12 input pointers, seven
  ``SymInt32`` scalars (C, h, w, H, W, P_r, P_c from the input shapes), the output pointer.
* ``impl``: a JIT fallback (Python and Triton at run time) for a node with ``aot=0``.
* ``METASR_KERNEL_LAYOUT=filter`` at engine build time stores the filter-stationary kernel instead (behind this
  flag until measured on a GPU: ``metasr.kernels.source_filter``; it reads the grouping hints 6-11 and takes 15
  scalars, the hints' dimensions included). The AOT path only; ``impl`` runs the per-pixel kernel.

This follows NVIDIA's ``samples/python/quickly_deployable_plugins`` (``qdp_defs.py``); the signatures are
checked against the ``tensorrt.plugin`` sources of TensorRT 10.9 and 11.4 in the tests.
"""

# no `from __future__ import annotations`: tensorrt.plugin validates the signatures' annotations as classes
import os
from typing import Union

import tensorrt as trt
import tensorrt.plugin as trtp

from metasr.kernels.spec import INPUT_PARAMS, LAYOUTS, default_config, filter_launch_geometry, launch_geometry

__all__ = ["PLUGIN_ID", "kernel_for"]

PLUGIN_ID = "metasr::MetaUpscale"
_TYPES = "FP32|FP16, FP32|FP16, " + ", ".join(["INT64"] * (len(INPUT_PARAMS) - 2)) + ", FP32|FP16"


@trtp.register(PLUGIN_ID)
def meta_upscale_desc(
    features: trtp.TensorDesc,
    weights: trtp.TensorDesc,
    row_src: trtp.TensorDesc,
    row_idx: trtp.TensorDesc,
    col_src: trtp.TensorDesc,
    col_idx: trtp.TensorDesc,
    row_groups: trtp.TensorDesc,
    row_slots: trtp.TensorDesc,
    row_pick: trtp.TensorDesc,
    col_groups: trtp.TensorDesc,
    col_slots: trtp.TensorDesc,
    col_pick: trtp.TensorDesc,
) -> trtp.TensorDesc:
    """out (N, 3, H, W): N from features, H from row_src, W from col_src."""
    shape = (features.shape_expr[0], 3, row_src.shape_expr[0], col_src.shape_expr[0])
    return trtp.from_shape_expr(shape, dtype=features.dtype)


@trtp.autotune(PLUGIN_ID)
def meta_upscale_autotune(
    features: trtp.TensorDesc,
    weights: trtp.TensorDesc,
    row_src: trtp.TensorDesc,
    row_idx: trtp.TensorDesc,
    col_src: trtp.TensorDesc,
    col_idx: trtp.TensorDesc,
    row_groups: trtp.TensorDesc,
    row_slots: trtp.TensorDesc,
    row_pick: trtp.TensorDesc,
    col_groups: trtp.TensorDesc,
    col_slots: trtp.TensorDesc,
    col_pick: trtp.TensorDesc,
    outputs: tuple[trtp.TensorDesc],
) -> list[trtp.AutoTuneCombination]:
    return [trtp.AutoTuneCombination(_TYPES)]


def _dtype(desc: trtp.TensorDesc) -> str:
    return "fp16" if desc.dtype == trt.float16 else "fp32"


def kernel_layout() -> str:
    """The kernel layout the AOT plugin stores: ``METASR_KERNEL_LAYOUT`` ("pixel", the default, or "filter")."""
    layout = os.environ.get("METASR_KERNEL_LAYOUT", "pixel")
    if layout not in LAYOUTS:
        raise ValueError(f"METASR_KERNEL_LAYOUT must be one of {LAYOUTS}, got {layout!r}")
    return layout


def kernel_for(dtype: str):
    """The compiled kernel (:class:`metasr.kernels.PtxKernel`) for this process's CUDA device and ``dtype``."""
    from metasr.runtime.trt_env import require_tensorrt

    from metasr.kernels import compile_ptx

    return compile_ptx(require_tensorrt("the MetaUpscale plugin").cc, dtype, default_config(dtype, kernel_layout()))


@trtp.aot_impl(PLUGIN_ID)
def meta_upscale_aot_impl(
    features: trtp.TensorDesc,
    weights: trtp.TensorDesc,
    row_src: trtp.TensorDesc,
    row_idx: trtp.TensorDesc,
    col_src: trtp.TensorDesc,
    col_idx: trtp.TensorDesc,
    row_groups: trtp.TensorDesc,
    row_slots: trtp.TensorDesc,
    row_pick: trtp.TensorDesc,
    col_groups: trtp.TensorDesc,
    col_slots: trtp.TensorDesc,
    col_pick: trtp.TensorDesc,
    outputs: tuple[trtp.TensorDesc],
    tactic: int,
) -> tuple[Union[str, bytes], Union[str, bytes], trtp.KernelLaunchParams, trtp.SymExprs]:  # noqa: UP007
    k = kernel_for(_dtype(features))
    f = features.shape_expr
    geometry = (k.config, (f[0], f[1], f[2], f[3]), row_src.shape_expr[0], col_src.shape_expr[0],
                (weights.shape_expr[0], weights.shape_expr[1]))  # fmt: skip
    if k.config.layout == "filter":
        rg, cg = row_groups.shape_expr, col_groups.shape_expr
        hints = ((rg[0], rg[1], row_slots.shape_expr[1], rg[2]), (cg[0], cg[1], col_slots.shape_expr[1], cg[2]))
        grid, scalars = filter_launch_geometry(*geometry, hints, trtp.cdiv)
    else:
        grid, scalars = launch_geometry(*geometry, trtp.cdiv)
    launch = trtp.KernelLaunchParams()
    launch.grid_x, launch.grid_y, launch.grid_z = grid
    launch.block_x = k.threads  # exactly num_warps * 32: the PTX carries .reqntid
    launch.shared_mem = k.shared_bytes
    # the int32 scalars after the 12 input pointers (C, h, w, H, W, P_r, P_c[, the hints' dims]), then the output
    return k.name, k.ptx, launch, trtp.SymIntExprs.from_tuple([trtp.SymInt32(e) for e in scalars])


@trtp.impl(PLUGIN_ID)
def meta_upscale_impl(
    features: trtp.Tensor,
    weights: trtp.Tensor,
    row_src: trtp.Tensor,
    row_idx: trtp.Tensor,
    col_src: trtp.Tensor,
    col_idx: trtp.Tensor,
    row_groups: trtp.Tensor,
    row_slots: trtp.Tensor,
    row_pick: trtp.Tensor,
    col_groups: trtp.Tensor,
    col_slots: trtp.Tensor,
    col_pick: trtp.Tensor,
    outputs: tuple[trtp.Tensor],
    stream: int,
) -> None:
    """JIT fallback: the same Triton kernel launched from Python on TensorRT's stream (needs torch)."""
    import torch

    from metasr.kernels import meta_upscale_triton

    with torch.cuda.stream(torch.cuda.ExternalStream(stream)):
        ts = [torch.as_tensor(t, device="cuda") for t in (features, weights, row_src, row_idx, col_src, col_idx)]
        torch.as_tensor(outputs[0], device="cuda").copy_(meta_upscale_triton(*ts))
