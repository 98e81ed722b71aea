"""The ``MetaUpscale`` body's convolution path (one group per axis: every integer scale, and r = p/2 on 2-pixel
blocks; the conditions and the shared values are :mod:`metasr.export.metaupscale_body`'s).

One ``Conv`` of the features F itself (no padded copy) with the K_r*K_c*3 filters the plan computes: 3x3 with one
pixel of padding for one-pixel blocks, 4x4 at stride 2 with pads (1, 2) for 2-pixel blocks (block b's window
starts at input row 2b - 1; ceil(n / 2) blocks for either parity of n) -> (N, 3*K_r*K_c, nb_r, nb_c), output
channels (o, kr, kc). Interleaved to (N, 3, nb_r*K_r, nb_c*K_c) by one ``DepthToSpace`` (CRD is exactly this
layout) when K_r = K_c in :data:`D2S_SLOTS` (its block size is an attribute: one ``If`` branch per K), else by two
transposes that each keep a contiguous inner block. When the output is that whole block (integer scales,
untiled) the ``DepthToSpace`` is the result; otherwise one ``Slice`` of rows and columns, or a ``Gather`` of whole
rows when they are not one run (valid hints allow any slot order).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from metasr.export.metaupscale_nchwc import nchwc_conv
from metasr.export.metaupscale_nodes import all_of, any_of, const, embedded, float_out, mk, one_run
from metasr.export.onnx_proto import make_graph

if TYPE_CHECKING:
    import onnx

__all__ = ["D2S_SLOTS", "conv_path"]


def _unit_conv() -> onnx.GraphProto:
    """One-pixel blocks: the window is the features with one zero pixel around, the convolution's own padding
    (no padded copy)."""
    node = mk("Conv", ["features", "cv_w"], ["uc_y"], pads=[1, 1, 1, 1])
    return make_graph([node], "MetaUpscale_unit_conv", [], [float_out("uc_y")])


def _pair_conv() -> onnx.GraphProto:
    """Two-pixel blocks: block b's 4 x 4 window starts at input row 2b - 1, so one 4 x 4 convolution at stride 2
    with one zero row before and two after gives ceil(n / 2) blocks for either parity of n (no padded copy)."""
    node = mk("Conv", ["features", "cv_w"], ["pc_y"], pads=[1, 1, 2, 2], strides=[2, 2])
    return make_graph([node], "MetaUpscale_pair_conv", [], [float_out("pc_y")])


# slot counts the interleave runs as one DepthToSpace (its block size is an attribute, so one branch each):
# integer scales (K = r), r = p/2 on 2-row blocks (K = p: x1.5 3, x2.5 5, x3.5 7); others take the transposes
D2S_SLOTS = (2, 3, 4, 5, 6, 7, 8)


def _transposes() -> onnx.GraphProto:  # its nodes end the interleave's last branch
    """The general interleave (any K_r, K_c): two transposes that each keep a contiguous inner block."""
    n = [
        mk("Concat", ["N", "c3", "K_row", "K_col", "cv_row_nb1", "cv_col_nb1"], ["tr_y6_shape"], axis=0),
        mk("Reshape", ["cv_y", "tr_y6_shape"], ["tr_y6"]),
        mk("Transpose", ["tr_y6"], ["tr_yt"], perm=[0, 1, 4, 2, 3, 5]),  # (N, 3, nb_r, K_r, K_c, nb_c)
        mk("Concat", ["cm1", "K_col", "cv_col_nb1"], ["tr_y3_shape"], axis=0),
        mk("Reshape", ["tr_yt", "tr_y3_shape"], ["tr_y3"]),  # the Reshape keeps the two transposes apart
        mk("Transpose", ["tr_y3"], ["tr_y3t"], perm=[0, 2, 1]),  # (N*3*nb_r*K_r, nb_c, K_c)
        mk("Concat", ["N", "c3", "cv_rows", "cv_cols"], ["tr_yr_shape"], axis=0),
        mk("Reshape", ["tr_y3t", "tr_yr_shape"], ["tr_yr"]),
    ]
    return make_graph(n, "MetaUpscale_transposes", [], [float_out("tr_yr")])


def _slot_conditions(slots: tuple[int, ...]) -> list[onnx.NodeProto]:
    """``cv_is{k}``: K_r = K_c = k, rank-0, for every k in ``slots``."""
    n = []
    for k in slots:
        n += [
            const(f"cv_k{k}", [k]),
            mk("Equal", ["K_row", f"cv_k{k}"], [f"cv_is{k}_n"]),
            mk("And", [f"cv_is{k}_n", "cv_square"], [f"cv_is{k}_1"]),
            mk("Reshape", [f"cv_is{k}_1", "scalar_shape"], [f"cv_is{k}"]),
        ]
    return n


def _d2s(k: int, prefix: str, col2im: bool) -> onnx.GraphProto:
    """``cv_y`` interleaved with slot count k by one ``DepthToSpace``, or (``col2im``, opset >= 18) one ``Col2Im``
    with k x k blocks at stride k: the same values (CRD is its channel order too), and in ONNX Runtime 5-9x
    faster at k = 2 (its ``DepthToSpace`` runs on one thread; ``docs/upscale-stage.md``)."""
    out = f"{prefix}{k}_y"
    if not col2im:
        node = mk("DepthToSpace", ["cv_y"], [out], blocksize=k, mode="CRD")
        return make_graph([node], f"MetaUpscale_{prefix}{k}", [], [float_out(out)])
    p = f"{prefix}{k}_"
    n = [
        const(p + "flat_shape", [0, 0, -1]),  # 0: that dimension as it is
        mk("Reshape", ["cv_y", p + "flat_shape"], [p + "flat"]),  # (N, 3k^2, nb_r*nb_c)
        mk("Concat", ["cv_rows", "cv_cols"], [p + "image"], axis=0),
        const(p + "block", [k, k]),
        mk("Col2Im", [p + "flat", p + "image", p + "block"], [out], strides=[k, k]),
    ]
    return make_graph(n, f"MetaUpscale_{prefix}{k}", [], [float_out(out)])


def _interleave(
    slots: tuple[int, ...], prefix: str, *, exhaustive: bool, col2im: bool = False
) -> tuple[list[onnx.NodeProto], str]:
    """``cv_y`` (N, 3*K_r*K_c, nb_r, nb_c), channels (o, kr, kc) -> (N, 3, nb_r*K_r, nb_c*K_c): a DepthToSpace
    (CRD: exactly this layout; or a ``Col2Im``) when K_r = K_c = slots[0], else the next branch; after the last,
    the transposes, or, ``exhaustive`` (the caller knows K_r = K_c is one of ``slots``), the last slot count's.
    Returns the nodes and their output's name."""
    if len(slots) == 1 and exhaustive:
        return list(_d2s(slots[0], prefix, col2im).node), f"{prefix}{slots[0]}_y"
    if not slots:
        return list(_transposes().node), "tr_yr"
    k = slots[0]
    inner, inner_out = _interleave(slots[1:], prefix, exhaustive=exhaustive, col2im=col2im)
    rest = make_graph(inner, f"MetaUpscale_not_{prefix}{k}", [], [float_out(inner_out)])
    out = f"cv_{prefix}_i{k}"
    return [mk("If", [f"cv_is{k}"], [out], then_branch=_d2s(k, prefix, col2im), else_branch=rest)], out


def _rows_slice(interleaved: str) -> onnx.GraphProto:
    """Output rows one run of the (block row, K_r) layout: one Slice of rows and columns."""
    n = [
        mk("Concat", ["cv_ridx0", "cidx0"], ["rs_start"], axis=0),
        mk("Concat", ["cv_rend", "cv_cend"], ["rs_end"], axis=0),
        const("rs_axes", [2, 3]),
        mk("Slice", [interleaved, "rs_start", "rs_end", "rs_axes"], ["rs_out"]),
    ]
    return make_graph(n, "MetaUpscale_rows_slice", [], [float_out("rs_out")])


def _rows_gather(interleaved: str) -> onnx.GraphProto:
    """Any output rows: a Gather of whole rows, then the Slice of the columns."""
    n = [
        mk("Gather", [interleaved, "cv_ridx"], ["rg_picked"], axis=2),  # (N, 3, H, nb_c*K_c)
        mk("Slice", ["rg_picked", "cidx0", "cv_cend", "c3"], ["rg_out"]),  # (N, 3, H, W)
    ]
    return make_graph(n, "MetaUpscale_rows_gather", [], [float_out("rg_out")])


def conv_path(nchwc_block: int | None = None, col2im: bool = False) -> onnx.GraphProto:
    """The path as exported, or with ``nchwc_block`` its ``Conv`` on ONNX Runtime's CPU NCHWc kernels where
    they apply (:mod:`metasr.export.metaupscale_nchwc`), and with ``col2im`` (opset >= 18) its interleave by
    ``Col2Im`` instead of ``DepthToSpace``; the rest is the same nodes."""
    n = []
    for axis, size in (("row", "h"), ("col", "w")):
        v = lambda name, axis=axis: f"cv_{axis}_{name}"  # noqa: E731
        n += [
            mk("Squeeze", [size], [v("n")]),
            mk("Add", [v("n"), f"{axis}_s"], [v("n_s")]),
            mk("Sub", [v("n_s"), "s1"], [v("n_s1")]),
            mk("Div", [v("n_s1"), f"{axis}_s"], [v("nb")]),  # scalar: blocks along the axis, ceil(n / s)
            mk("Unsqueeze", [v("nb"), "c0"], [v("nb1")]),
        ]
    n += embedded("cv_")
    n += [
        # (1, K_r, 1, K_c, T_r, T_c, (c, o)) -> (3*K_r*K_c, C, T_r, T_c), output channels (o, kr, kc)
        mk("Unsqueeze", ["row_T", "c0"], ["cv_Tr"]),
        mk("Unsqueeze", ["col_T", "c0"], ["cv_Tc"]),
        mk("Concat", ["K_row", "K_col", "cv_Tr", "cv_Tc", "C", "c3"], ["cv_w6s"], axis=0),
        mk("Reshape", ["cv_emb", "cv_w6s"], ["cv_w6"]),
        mk("Transpose", ["cv_w6"], ["cv_w6t"], perm=[5, 0, 1, 4, 2, 3]),  # (o, kr, kc, c, ty, tx)
        mk("Concat", ["cm1", "C", "cv_Tr", "cv_Tc"], ["cv_w_shape"], axis=0),
        mk("Reshape", ["cv_w6t", "cv_w_shape"], ["cv_w"]),
        mk("Equal", ["row_s", "s1"], ["cv_unit"]),
    ]

    def standard(out: str) -> onnx.NodeProto:  # the convolution over whole blocks: (N, 3*K_r*K_c, nb_r, nb_c)
        return mk("If", ["cv_unit"], [out], then_branch=_unit_conv(), else_branch=_pair_conv())

    mid = [
        mk("Mul", ["K_row", "cv_row_nb1"], ["cv_rows"]),
        mk("Mul", ["cv_col_nb1", "K_col"], ["cv_cols"]),
        mk("Equal", ["K_row", "K_col"], ["cv_square"]),
        *_slot_conditions(D2S_SLOTS),
    ]
    rows = [
        mk("Mul", ["row_blk", "K_row"], ["cv_bk"]),  # (H,) row in the (block row, K_r) layout
        mk("Add", ["cv_bk", "row_k"], ["cv_ridx"]),
        *one_run("cv_ridx", "row_pick", "H_1", "cv_ridx0", "cv_rrun_1"),
        mk("Reshape", ["cv_rrun_1", "scalar_shape"], ["cv_rrun"]),
        mk("Add", ["cv_ridx0", "H_1"], ["cv_rend"]),
        mk("Add", ["cidx0", "W_1"], ["cv_cend"]),
    ]
    # the output is the whole interleaved block (integer scales, untiled): the DepthToSpace is the result
    d2s = any_of([f"cv_is{k}_1" for k in D2S_SLOTS], "cv_d2s")  # K_r = K_c, one of the DepthToSpace branches
    if nchwc_block is None:
        n += [standard("cv_y"), *mid, *rows, *d2s]
    else:
        n += [*mid, *d2s, *nchwc_conv(D2S_SLOTS, nchwc_block, standard("st_y")), *rows]
    n += [
        mk("Add", ["cv_ridx0", "cidx0"], ["cv_start"]),
        mk("Equal", ["cv_start", "c0"], ["cv_at0"]),  # both are >= 0
        mk("Equal", ["H_1", "cv_rows"], ["cv_all_rows"]),
        mk("Equal", ["W_1", "cv_cols"], ["cv_all_cols"]),
        *all_of(["cv_d2s", "cv_at0", "cv_all_rows", "cv_all_cols", "cv_rrun_1"], "cv_d"),
        mk("Reshape", ["cv_d", "scalar_shape"], ["cv_direct"]),
    ]
    direct, direct_out = _interleave(D2S_SLOTS, "direct", exhaustive=True, col2im=col2im)
    general, general_out = _interleave(D2S_SLOTS, "d2s", exhaustive=False, col2im=col2im)
    pick = {"then_branch": _rows_slice(general_out), "else_branch": _rows_gather(general_out)}
    general.append(mk("If", ["cv_rrun"], ["cv_picked"], **pick))  # (N, 3, H, W)
    whole = {
        "then_branch": make_graph(direct, "MetaUpscale_direct", [], [float_out(direct_out)]),
        "else_branch": make_graph(general, "MetaUpscale_general", [], [float_out("cv_picked")]),
    }
    n.append(mk("If", ["cv_direct"], ["cv_out"], **whole))
    return make_graph(n, "MetaUpscale_conv", [], [float_out("cv_out")])
