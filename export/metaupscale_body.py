"""The standard-op body of ``MetaUpscale`` (the ONNX model-local function; contract in ``metaupscale_op``).

Every output pixel (i, j) is its source pixel's zero-padded 3x3 neighbourhood contracted with the (9C x 3) filter
of its offset pair. The grouping hints (:mod:`metasr.runtime.feeds`) put input rows into G_r groups of L_r
members sharing K_r row-offset slots (columns alike), so all pixels of a (row group, column group) pair use the
filters of the same K_r x K_c slot pairs. Shapes, with F the features (N, C, h, w):

shared      Fp = F zero-padded by one pixel (N, C, h+2, w+2); members' input rows ``rin`` (G_r, L_r) and
            columns ``cin`` (G_c, L_c), slot offsets (G_r, K_r), (G_c, K_c), all read through inputs 2-5;
            filters of every slot pair of every group pair ``wrc`` (G_r, K_r, G_c, K_c, 27C); each output
            row's (group, member, slot) (H,) x 3 decoded from ``row_pick``, columns alike.
conv path   (one group per axis and the output columns a contiguous run of the slot-major layout: every
            integer scale, r = p/2) one Conv of F itself (no padded copy) with the K_r*K_c*3 filters: 3x3 with
            one pixel of padding for one-pixel blocks, 4x4 at stride 2 (the 2x2 block and its context) for
            2-pixel blocks -> (N, 3*K_r*K_c, nb_r, nb_c), interleaved to
            (N, 3, nb_r*K_r, nb_c*K_c) by one DepthToSpace when K_r = K_c (CRD is exactly this layout; its
            block size is an attribute, so one branch per K in ``D2S_SLOTS``) or by two transposes, then one
            Slice of the output rows and columns (a Gather of whole rows when they are not one run). This is
            the sub-pixel convolution: no patch matrix in memory, the convolution's own (cache-blocked) im2col.
grouped     the members' neighbourhoods gathered once from channels-last Fp into the patch matrix
path        (N, G_r, G_c, L_r*L_c, 9C), one batched MatMul with the filters (G_r, G_c, 9C, K_r*K_c*3) ->
            (N, G_r, G_c, L_r*L_c, K_r*K_c*3); every output pixel then picks its 3 values with one Gather
            (flat index = row part + column part, (H, W)) and the result goes channels-first.

Work: the conv path computes exactly the output pixels' products (plus the slots a member does not host and the
box's few pixels that host nothing); the grouped path computes L_r*L_c*K_r*K_c*3 products per group pair, the
exact work times the padding of groups (L) and slot lists (K). Memory (floats, besides the output): conv path
about 2 * 3*K_r*K_c*nb_r*nb_c; grouped path
(N*G_r*G_c*L_r*L_c) * (9C + K_r*K_c*3) plus a (H, W) int64 index.
``metasr.runtime.tiling.tile_bytes`` counts every buffer.
"""

from __future__ import annotations

import onnx
from onnx import TensorProto, helper

__all__ = ["body_nodes", "name_nodes"]

mk = helper.make_node


def name_nodes(nodes: list[onnx.NodeProto], prefix: str = "") -> None:
    """Give every unnamed node the name ``prefix + its first output`` (outputs are unique, so names are too).

    Tools that rewrite graphs derive new node names from the existing ones (``onnxconverter_common``'s FP16
    conversion names its Casts after the node they serve: unnamed nodes gave duplicate names, an invalid graph).
    """
    for node in nodes:
        if not node.name:
            node.name = prefix + node.output[0]


def _const(name: str, values: list[int], scalar: bool = False) -> onnx.NodeProto:
    dims = [] if scalar else [len(values)]
    return mk("Constant", [], [name], value=helper.make_tensor(name, TensorProto.INT64, dims, values))


def _float_out(name: str) -> onnx.ValueInfoProto:
    """A branch output without a declared type: float32 or float16, as the graph's (FP16 graphs keep the body)."""
    return onnx.ValueInfoProto(name=name)


def _dim(shape: str, index: int, name: str) -> onnx.NodeProto:
    return mk("Gather", [shape, f"c{index}"], [name], axis=0)  # (1,) int64


def _axis(axis: str) -> list[onnx.NodeProto]:
    """One axis' members, slots, block size s (the hints' shape) and each output position's (group, member, slot),
    and the one-hot tap placement ``{axis}_E`` (G, K, 3, T): slot k's kernel tap t lies at row d[k] + t of its
    member's window of T = kt * s rows (kt = 3 for s = 1, 2 for s >= 2: a 2-row block's window is 4 rows).
    Every shape follows from the inputs' shapes."""
    src, idx, groups, slots, pick = (f"{axis}_{n}" for n in ("src", "idx", "groups", "slots", "pick"))
    v = lambda name: f"{axis}_{name}"  # noqa: E731
    return [
        mk("Gather", [groups, "s0"], [v("groups0")], axis=2),  # (G, L) an output of each block's first row
        mk("Gather", [src, v("groups0")], [v("in")]),  # (G, L) members' first input rows
        mk("Gather", [idx, slots], [v("off")]),  # (G, K) slots' offset indices
        mk("Shape", [groups], [v("g_shape")]),
        _dim(v("g_shape"), 0, f"G_{axis}"),
        _dim(v("g_shape"), 1, f"L_{axis}"),
        _dim(v("g_shape"), 2, v("s1d")),
        mk("Squeeze", [v("s1d")], [v("s")]),  # block size, scalar (from the shape)
        mk("Shape", [slots], [v("s_shape")]),
        _dim(v("s_shape"), 1, f"K_{axis}"),
        mk("Mul", [f"L_{axis}", f"K_{axis}"], [v("LK")]),
        mk("Reshape", [v("in"), "cm1"], [v("in_flat")]),
        # each output position's group a, member l, slot k and its member's first input row
        mk("Div", [pick, v("LK")], [v("a")]),
        mk("Div", [pick, f"K_{axis}"], [v("al_k")]),
        mk("Mod", [v("al_k"), f"L_{axis}"], [v("l")]),
        mk("Mod", [pick, f"K_{axis}"], [v("k")]),
        mk("Div", [pick, f"K_{axis}"], [v("al")]),  # a * L + l
        mk("Gather", [v("in_flat"), v("al")], [v("member_in")]),  # (H,)
        # each slot's row within its block: d = src[slot] - first row of the slot output's own member
        mk("Gather", [pick, slots], [v("slot_pick")]),
        mk("Div", [v("slot_pick"), f"K_{axis}"], [v("slot_al")]),
        mk("Gather", [v("in_flat"), v("slot_al")], [v("slot_member")]),
        mk("Gather", [src, slots], [v("slot_src")]),
        mk("Sub", [v("slot_src"), v("slot_member")], [v("d")]),  # (G, K)
        mk("Mul", [v("s"), "s2"], [v("s2")]),
        mk("Add", [v("s2"), "s1"], [v("s2p1")]),
        mk("Div", [v("s2p1"), v("s")], [v("kt")]),  # 3 for s = 1, 2 for s >= 2
        mk("Mul", [v("kt"), v("s")], [v("T")]),
        mk("Range", ["s0", v("T"), "s1"], [v("t")]),  # (T,)
        mk("Unsqueeze", [v("d"), "c2"], [v("d3")]),  # (G, K, 1)
        mk("Add", [v("d3"), "k3"], [v("tap_row")]),  # (G, K, 3)
        mk("Unsqueeze", [v("tap_row"), "cm1"], [v("tap_row4")]),
        mk("Equal", [v("tap_row4"), v("t")], [v("E_b")]),  # (G, K, 3, T)
        mk("CastLike", [v("E_b"), "weights"], [v("E")]),  # the weights' float type (FP16 graphs too)
    ]


def _all(conditions: list[str], out: str) -> list[onnx.NodeProto]:
    """``out`` = the And of ``conditions`` (each (1,) bool), one node per term."""
    nodes, acc = [], conditions[0]
    for i, c in enumerate(conditions[1:]):
        name = out if i == len(conditions) - 2 else f"{out}_{i}"
        nodes.append(mk("And", [acc, c], [name]))
        acc = name
    return nodes


def _one_run(index: str, pick: str, count: str, first: str, is_run: str) -> list[onnx.NodeProto]:
    """Whether ``index`` (n,) is one run ``first + arange(n)``: ``is_run`` (1,) bool, ``first`` (1,) its first
    value, ``count`` (1,) = n (from ``pick``'s shape)."""
    p = is_run + "_"
    return [
        mk("Shape", [pick], [count]),
        mk("Squeeze", [count], [p + "n"]),
        mk("Range", ["s0", p + "n", "s1"], [p + "ar"]),
        mk("Gather", [index, "c0"], [first]),
        mk("Sub", [index, p + "ar"], [p + "shift"]),
        mk("Sub", [p + "shift", first], [p + "dev"]),
        mk("Abs", [p + "dev"], [p + "dev_abs"]),
        mk("ReduceMax", [p + "dev_abs"], [p + "dev_max"], keepdims=1),
        mk("Equal", [p + "dev_max", "c0"], [is_run]),
    ]


def _shared() -> list[onnx.NodeProto]:
    """Padded features, both axes' members, slots and picks, the filters of every slot pair (used by both paths)."""
    n = [_const(f"c{k}", [k]) for k in range(4)]
    n += [_const("cm1", [-1]), _const("c9", [9]), _const("k3", [0, 1, 2]), _const("pads", [0, 0, 1, 1, 0, 0, 1, 1])]
    n += [_const(f"s{k}", [k], scalar=True) for k in range(3)]
    n += [
        mk("Shape", ["features"], ["f_shape"]),
        _dim("f_shape", 0, "N"),
        _dim("f_shape", 1, "C"),
        _dim("f_shape", 2, "h"),
        _dim("f_shape", 3, "w"),
    ]
    n += _axis("row") + _axis("col")
    n += [
        mk("Gather", ["weights", "row_off"], ["wr"], axis=0),  # (G_r, K_r, P_c, 27C)
        mk("Gather", ["wr", "col_off"], ["wrc"], axis=2),  # (G_r, K_r, G_c, K_c, 27C), (ky, kx, c, o)
        mk("Mul", ["C", "c3"], ["C3"]),
    ]
    return n


def _embedded(prefix: str) -> list[onnx.NodeProto]:
    """Every slot pair's 3x3 filter placed at its (row, column) within the T_r x T_c window of a member block:
    ``{prefix}emb`` (G_r, K_r, G_c, K_c, T_r, T_c, 3C) as (ty, tx, (c, o)). Exact: one-hot products."""
    p = prefix
    return [
        mk("Concat", ["G_row", "K_row", "G_col", "K_col", "c3", "cm1"], [p + "w6_shape"], axis=0),
        mk("Reshape", ["wrc", p + "w6_shape"], [p + "w_ky"]),  # (G_r, K_r, G_c, K_c, ky, (kx, c, o))
        mk("Transpose", ["row_E"], [p + "Er"], perm=[0, 1, 3, 2]),  # (G_r, K_r, T_r, ky)
        _const(p + "er_axes", [2, 3]),
        mk("Unsqueeze", [p + "Er", p + "er_axes"], [p + "Er6"]),  # (G_r, K_r, 1, 1, T_r, ky)
        mk("MatMul", [p + "Er6", p + "w_ky"], [p + "w_ty"]),  # (G_r, K_r, G_c, K_c, T_r, (kx, c, o))
        mk("Concat", ["G_row", "K_row", "G_col", "K_col", "cm1", "c3", "C3"], [p + "w7_shape"], axis=0),
        mk("Reshape", [p + "w_ty", p + "w7_shape"], [p + "w_kx"]),  # (..., T_r, kx, (c, o))
        mk("Transpose", ["col_E"], [p + "Ec"], perm=[0, 1, 3, 2]),  # (G_c, K_c, T_c, kx)
        _const(p + "ec_axes", [0, 1, 4]),
        mk("Unsqueeze", [p + "Ec", p + "ec_axes"], [p + "Ec7"]),  # (1, 1, G_c, K_c, 1, T_c, kx)
        mk("MatMul", [p + "Ec7", p + "w_kx"], [p + "emb"]),  # (G_r, K_r, G_c, K_c, T_r, T_c, (c, o))
    ]


def _conv_condition() -> list[onnx.NodeProto]:
    """One group per axis, equal block sizes of 1 or 2 (all from shapes), every member block on the block grid
    of the window and the output columns one run of the conv path's (block column, K_c) layout (values)."""
    n = []
    for axis in ("row", "col"):
        v = lambda name, axis=axis: f"{axis}_{name}"  # noqa: E731
        n += [
            mk("Div", [v("member_in"), v("s")], [v("blk")]),  # (H,) block of each output's member
            mk("Mod", [v("in"), v("s")], [v("in_mod")]),
            mk("ReduceMax", [v("in_mod")], [v("mis_max")], keepdims=1),
            mk("Equal", [v("mis_max"), "c0"], [v("aligned")]),
            mk("Equal", [f"G_{axis}", "c1"], [v("one_group")]),
            mk("And", [v("aligned"), v("one_group")], [v("gridded")]),
        ]
    n += [
        mk("Mul", ["col_blk", "K_col"], ["cxk"]),
        mk("Add", ["cxk", "col_k"], ["cidx"]),  # (W,) column in the (block column, K_c) layout
        *_one_run("cidx", "col_pick", "W_1", "cidx0", "contiguous"),
        mk("And", ["row_gridded", "col_gridded"], ["gridded"]),
        mk("And", ["gridded", "contiguous"], ["grid_run"]),
        mk("Equal", ["row_s", "col_s"], ["square_blocks"]),
        mk("LessOrEqual", ["row_s", "s2"], ["small_blocks"]),
        mk("And", ["square_blocks", "small_blocks"], ["conv_blocks"]),
        mk("Unsqueeze", ["conv_blocks", "c0"], ["conv_blocks1"]),
        mk("And", ["grid_run", "conv_blocks1"], ["use_conv_n"]),
        _const("scalar_shape", []),
        mk("Reshape", ["use_conv_n", "scalar_shape"], ["use_conv"]),  # a rank-0 condition (OpenVINO needs rank <= 1)
    ]
    return n


def _unit_conv() -> onnx.GraphProto:
    """One-pixel blocks: the window is the features with one zero pixel around, the convolution's own padding
    (no padded copy)."""
    node = mk("Conv", ["features", "cv_w"], ["uc_y"], pads=[1, 1, 1, 1])
    return helper.make_graph([node], "MetaUpscale_unit_conv", [], [_float_out("uc_y")])


def _pair_conv() -> onnx.GraphProto:
    """Two-pixel blocks: block b's 4 x 4 window starts at input row 2b - 1, so one 4 x 4 convolution at stride 2
    with one zero row before and two after gives ceil(n / 2) blocks for either parity of n (no padded copy)."""
    node = mk("Conv", ["features", "cv_w"], ["pc_y"], pads=[1, 1, 2, 2], strides=[2, 2])
    return helper.make_graph([node], "MetaUpscale_pair_conv", [], [_float_out("pc_y")])


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
    return helper.make_graph(n, "MetaUpscale_transposes", [], [_float_out("tr_yr")])


def _slot_conditions(slots: tuple[int, ...]) -> list[onnx.NodeProto]:
    """``cv_is{k}``: K_r = K_c = k, rank-0, for every k in ``slots``."""
    n = []
    for k in slots:
        n += [
            _const(f"cv_k{k}", [k]),
            mk("Equal", ["K_row", f"cv_k{k}"], [f"cv_is{k}_n"]),
            mk("And", [f"cv_is{k}_n", "cv_square"], [f"cv_is{k}_1"]),
            mk("Reshape", [f"cv_is{k}_1", "scalar_shape"], [f"cv_is{k}"]),
        ]
    return n


def _d2s(k: int, prefix: str) -> onnx.GraphProto:
    node = mk("DepthToSpace", ["cv_y"], [f"{prefix}{k}_y"], blocksize=k, mode="CRD")
    return helper.make_graph([node], f"MetaUpscale_{prefix}{k}", [], [_float_out(f"{prefix}{k}_y")])


def _interleave(slots: tuple[int, ...], prefix: str) -> tuple[list[onnx.NodeProto], str]:
    """``cv_y`` (N, 3*K_r*K_c, nb_r, nb_c), channels (o, kr, kc) -> (N, 3, nb_r*K_r, nb_c*K_c): a DepthToSpace
    (CRD: exactly this layout) when K_r = K_c = slots[0], else the next branch; after the last, the transposes
    (``prefix`` "d2s") or the last slot count's DepthToSpace (the caller knows it is one of ``slots``).
    Returns the nodes and their output's name."""
    if len(slots) == 1 and prefix != "d2s":
        return list(_d2s(slots[0], prefix).node), f"{prefix}{slots[0]}_y"
    if not slots:
        return list(_transposes().node), "tr_yr"
    k = slots[0]
    inner, inner_out = _interleave(slots[1:], prefix)
    rest = helper.make_graph(inner, f"MetaUpscale_not_{prefix}{k}", [], [_float_out(inner_out)])
    out = f"cv_{prefix}_i{k}"
    return [mk("If", [f"cv_is{k}"], [out], then_branch=_d2s(k, prefix), else_branch=rest)], out


def _rows_slice(interleaved: str) -> onnx.GraphProto:
    """Output rows one run of the (block row, K_r) layout: one Slice of rows and columns."""
    n = [
        mk("Concat", ["cv_ridx0", "cidx0"], ["rs_start"], axis=0),
        mk("Concat", ["cv_rend", "cv_cend"], ["rs_end"], axis=0),
        _const("rs_axes", [2, 3]),
        mk("Slice", [interleaved, "rs_start", "rs_end", "rs_axes"], ["rs_out"]),
    ]
    return helper.make_graph(n, "MetaUpscale_rows_slice", [], [_float_out("rs_out")])


def _rows_gather(interleaved: str) -> onnx.GraphProto:
    """Any output rows: a Gather of whole rows, then the Slice of the columns."""
    n = [
        mk("Gather", [interleaved, "cv_ridx"], ["rg_picked"], axis=2),  # (N, 3, H, nb_c*K_c)
        mk("Slice", ["rg_picked", "cidx0", "cv_cend", "c3"], ["rg_out"]),  # (N, 3, H, W)
    ]
    return helper.make_graph(n, "MetaUpscale_rows_gather", [], [_float_out("rg_out")])


def _conv_path() -> onnx.GraphProto:
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
    n += _embedded("cv_")
    n += [
        # (1, K_r, 1, K_c, T_r, T_c, (c, o)) -> (3*K_r*K_c, C, T_r, T_c), output channels (o, kr, kc)
        mk("Unsqueeze", ["row_T", "c0"], ["cv_Tr"]),
        mk("Unsqueeze", ["col_T", "c0"], ["cv_Tc"]),
        mk("Concat", ["K_row", "K_col", "cv_Tr", "cv_Tc", "C", "c3"], ["cv_w6s"], axis=0),
        mk("Reshape", ["cv_emb", "cv_w6s"], ["cv_w6"]),
        mk("Transpose", ["cv_w6"], ["cv_w6t"], perm=[5, 0, 1, 4, 2, 3]),  # (o, kr, kc, c, ty, tx)
        mk("Concat", ["cm1", "C", "cv_Tr", "cv_Tc"], ["cv_w_shape"], axis=0),
        mk("Reshape", ["cv_w6t", "cv_w_shape"], ["cv_w"]),
        # the convolution over whole blocks: (N, 3*K_r*K_c, nb_r, nb_c)
        mk("Equal", ["row_s", "s1"], ["cv_unit"]),
        mk("If", ["cv_unit"], ["cv_y"], then_branch=_unit_conv(), else_branch=_pair_conv()),
        mk("Mul", ["K_row", "cv_row_nb1"], ["cv_rows"]),
        mk("Mul", ["cv_col_nb1", "K_col"], ["cv_cols"]),
        mk("Equal", ["K_row", "K_col"], ["cv_square"]),
    ]
    n += _slot_conditions(D2S_SLOTS)
    n += [
        mk("Mul", ["row_blk", "K_row"], ["cv_bk"]),  # (H,) row in the (block row, K_r) layout
        mk("Add", ["cv_bk", "row_k"], ["cv_ridx"]),
        *_one_run("cv_ridx", "row_pick", "H_1", "cv_ridx0", "cv_rrun_1"),
        mk("Reshape", ["cv_rrun_1", "scalar_shape"], ["cv_rrun"]),
        mk("Add", ["cv_ridx0", "H_1"], ["cv_rend"]),
        mk("Add", ["cidx0", "W_1"], ["cv_cend"]),
        # the output is the whole interleaved block (integer scales, untiled): the DepthToSpace is the result
        _const("cv_d2s_lo", [D2S_SLOTS[0]]),
        _const("cv_d2s_hi", [D2S_SLOTS[-1]]),
        mk("GreaterOrEqual", ["K_row", "cv_d2s_lo"], ["cv_ge"]),
        mk("LessOrEqual", ["K_row", "cv_d2s_hi"], ["cv_le"]),
        mk("Add", ["cv_ridx0", "cidx0"], ["cv_start"]),
        mk("Equal", ["cv_start", "c0"], ["cv_at0"]),  # both are >= 0
        mk("Equal", ["H_1", "cv_rows"], ["cv_all_rows"]),
        mk("Equal", ["W_1", "cv_cols"], ["cv_all_cols"]),
        *_all(["cv_ge", "cv_le", "cv_square", "cv_at0", "cv_all_rows", "cv_all_cols", "cv_rrun_1"], "cv_d"),
        mk("Reshape", ["cv_d", "scalar_shape"], ["cv_direct"]),
    ]
    direct, direct_out = _interleave(D2S_SLOTS, "direct")
    general, general_out = _interleave(D2S_SLOTS, "d2s")
    pick = {"then_branch": _rows_slice(general_out), "else_branch": _rows_gather(general_out)}
    general.append(mk("If", ["cv_rrun"], ["cv_picked"], **pick))  # (N, 3, H, W)
    whole = {
        "then_branch": helper.make_graph(direct, "MetaUpscale_direct", [], [_float_out(direct_out)]),
        "else_branch": helper.make_graph(general, "MetaUpscale_general", [], [_float_out("cv_picked")]),
    }
    n.append(mk("If", ["cv_direct"], ["cv_out"], **whole))
    return helper.make_graph(n, "MetaUpscale_conv", [], [_float_out("cv_out")])


def _plain_filters() -> onnx.GraphProto:
    """Grouped-path filters when every block is one pixel: (G_r, G_c, 9C, K_r*K_c*3), taps (ky, kx, c)."""
    n = [
        mk("Concat", ["G_row", "K_row", "G_col", "K_col", "gm_C9", "c3"], ["pf_w6_shape"], axis=0),
        mk("Reshape", ["wrc", "pf_w6_shape"], ["pf_w6"]),
        mk("Transpose", ["pf_w6"], ["pf_w6t"], perm=[0, 2, 4, 1, 3, 5]),  # (G_r, G_c, 9C, K_r, K_c, 3)
        mk("Reshape", ["pf_w6t", "gm_b_shape"], ["pf_B"]),
    ]
    return helper.make_graph(n, "MetaUpscale_plain_filters", [], [_float_out("pf_B")])


def _block_filters() -> onnx.GraphProto:
    """Grouped-path filters for blocks: (G_r, G_c, T_r*T_c*C, K_r*K_c*3), taps (ty, tx, c)."""
    n = [
        *_embedded("bf_"),
        mk("Concat", ["G_row", "K_row", "G_col", "K_col", "gm_TTC", "c3"], ["bf_b6_shape"], axis=0),
        mk("Reshape", ["bf_emb", "bf_b6_shape"], ["bf_b6"]),
        mk("Transpose", ["bf_b6"], ["bf_b6t"], perm=[0, 2, 4, 1, 3, 5]),
        mk("Reshape", ["bf_b6t", "gm_b_shape"], ["bf_B"]),
    ]
    return helper.make_graph(n, "MetaUpscale_block_filters", [], [_float_out("bf_B")])


def _grouped_path() -> onnx.GraphProto:
    n = [
        # channels-last padded features, one row per pixel: (N, (h+2)*(w+2), C)
        mk("Pad", ["features", "pads"], ["gm_fp"], mode="constant"),  # (N, C, h+2, w+2)
        mk("Transpose", ["gm_fp"], ["gm_fpt"], perm=[0, 2, 3, 1]),
        mk("Shape", ["gm_fpt"], ["gm_fpt_shape"]),
        _dim("gm_fpt_shape", 1, "gm_hp"),
        _dim("gm_fpt_shape", 2, "gm_wp"),
        mk("Concat", ["N", "cm1", "C"], ["gm_flat_shape"], axis=0),
        mk("Reshape", ["gm_fpt", "gm_flat_shape"], ["gm_fflat"]),
        # pixel index of every member block's window: (G_r, G_c, L_r, L_c, T_r, T_c); rows past Fp's last
        # (only read by windows of 2-pixel blocks at the far edge) are clamped: their taps carry zero filters
        mk("Unsqueeze", ["row_in", "cm1"], ["gm_rin3"]),
        mk("Add", ["gm_rin3", "row_t"], ["gm_rows0"]),  # (G_r, L_r, T_r) padded rows
        mk("Sub", ["gm_hp", "c1"], ["gm_hp1"]),
        mk("Min", ["gm_rows0", "gm_hp1"], ["gm_rows"]),
        mk("Mul", ["gm_rows", "gm_wp"], ["gm_rbase"]),
        mk("Unsqueeze", ["col_in", "cm1"], ["gm_cin3"]),
        mk("Add", ["gm_cin3", "col_t"], ["gm_cols0"]),  # (G_c, L_c, T_c) padded columns
        mk("Sub", ["gm_wp", "c1"], ["gm_wp1"]),
        mk("Min", ["gm_cols0", "gm_wp1"], ["gm_cols"]),
        _const("gm_ru", [1, 3, 5]),
        _const("gm_cu", [0, 2, 4]),
        mk("Unsqueeze", ["gm_rbase", "gm_ru"], ["gm_rb6"]),  # (G_r, 1, L_r, 1, T_r, 1)
        mk("Unsqueeze", ["gm_cols", "gm_cu"], ["gm_cc6"]),  # (1, G_c, 1, L_c, 1, T_c)
        mk("Add", ["gm_rb6", "gm_cc6"], ["gm_pix"]),
        mk("Gather", ["gm_fflat", "gm_pix"], ["gm_patch"], axis=1),  # (N, G_r, G_c, L_r, L_c, T_r, T_c, C)
        mk("Mul", ["L_row", "L_col"], ["gm_M"]),
        mk("Mul", ["row_T", "col_T"], ["gm_TT"]),
        mk("Unsqueeze", ["gm_TT", "c0"], ["gm_TT1"]),
        mk("Mul", ["gm_TT1", "C"], ["gm_TTC"]),
        mk("Concat", ["N", "G_row", "G_col", "gm_M", "gm_TTC"], ["gm_a_shape"], axis=0),
        mk("Reshape", ["gm_patch", "gm_a_shape"], ["gm_A"]),  # (N, G_r, G_c, L_r*L_c, T_r*T_c*C)
        mk("Mul", ["C", "c9"], ["gm_C9"]),
        mk("Mul", ["K_row", "K_col"], ["gm_KK"]),
        mk("Mul", ["gm_KK", "c3"], ["gm_KK3"]),
        mk("Concat", ["G_row", "G_col", "cm1", "gm_KK3"], ["gm_b_shape"], axis=0),
        mk("Equal", ["gm_TT1", "c9"], ["gm_single"]),  # 3 x 3 windows: one-pixel blocks on both axes
        mk("If", ["gm_single"], ["gm_B"], then_branch=_plain_filters(), else_branch=_block_filters()),
        mk("MatMul", ["gm_A", "gm_B"], ["gm_R"]),  # (N, G_r, G_c, L_r*L_c, K_r*K_c*3)
        # flat entry of (a, b, l, l', k, k') = row part (a, l, k) + column part (b, l', k'), over (N, Q, 3)
        mk("Mul", ["G_col", "gm_M"], ["gm_GcM"]),
        mk("Mul", ["gm_GcM", "gm_KK"], ["gm_sa"]),  # stride of a
        mk("Mul", ["col_LK", "K_row"], ["gm_sl"]),  # stride of l
        mk("Mul", ["row_a", "gm_sa"], ["gm_r1"]),
        mk("Mul", ["row_l", "gm_sl"], ["gm_r2"]),
        mk("Mul", ["row_k", "K_col"], ["gm_r3"]),
        mk("Add", ["gm_r1", "gm_r2"], ["gm_r12"]),
        mk("Add", ["gm_r12", "gm_r3"], ["gm_rowpart"]),  # (H,)
        mk("Mul", ["gm_M", "gm_KK"], ["gm_sb"]),  # stride of b
        mk("Mul", ["col_a", "gm_sb"], ["gm_c1"]),
        mk("Mul", ["col_l", "gm_KK"], ["gm_c2"]),
        mk("Add", ["gm_c1", "gm_c2"], ["gm_c12"]),
        mk("Add", ["gm_c12", "col_k"], ["gm_colpart"]),  # (W,)
        mk("Unsqueeze", ["gm_rowpart", "c1"], ["gm_rp2"]),  # (H, 1)
        mk("Add", ["gm_rp2", "gm_colpart"], ["gm_flatidx"]),  # (H, W)
        mk("Concat", ["N", "cm1", "c3"], ["gm_rq_shape"], axis=0),
        mk("Reshape", ["gm_R", "gm_rq_shape"], ["gm_Rq"]),  # (N, Q, 3)
        mk("Gather", ["gm_Rq", "gm_flatidx"], ["gm_picked"], axis=1),  # (N, H, W, 3)
        mk("Transpose", ["gm_picked"], ["gm_out"], perm=[0, 3, 1, 2]),  # (N, 3, H, W)
    ]
    return helper.make_graph(n, "MetaUpscale_grouped", [], [_float_out("gm_out")])


def _name_graph(graph: onnx.GraphProto, prefix: str) -> None:
    name_nodes(list(graph.node), prefix)
    for node in graph.node:
        for att in node.attribute:
            if att.type == onnx.AttributeProto.GRAPH:
                _name_graph(att.g, f"{prefix}{att.g.name}/")


def body_nodes() -> list[onnx.NodeProto]:
    """The body's nodes, every one (the branches' too) with a unique name."""
    conv, grouped = _conv_path(), _grouped_path()
    for g, prefix in ((conv, "conv/"), (grouped, "grouped/")):
        _name_graph(g, "MetaUpscale/" + prefix)
    nodes = _shared() + _conv_condition()
    nodes.append(mk("If", ["use_conv"], ["out"], then_branch=conv, else_branch=grouped))
    name_nodes(nodes, "MetaUpscale/")
    return nodes
