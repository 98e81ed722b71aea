"""The convolution path's ``Conv`` on ONNX Runtime's CPU NCHWc kernels: a variant of the ``MetaUpscale`` body
for that one consumer, built by the runtime (:mod:`metasr.runtime.ort_cpu`), never exported.

Why: ONNX Runtime runs a ``Conv`` whose filters are computed in the graph (ours: the weight predictor's) through
im2col and a GEMM; only filters that are initializers get its NCHWc layout transform, whose direct convolution
kernels are 1.2-2x faster here, most at the few output channels of the upscale (x1.5: 27 channels at stride 2,
4.9x -> 2.5x its floor; ``benchmarks/upscale_floor.py``). Its kernels take any filter tensor, so this variant
calls them on the computed filters itself: ``ReorderInput`` (features to blocks of B channels), the filters packed
to OIhw{B}i{B}o in the graph, ``com.microsoft.nchwc:Conv``, ``ReorderOutput`` (whose channel count is an
attribute: one branch per slot count K, 3*K*K channels).

With it (opset >= 18) the interleave is ``Col2Im`` instead of ``DepthToSpace`` (``metaupscale_conv._d2s``).
Taken when K_r = K_c = K is one of ``D2S_SLOTS`` (every integer scale up to 8 and r = p/2 on 2-pixel blocks,
untiled or tiled), the call has at least :data:`MIN_BLOCKS` member blocks and C is a multiple of B; otherwise
the standard ``Conv``. The block size B is the CPU's (16 with AVX-512, 8 with AVX2): a static attribute here,
probed by the runtime. The contract is unchanged: the output equals the standard body's to float32 rounding
(the summation order differs), which the runtime checks on its probe and ``tests/test_ort_cpu.py`` on every
slot count.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from metasr.export.metaupscale_nodes import all_of, const, float_out, mk
from metasr.export.onnx_proto import make_graph

if TYPE_CHECKING:
    import onnx

__all__ = ["BRANCH_INPUTS", "NCHWC_DOMAIN", "nchwc_branch", "nchwc_conv"]

NCHWC_DOMAIN = "com.microsoft.nchwc"
# below this many member blocks per call (tiles under a tight --upscale-budget-mb, small images) the variant's
# fixed cost (the reorders' calls, the filter packing) outweighs its faster kernel: measured variant / standard
# per call, 1 thread, tools of the review: 64 blocks 1.14-1.50, 256 1.07-1.38, 1024 0.94-1.21 (x3.5: K = 7),
# 4096 0.80-1.12, 16384 0.74-0.90
MIN_BLOCKS = 1024


def _nc(op: str, inputs: list[str], outputs: list[str], **attrs: object) -> onnx.NodeProto:
    return mk(op, inputs, outputs, domain=NCHWC_DOMAIN, **attrs)


def _conv(prefix: str, pads: list[int], strides: list[int]) -> onnx.GraphProto:
    node = _nc("Conv", [f"{prefix}x", f"{prefix}w"], [f"{prefix}y_{strides[0]}"], pads=pads, strides=strides)
    return make_graph([node], f"MetaUpscale_{prefix}conv{strides[0]}", [], [float_out(node.output[0])])


# the values of the enclosing body a branch reads (the runtime's probe feeds them to a branch alone)
BRANCH_INPUTS = ("features", "cv_w", "C", "nc_B", "nc_CB", "cv_Tr", "cv_Tc", "cv_unit")


def nchwc_branch(k: int, block: int) -> onnx.GraphProto:
    """Slot count k: (N, C, h, w) ``features`` and (3k^2, C, T, T) filters ``cv_w`` -> ``nc{k}_out``
    (N, 3k^2, nb_r, nb_c), as the standard ``Conv`` gives (3x3 with one pixel of padding where ``cv_unit``,
    else 4x4 at stride 2 with pads (1, 2)). Reads :data:`BRANCH_INPUTS`."""
    p = f"nc{k}_"
    out = 3 * k * k
    padded = -(-out // block) * block  # output channels rounded up to whole blocks (zero filters)
    n = [
        _nc("ReorderInput", ["features"], [p + "x"], channels_last=0),
        const(p + "pads", [0, 0, 0, 0, padded - out, 0, 0, 0]),
        mk("Pad", ["cv_w", p + "pads"], [p + "w0"], mode="constant"),
        const(p + "ob", [padded // block, block]),
        mk("Concat", [p + "ob", "nc_CB", "nc_B", "cv_Tr", "cv_Tc"], [p + "w6_shape"], axis=0),
        mk("Reshape", [p + "w0", p + "w6_shape"], [p + "w6"]),  # (O/B, B_o, C/B, B_i, T, T)
        mk("Transpose", [p + "w6"], [p + "w6t"], perm=[0, 2, 4, 5, 3, 1]),  # (O/B, C/B, T, T, B_i, B_o)
        const(p + "o", [padded]),
        mk("Concat", [p + "o", "C", "cv_Tr", "cv_Tc"], [p + "w_shape"], axis=0),
        mk("Reshape", [p + "w6t", p + "w_shape"], [p + "w"]),
        mk("If", ["cv_unit"], [p + "y"], then_branch=_conv(p, [1, 1, 1, 1], [1, 1]),
           else_branch=_conv(p, [1, 1, 2, 2], [2, 2])),
        _nc("ReorderOutput", [p + "y"], [p + "out"], channels=out, channels_last=0),
    ]
    return make_graph(n, f"MetaUpscale_nchwc{k}", [], [float_out(p + "out")])


def _chain(slots: tuple[int, ...], block: int) -> tuple[list[onnx.NodeProto], str]:
    """The branch of the slot count K_r = K_c (one of ``slots``, known to hold)."""
    k = slots[0]
    if len(slots) == 1:
        return list(nchwc_branch(k, block).node), f"nc{k}_out"
    inner, inner_out = _chain(slots[1:], block)
    rest = make_graph(inner, f"MetaUpscale_not_nchwc{k}", [], [float_out(inner_out)])
    out = f"nc_i{k}"
    return [mk("If", [f"cv_is{k}"], [out], then_branch=nchwc_branch(k, block), else_branch=rest)], out


def nchwc_conv(slots: tuple[int, ...], block: int, standard: onnx.NodeProto) -> list[onnx.NodeProto]:
    """``cv_y`` by the NCHWc kernels where they apply (``cv_d2s``: K_r = K_c in ``slots``; C a multiple of
    ``block``), else by ``standard`` (the body's ``If`` over the two ``Conv`` forms, its output ``st_y``)."""
    chain, chain_out = _chain(slots, block)
    return [
        const("nc_B", [block]),
        mk("Div", ["C", "nc_B"], ["nc_CB"]),
        mk("Mod", ["C", "nc_B"], ["nc_Cm"]),
        mk("Equal", ["nc_Cm", "c0"], ["nc_whole"]),
        mk("Mul", ["cv_row_nb1", "cv_col_nb1"], ["nc_blocks"]),
        const("nc_min_blocks", [MIN_BLOCKS]),
        mk("GreaterOrEqual", ["nc_blocks", "nc_min_blocks"], ["nc_big"]),
        *all_of(["cv_d2s", "nc_whole", "nc_big"], "nc_take1"),
        mk("Reshape", ["nc_take1", "scalar_shape"], ["nc_take"]),
        mk(
            "If",
            ["nc_take"],
            ["cv_y"],
            then_branch=make_graph(chain, "MetaUpscale_nchwc", [], [float_out(chain_out)]),
            else_branch=make_graph([standard], "MetaUpscale_standard_conv", [], [float_out("st_y")]),
        ),
    ]
