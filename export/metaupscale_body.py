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
            integer scale, r = p/2) one Conv of F with the K_r*K_c*3 filters, interleaved to the output by a
            DepthToSpace (or two transposes), then sliced: :mod:`metasr.export.metaupscale_conv`. This is the
            sub-pixel convolution: no patch matrix in memory, the convolution's own (cache-blocked) im2col.
grouped     the members' neighbourhoods gathered once from channels-last Fp into the patch matrix
path        (N, G_r, G_c, L_r*L_c, 9C), one batched MatMul with the filters (G_r, G_c, 9C, K_r*K_c*3) ->
            (N, G_r, G_c, L_r*L_c, K_r*K_c*3); every output pixel then picks its 3 values with one Gather
            (flat index = row part + column part, (H, W)) and the result goes channels-first.

Work: the conv path computes exactly the output pixels' products (plus the slots a member does not host and, for
2-pixel blocks, the zero taps of their 4x4 windows, 16/9); the grouped path computes L_r*L_c*K_r*K_c*3 products
per group pair, the exact work times the padding of groups (L) and slot lists (K). Memory (floats, besides the
output): conv path about 2 * 3*K_r*K_c*nb_r*nb_c; grouped path (N*G_r*G_c*L_r*L_c) * (9C + K_r*K_c*3) plus a
(H, W) int64 index.
``metasr.runtime.tiling.tile_bytes`` counts every buffer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from metasr.export.metaupscale_conv import D2S_SLOTS, conv_path
from metasr.export.metaupscale_nodes import const, dim, embedded, float_out, mk, one_run
from metasr.export.metaupscale_phase import not_conv
from metasr.export.onnx_proto import make_graph, protos

if TYPE_CHECKING:
    import onnx

__all__ = ["D2S_SLOTS", "body_nodes", "name_nodes"]


def name_nodes(nodes: list[onnx.NodeProto], prefix: str = "") -> None:
    """Give every unnamed node the name ``prefix + its first output`` (outputs are unique, so names are too).

    Tools that rewrite graphs derive new node names from the existing ones (``onnxconverter_common``'s FP16
    conversion names its Casts after the node they serve: unnamed nodes gave duplicate names, an invalid graph).
    """
    for node in nodes:
        if not node.name:
            node.name = prefix + node.output[0]


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
        dim(v("g_shape"), 0, f"G_{axis}"),
        dim(v("g_shape"), 1, f"L_{axis}"),
        dim(v("g_shape"), 2, v("s1d")),
        mk("Squeeze", [v("s1d")], [v("s")]),  # block size, scalar (from the shape)
        mk("Shape", [slots], [v("s_shape")]),
        dim(v("s_shape"), 1, f"K_{axis}"),
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


def _shared(with_filters: bool = True) -> list[onnx.NodeProto]:
    """Padded features, both axes' members, slots and picks, the filters of every slot pair (used by both paths;
    without ``with_filters`` each path that reads them gathers them itself)."""
    n = [const(f"c{k}", [k]) for k in range(4)]
    n += [const("cm1", [-1]), const("c9", [9]), const("k3", [0, 1, 2]), const("pads", [0, 0, 1, 1, 0, 0, 1, 1])]
    n += [const(f"s{k}", [k], scalar=True) for k in range(3)]
    n += [
        mk("Shape", ["features"], ["f_shape"]),
        dim("f_shape", 0, "N"),
        dim("f_shape", 1, "C"),
        dim("f_shape", 2, "h"),
        dim("f_shape", 3, "w"),
    ]
    n += _axis("row") + _axis("col")
    n += _slot_filters() if with_filters else []
    n.append(mk("Mul", ["C", "c3"], ["C3"]))
    return n


def _slot_filters() -> list[onnx.NodeProto]:
    return [
        mk("Gather", ["weights", "row_off"], ["wr"], axis=0),  # (G_r, K_r, P_c, 27C)
        mk("Gather", ["wr", "col_off"], ["wrc"], axis=2),  # (G_r, K_r, G_c, K_c, 27C), (ky, kx, c, o)
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
        *one_run("cidx", "col_pick", "W_1", "cidx0", "contiguous"),
        mk("And", ["row_gridded", "col_gridded"], ["gridded"]),
        mk("And", ["gridded", "contiguous"], ["grid_run"]),
        mk("Equal", ["row_s", "col_s"], ["square_blocks"]),
        mk("LessOrEqual", ["row_s", "s2"], ["small_blocks"]),
        mk("And", ["square_blocks", "small_blocks"], ["conv_blocks"]),
        mk("Unsqueeze", ["conv_blocks", "c0"], ["conv_blocks1"]),
        mk("And", ["grid_run", "conv_blocks1"], ["use_conv_n"]),
        const("scalar_shape", []),
        mk("Reshape", ["use_conv_n", "scalar_shape"], ["use_conv"]),  # a rank-0 condition (OpenVINO needs rank <= 1)
    ]
    return n


def _plain_filters() -> onnx.GraphProto:
    """Grouped-path filters when every block is one pixel: (G_r, G_c, 9C, K_r*K_c*3), taps (ky, kx, c)."""
    n = [
        mk("Concat", ["G_row", "K_row", "G_col", "K_col", "gm_C9", "c3"], ["pf_w6_shape"], axis=0),
        mk("Reshape", ["wrc", "pf_w6_shape"], ["pf_w6"]),
        mk("Transpose", ["pf_w6"], ["pf_w6t"], perm=[0, 2, 4, 1, 3, 5]),  # (G_r, G_c, 9C, K_r, K_c, 3)
        mk("Reshape", ["pf_w6t", "gm_b_shape"], ["pf_B"]),
    ]
    return make_graph(n, "MetaUpscale_plain_filters", [], [float_out("pf_B")])


def _block_filters() -> onnx.GraphProto:
    """Grouped-path filters for blocks: (G_r, G_c, T_r*T_c*C, K_r*K_c*3), taps (ty, tx, c)."""
    n = [
        *embedded("bf_"),
        mk("Concat", ["G_row", "K_row", "G_col", "K_col", "gm_TTC", "c3"], ["bf_b6_shape"], axis=0),
        mk("Reshape", ["bf_emb", "bf_b6_shape"], ["bf_b6"]),
        mk("Transpose", ["bf_b6"], ["bf_b6t"], perm=[0, 2, 4, 1, 3, 5]),
        mk("Reshape", ["bf_b6t", "gm_b_shape"], ["bf_B"]),
    ]
    return make_graph(n, "MetaUpscale_block_filters", [], [float_out("bf_B")])


def _grouped_path() -> onnx.GraphProto:
    n = [
        # channels-last padded features, one row per pixel: (N, (h+2)*(w+2), C)
        mk("Pad", ["features", "pads"], ["gm_fp"], mode="constant"),  # (N, C, h+2, w+2)
        mk("Transpose", ["gm_fp"], ["gm_fpt"], perm=[0, 2, 3, 1]),
        mk("Shape", ["gm_fpt"], ["gm_fpt_shape"]),
        dim("gm_fpt_shape", 1, "gm_hp"),
        dim("gm_fpt_shape", 2, "gm_wp"),
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
        const("gm_ru", [1, 3, 5]),
        const("gm_cu", [0, 2, 4]),
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
    return make_graph(n, "MetaUpscale_grouped", [], [float_out("gm_out")])


def _name_graph(graph: onnx.GraphProto, prefix: str) -> None:
    name_nodes(list(graph.node), prefix)
    for node in graph.node:
        for att in node.attribute:
            if att.type == protos().AttributeProto.GRAPH:
                _name_graph(att.g, f"{prefix}{att.g.name}/")


def body_nodes(nchwc_block: int | None = None, col2im: bool = False) -> list[onnx.NodeProto]:
    """The body's nodes, every one (the branches' too) with a unique name; ``nchwc_block``: the convolution on
    ONNX Runtime's CPU NCHWc kernels of that block size (:mod:`metasr.export.metaupscale_nchwc`); ``col2im``:
    the interleave by ``Col2Im`` (opset >= 18), and with both, the phase path for r = p/q
    (:mod:`metasr.export.metaupscale_phase`)."""
    conv, other, other_prefix = conv_path(nchwc_block, col2im), _grouped_path(), "grouped/"
    phase = nchwc_block is not None and col2im and 16 % nchwc_block == 0  # the phase path's Opad: 16, 32, 48
    if phase:  # the slot filters (G_r, K_r, G_c, K_c, 27C) only where read: the phase path gathers its own
        for g in (conv, other):
            nodes = _slot_filters() + list(g.node)
            del g.node[:]
            g.node.extend(nodes)
        other, other_prefix = not_conv(other, nchwc_block), "not_conv/"
    for g, prefix in ((conv, "conv/"), (other, other_prefix)):
        _name_graph(g, "MetaUpscale/" + prefix)
    nodes = _shared(with_filters=not phase) + _conv_condition()
    nodes.append(mk("If", ["use_conv"], ["out"], then_branch=conv, else_branch=other))
    name_nodes(nodes, "MetaUpscale/")
    return nodes
