"""The ``MetaUpscale`` body's phase path: r = p/q with q > 2 (x1.1, x1.25, x3.3, x4/3, ...) as q^2 strided
convolutions on ONNX Runtime's CPU NCHWc kernels. Part of the runtime's variant of the body
(:mod:`metasr.export.metaupscale_nchwc`, built by :mod:`metasr.runtime.ort_cpu`), never exported.

For r = p/q the host's hints (:mod:`metasr.runtime.feeds`) put the input rows of each phase (row mod q) into
one group, so the members of a (row group, column group) pair are the input pixels (q*i + phi_r, q*j + phi_c):
a convolution at stride q reads exactly their 3x3 windows. Here the windows are read by the convolution (no
patch matrix: the grouped path's 9C floats per input pixel) and the filters run on the NCHWc kernels. Shapes,
F the features (N, C, h, w), nb = ceil(n / q) blocks per axis, J = nb + 1:

filters     the predictor's rows (P_r P_c, 27C) with o moved first by one ``Gemm`` against the identity (exact;
            a table of more pairs than the q^2 K_r K_c entries read, a plan's whole table fed to a tile, is first
            cut to the pairs read), then one ``Gather`` of rows: per phase pair (O_i, C, 3, 3), O_i = 3*Kr_i*Kc_i
            channels (o, kr, kc) for the two phases' own slot counts (x3.3: 3 or 4 per phase, lists padded to
            K = 4; each phase's group ``gop`` from the members' first rows), rounded up to 16 (Opad_i), packed
            OIhw{B}i{B}o, split into q^2 filters.
features    F in blocks of B channels (``ReorderInput``); no padded copy: the convolutions' zero padding.
convs       phase pair (pr, pc): ``nchwc:Conv`` 3x3 at stride q with pads q+1-pr before and pr+1 after (columns
            alike): every phase gets J outputs per axis, output (i, j) being the window of input pixel
            (q*(i-1) + pr, q*(j-1) + pc) -> (N, Opad, J_r, J_c) (i = 0 is never read). Concatenated (whole
            blocks: the blocked layout's concatenation), to planes by ``ReorderOutput`` (each block of B channels
            one batch entry) -> (N, sum Opad_i, J_r, J_c).
interleave  one period of output rows (p of them) is the phases' slots in order, so output row y = (block + 1) *
            p + cumK[phase] + slot, minus the first row's: a ``Gather`` of whole planes into (N, 3*p*p, J_r, J_c),
            ``DepthToSpace`` (CRD) with block p (one branch per p: the block is an attribute), one ``Slice``.
            Built only in the variant with ``Col2Im`` (opset >= 18), though it uses no opset-18 operator.

Taken (``ph_take``, :mod:`metasr.export.metaupscale_phase_take`) when every block is one pixel, G_r = G_c = q
is one of :data:`PHASE_PERIODS` and each group is one phase's rows (a permutation of the phases), the output rows
and columns are exactly that periodic layout (the float32 "exception" rows of some scales are not: those plans
keep the grouped path), p_r = p_c <= :data:`PHASE_MAX_P`, 3*K_r*K_c <= :data:`PHASE_MAX_O`, C is whole blocks
and the features have at least :data:`PHASE_MIN_PIXELS`. Work: the member pixels' windows against O = Opad
channels (the slots' padding to K and to whole blocks: x3.3 1.23x the exact products, x2.1 1.6x, x1.1 4.4x).
Memory: no patch matrix; peaks per 256 x 256 output tile, C = 64 (``benchmarks/ort_upscale_memory.py``): x1.1
23.5 MiB (grouped path 172), x1.7 15.1 (83), x3.3 25.1 (56), x3.9 43.6 (43); ``tiling.tile_bytes`` (the grouped
path's count) bounds them 2.5-8x. The output equals the grouped path's to float32 rounding (another summation
order).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from metasr.export.metaupscale_nodes import const, dim, float_out, mk
from metasr.export.metaupscale_phase_take import (
    PHASE_MAX_O,
    PHASE_MAX_P,
    PHASE_MIN_P,
    PHASE_MIN_PIXELS,
    PHASE_PERIODS,
    take_condition,
)
from metasr.export.onnx_proto import make_graph, protos

if TYPE_CHECKING:
    import onnx

__all__ = ["PHASE_MAX_O", "PHASE_MAX_P", "PHASE_MIN_PIXELS", "PHASE_PERIODS", "not_conv"]

NCHWC = "com.microsoft.nchwc"


def _o_first(cut: bool) -> onnx.GraphProto:
    """``ph_wt`` (3, X 9C): the table's filters ((ky, kx, c, o)) with o first, row o X + pair, by one ``Gemm``
    against the 3x3 identity (exact: each value is 1 * w + 0 * w' + 0 * w''; a Transpose of the 3-float inner
    axis took 1.7 ms at x3.3, the Gemm 0.3-0.5); ``cut``: of the U pairs read alone (X = U), else of the whole
    table (X = P_r P_c). Also each entry's pair among those X, and X."""
    p = "ph_cu_" if cut else "ph_wh_"
    n = []
    table = "weights"
    if cut:
        n += [
            mk("Unique", ["ph_pairs_all"], ["ph_used", "", "ph_used_at"], sorted=1),
            mk("Shape", ["ph_used"], ["ph_U"]),
            mk("Mul", ["ph_C9", "c3"], [p + "C27"]),
            mk("Concat", ["cm1", p + "C27"], [p + "rows_shape"], axis=0),
            mk("Reshape", ["weights", p + "rows_shape"], [p + "rows"]),  # (P_r P_c, 27C)
            mk("Gather", [p + "rows", "ph_used"], [p + "used"], axis=0),  # (U, 27C)
        ]
        table = p + "used"
    n += [
        const(p + "col3", [-1, 3]),
        mk("Reshape", [table, p + "col3"], [p + "wcol"]),  # (X 9C, 3)
        # the Gemm's output is the branch's (a Reshape here, a view, made the If copy 4 MB at x3.3: 0.5 ms)
        mk("Gemm", ["ph_eye3", p + "wcol"], [p + "wt"], transB=1),  # (3, X 9C)
        mk("Identity", ["ph_used_at" if cut else "ph_pairs_all"], [p + "at"]),
        mk("Identity", ["ph_U" if cut else "ph_P_all"], [p + "X"]),
    ]
    outs = [float_out(p + "wt"), protos().ValueInfoProto(name=p + "at"), protos().ValueInfoProto(name=p + "X")]
    return make_graph(n, f"MetaUpscale_phase_{'used' if cut else 'whole'}_table", [], outs)


def _filters() -> list[onnx.NodeProto]:
    """``ph_wp`` (sum Opad_i, C, 3, 3): each phase pair's filters, channels (o, kr, kc) padded to Opad_i, packed
    OIhw{B}i{B}o (the NCHWc kernels' layout). No general transpose (one of these ~1.4 M floats, x3.3, took ONNX
    Runtime 3.5 ms on one thread): o moves first by a ``Gemm``, the rows by one ``Gather``, B_o inwards by a
    ``ReorderInput``, and the one ``Transpose`` left moves whole (ky, kx) blocks."""
    return [
        mk("Gather", ["row_off", "ph_row_gop"], ["ph_roff"]),  # (q, K_r) offset indices of each phase's slots
        mk("Gather", ["col_off", "ph_col_gop"], ["ph_coff"]),
        # every (phase pair, slot pair)'s offset pair: (q, q, K_r, K_c) -> flat (q^2 K_r K_c,) into the table
        mk("Shape", ["weights"], ["ph_w_shape"]),
        dim("ph_w_shape", 0, "ph_Pr"),
        dim("ph_w_shape", 1, "ph_Pc"),
        mk("Mul", ["ph_Pr", "ph_Pc"], ["ph_P_all"]),
        mk("Mul", ["ph_roff", "ph_Pc"], ["ph_rbase"]),  # (q, K_r)
        const("ph_u13", [1, 3]),
        mk("Unsqueeze", ["ph_rbase", "ph_u13"], ["ph_rb4"]),  # (q, 1, K_r, 1)
        const("ph_u02", [0, 2]),
        mk("Unsqueeze", ["ph_coff", "ph_u02"], ["ph_cb4"]),  # (1, q, 1, K_c)
        mk("Add", ["ph_rb4", "ph_cb4"], ["ph_pairs"]),
        mk("Reshape", ["ph_pairs", "cm1"], ["ph_pairs_all"]),
        # a table of more pairs than the q^2 K_r K_c entries read (a plan's whole table fed to a tile,
        # ``tiling.window_feeds``: x3.9 on 3000 x 4000, 7290 pairs against 1600) is first cut to the U pairs
        # read (U <= p^2), else read whole (a tile's own table, or an untiled call's: 1089 pairs at x3.3)
        mk("Shape", ["ph_pairs_all"], ["ph_n_read"]),
        mk("Greater", ["ph_P_all", "ph_n_read"], ["ph_cut_1"]),
        mk("Reshape", ["ph_cut_1", "scalar_shape"], ["ph_cut"]),
        mk("Mul", ["C", "c9"], ["ph_C9"]),
        const("ph_33", [3, 3]),
        mk("ConstantOfShape", ["ph_33"], ["ph_z33"]),
        mk("CastLike", ["ph_z33", "weights"], ["ph_z33f"]),
        mk("EyeLike", ["ph_z33f"], ["ph_eye3"]),
        mk(
            "If",
            ["ph_cut"],
            ["ph_wt", "ph_pairs_flat", "ph_P"],
            then_branch=_o_first(True),
            else_branch=_o_first(False),
        ),
        mk("Concat", ["cm1", "ph_C9"], ["ph_wo_shape"], axis=0),
        mk("Reshape", ["ph_wt", "ph_wo_shape"], ["ph_wo"]),  # (3 X, 9C): row o X + pair
        mk("Mul", ["G_row", "G_col"], ["ph_qq"]),
        mk("Squeeze", ["ph_qq"], ["ph_qq_s"]),
        const("ph_sixteen", [16]),
        mk("Add", ["ph_o", "c15"], ["ph_o15"]),
        mk("Div", ["ph_o15", "ph_sixteen"], ["ph_o16"]),
        mk("Mul", ["ph_o16", "ph_sixteen"], ["ph_opad"]),  # (1,) the largest pair's O rounded up to 16
        # each phase pair's own slot counts (the phases' real slots, not the lists' padding): O_i = 3 Kr_i Kc_i
        # channels (o, kr, kc), rounded up to 16 (a multiple of B): Opad_i
        mk("Unsqueeze", ["ph_row_kphase", "cm1"], ["ph_kr2"]),  # (q, 1)
        mk("Mul", ["ph_kr2", "ph_col_kphase"], ["ph_kk2"]),  # (q, q)
        mk("Reshape", ["ph_kk2", "cm1"], ["ph_kki"]),  # (q^2,) Kr_i Kc_i
        mk("Mul", ["ph_col_kphase", "c0"], ["ph_zq"]),  # (q,) zeros
        mk("Add", ["ph_kr2", "ph_zq"], ["ph_kr_qq"]),  # (q, q) Kr of the row phase
        mk("Reshape", ["ph_kr_qq", "cm1"], ["ph_kri"]),  # (q^2,) Kr_i
        mk("Div", ["ph_kki", "ph_kri"], ["ph_kci"]),  # (q^2,) Kc_i
        mk("Mul", ["ph_kki", "c3"], ["ph_oi_all"]),  # (q^2,) O_i
        mk("Add", ["ph_oi_all", "c15"], ["ph_oi15"]),
        mk("Div", ["ph_oi15", "ph_sixteen"], ["ph_oi16"]),
        mk("Mul", ["ph_oi16", "ph_sixteen"], ["ph_split"]),  # (q^2,) Opad_i: the convolutions' filters
        # filter row r of pair i: r < O_i is its (o, kr, kc), row o P + the pair's (kr, kc) offset pair; a padding
        # row (never read: the planes' Gather skips it) repeats row 0
        mk("Squeeze", ["ph_opad"], ["ph_opad_s"]),
        mk("Range", ["s0", "ph_opad_s", "s1"], ["ph_r"]),  # (Opad,)
        mk("Unsqueeze", ["ph_kki", "cm1"], ["ph_kki2"]),  # (q^2, 1)
        mk("Unsqueeze", ["ph_kci", "cm1"], ["ph_kci2"]),
        mk("Unsqueeze", ["ph_oi_all", "cm1"], ["ph_oi2"]),
        mk("Div", ["ph_r", "ph_kki2"], ["ph_ro"]),  # (q^2, Opad) o
        mk("Mod", ["ph_r", "ph_kki2"], ["ph_rrem"]),
        mk("Div", ["ph_rrem", "ph_kci2"], ["ph_rkr"]),
        mk("Mod", ["ph_rrem", "ph_kci2"], ["ph_rkc"]),
        mk("Mul", ["ph_rkr", "K_col"], ["ph_s2"]),  # index into the flat pairs: i K_r K_c + kr K_c + kc
        mk("Add", ["ph_s2", "ph_rkc"], ["ph_s3"]),
        mk("Range", ["s0", "ph_qq_s", "s1"], ["ph_pairs_ar"]),
        mk("Unsqueeze", ["ph_pairs_ar", "cm1"], ["ph_pairs2"]),
        mk("Mul", ["ph_pairs2", "ph_kk"], ["ph_pair_base"]),  # (q^2, 1) i K_r K_c
        mk("Add", ["ph_s3", "ph_pair_base"], ["ph_fidx"]),
        mk("Gather", ["ph_pairs_flat", "ph_fidx"], ["ph_prow"]),  # (q^2, Opad) offset pair
        mk("Mul", ["ph_ro", "ph_P"], ["ph_obase"]),
        mk("Add", ["ph_obase", "ph_prow"], ["ph_src"]),
        mk("Less", ["ph_r", "ph_oi2"], ["ph_real"]),
        mk("Where", ["ph_real", "ph_src", "c0"], ["ph_rows_idx"]),
        # each pair's first Opad_i rows (a pair with fewer real slots than the lists' K computes fewer)
        mk("Unsqueeze", ["ph_split", "cm1"], ["ph_split2"]),
        mk("Less", ["ph_r", "ph_split2"], ["ph_keep2"]),  # (q^2, Opad)
        mk("Reshape", ["ph_keep2", "cm1"], ["ph_keep"]),
        mk("Reshape", ["ph_rows_idx", "cm1"], ["ph_rows_all"]),
        mk("Compress", ["ph_rows_all", "ph_keep"], ["ph_rows"], axis=0),  # (sum Opad_i,)
        mk("Gather", ["ph_wo", "ph_rows"], ["ph_w3p"], axis=0),  # (sum Opad_i, 9C)
        mk("Div", ["C", "ph_B"], ["ph_cb"]),
        # B_o innermost: ``ReorderInput`` of (sum Opad_i / B, B_o, 9, C) as an image of B channels (3x faster than
        # the Transpose it replaces) -> (sum Opad_i / B, (ky, kx), C/B, B_i, B_o) in its bytes (every Opad_i is
        # whole blocks: no block spans two pairs)
        mk("Concat", ["cm1", "ph_B", "c9", "C"], ["ph_w6_shape"], axis=0),
        mk("Reshape", ["ph_w3p", "ph_w6_shape"], ["ph_w6"]),
        mk("ReorderInput", ["ph_w6"], ["ph_w6t"], domain=NCHWC, channels_last=0),
        mk("Mul", ["ph_B", "ph_B"], ["ph_BB"]),
        mk("Concat", ["cm1", "c9", "ph_cb", "ph_BB"], ["ph_w4b_shape"], axis=0),
        mk("Reshape", ["ph_w6t", "ph_w4b_shape"], ["ph_w6r"]),
        mk("Transpose", ["ph_w6r"], ["ph_wk"], perm=[0, 2, 1, 3]),  # (sum Opad_i / B, C/B, (ky, kx), B_i B_o)
        mk("Concat", ["cm1", "C", "c3", "c3"], ["ph_wp_shape"], axis=0),
        mk("Reshape", ["ph_wk", "ph_wp_shape"], ["ph_wp"]),  # (sum Opad_i, C, 3, 3)
    ]


def _convs(q: int) -> onnx.GraphProto:
    """The q^2 convolutions: ``ph_x`` (blocked (N, C, h, w)) and ``ph_wp`` -> (N, q^2 * Opad, J_r, J_c) in the
    blocked layout (whole blocks per convolution: their concatenation is the blocked layout's), channels (phase
    pair, o, kr, kc, padding)."""
    p = f"ph{q}_"
    n = [mk("Split", ["ph_wp", "ph_split"], [f"{p}w{i}" for i in range(q * q)], axis=0)]
    for i in range(q * q):
        pr, pc = divmod(i, q)
        pads = [q + 1 - pr, q + 1 - pc, pr + 1, pc + 1]  # floor((n + q - 1) / q) + 1 = nb + 1 outputs
        n.append(mk("Conv", ["ph_x", f"{p}w{i}"], [f"{p}y{i}"], domain=NCHWC, pads=pads, strides=[q, q]))
    n.append(mk("Concat", [f"{p}y{i}" for i in range(q * q)], [p + "y"], axis=1))
    return make_graph(n, f"MetaUpscale_phase{q}", [], [float_out(p + "y")])


def _chain(options: list[tuple[str, object]], build, name: str) -> tuple[list[onnx.NodeProto], str]:
    """Nested ``If``s over ``options`` [(condition, key)]: the first whose condition holds (the last when none)."""
    cond, key = options[0]
    g = build(key)
    if len(options) == 1:
        return list(g.node), g.output[0].name
    inner, inner_out = _chain(options[1:], build, name)
    rest = make_graph(inner, f"{g.name}_else", [], [float_out(inner_out)])
    out = f"{name}_{key}"
    return [mk("If", [cond], [out], then_branch=g, else_branch=rest)], out


def _interleave_tree(lo: int, hi: int) -> onnx.GraphProto:
    """``ph_planes`` (N, 3*p*p, J_r, J_c) -> (N, 3, J_r*p, J_c*p): ``DepthToSpace`` (CRD) with block p, for
    ``ph_row_p`` in [lo, hi] (a binary tree of ``If``s: the block size is an attribute). Measured against
    ``Col2Im`` (p x p blocks at stride p, the same values) on these shapes, 2 threads: 0.39-0.72x its time for
    p >= 17 (x3.3 on 480 x 480: 3.9 against 9.7 ms), 0.9-1.07x for p = 4, 5, 11."""
    if lo == hi:
        out = f"ph_img{lo}"
        node = mk("DepthToSpace", ["ph_planes"], [out], blocksize=lo, mode="CRD")
        return make_graph([node], f"MetaUpscale_d2s{lo}", [], [float_out(out)])
    mid = (lo + hi) // 2
    n = [
        const(f"ph_mid{lo}_{hi}", [mid]),
        mk("LessOrEqual", ["ph_row_p", f"ph_mid{lo}_{hi}"], [f"ph_le{lo}_{hi}_1"]),
        mk("Reshape", [f"ph_le{lo}_{hi}_1", "scalar_shape"], [f"ph_le{lo}_{hi}"]),
        mk("If", [f"ph_le{lo}_{hi}"], [f"ph_img{lo}_{hi}"], then_branch=_interleave_tree(lo, mid),
           else_branch=_interleave_tree(mid + 1, hi)),
    ]  # fmt: skip
    return make_graph(n, f"MetaUpscale_d2s{lo}_{hi}", [], [float_out(f"ph_img{lo}_{hi}")])


def _phase_path(block: int) -> onnx.GraphProto:
    n = _filters()
    n += [
        # blocks per axis nb = ceil(n / q); every phase's convolution gives J = nb + 1 outputs (its pads below)
        mk("Add", ["h", "G_row"], ["ph_hq"]),
        mk("Sub", ["ph_hq", "c1"], ["ph_hq1"]),
        mk("Div", ["ph_hq1", "G_row"], ["ph_nb_r"]),
        mk("Add", ["w", "G_col"], ["ph_wq"]),
        mk("Sub", ["ph_wq", "c1"], ["ph_wq1"]),
        mk("Div", ["ph_wq1", "G_col"], ["ph_nb_c"]),
        mk("Add", ["ph_nb_r", "c1"], ["ph_nb_r1"]),  # J_r
        mk("Add", ["ph_nb_c", "c1"], ["ph_nb_c1"]),
        mk("ReorderInput", ["features"], ["ph_x"], domain=NCHWC, channels_last=0),
    ]
    for q in PHASE_PERIODS:
        n.append(mk("Reshape", [f"ph_is{q}", "scalar_shape"], [f"ph_is{q}_s"]))
    convs, conv_out = _chain([(f"ph_is{q}_s", q) for q in PHASE_PERIODS], _convs, "ph_q")
    n += convs
    n += [
        # blocked (N, q^2 Opad, J_r, J_c) to planes: each block of B channels a batch entry of ``ReorderOutput``
        # with B channels (its channel count is a static attribute; Opad is not, and a Transpose took 3.5x longer)
        mk("ReduceSum", ["ph_split"], ["ph_all"], keepdims=1),  # (1,) sum of Opad_i
        mk("Div", ["ph_all", "ph_B"], ["ph_all_b"]),
        mk("Mul", ["N", "ph_all_b"], ["ph_nb_all"]),
        mk("Concat", ["ph_nb_all", "ph_B", "ph_nb_r1", "ph_nb_c1"], ["ph_yb_shape"], axis=0),
        mk("Reshape", [conv_out, "ph_yb_shape"], ["ph_yb"]),  # (N q^2 Opad / B, B, J_r, J_c), the same bytes
        mk("ReorderOutput", ["ph_yb"], ["ph_ybt"], domain=NCHWC, channels=block, channels_last=0),
        mk("Concat", ["N", "ph_all", "ph_nb_r1", "ph_nb_c1"], ["ph_y3_shape"], axis=0),
        mk("Reshape", ["ph_ybt", "ph_y3_shape"], ["ph_y3"]),  # (N, sum Opad_i, J_r, J_c)
        # planes (phase pair, o, kr, kc) -> a period's (o, row position, column position)
        # plane of (o, t_r, t_c): base of its pair (phi_r(t_r), phi_c(t_c)) + o Kr Kc + kr Kc + kc, with that pair's
        # own slot counts
        mk("CumSum", ["ph_split", "s0"], ["ph_base"], exclusive=1),  # (q^2,)
        mk("Mul", ["ph_row_tphi", "G_col"], ["ph_tq"]),  # (p,)
        mk("Unsqueeze", ["ph_tq", "cm1"], ["ph_tq2"]),
        mk("Add", ["ph_tq2", "ph_col_tphi"], ["ph_tpair"]),  # (p, p)
        mk("Gather", ["ph_base", "ph_tpair"], ["ph_tbase"]),
        mk("Gather", ["ph_row_kphase", "ph_row_tphi"], ["ph_tkr"]),  # (p,) Kr of t_r's phase
        mk("Gather", ["ph_col_kphase", "ph_col_tphi"], ["ph_tkc"]),  # (p,)
        mk("Unsqueeze", ["ph_tkr", "cm1"], ["ph_tkr2"]),
        mk("Mul", ["ph_tkr2", "ph_tkc"], ["ph_tkk"]),  # (p, p) Kr Kc
        mk("Unsqueeze", ["ph_row_tk", "cm1"], ["ph_trk2"]),
        mk("Mul", ["ph_trk2", "ph_tkc"], ["ph_tkrkc"]),  # kr Kc
        mk("Add", ["ph_tbase", "ph_tkrkc"], ["ph_t1"]),
        mk("Add", ["ph_t1", "ph_col_tk"], ["ph_t2"]),  # (p, p)
        const("ph_o3", [0, 1, 2]),
        const("ph_u12", [1, 2]),
        mk("Unsqueeze", ["ph_o3", "ph_u12"], ["ph_o33"]),  # (3, 1, 1)
        mk("Mul", ["ph_o33", "ph_tkk"], ["ph_to"]),  # (3, p, p)
        mk("Add", ["ph_to", "ph_t2"], ["ph_pidx3"]),
        mk("Reshape", ["ph_pidx3", "cm1"], ["ph_pidx"]),
        mk("Gather", ["ph_y3", "ph_pidx"], ["ph_planes"], axis=1),  # (N, 3 p p, J_r, J_c)
    ]
    tree = _interleave_tree(PHASE_MIN_P, PHASE_MAX_P)
    n += list(tree.node)
    n += [
        mk("Concat", ["ph_row_y0", "ph_col_y0"], ["ph_start"], axis=0),
        mk("Add", ["ph_row_y0", "ph_row_n1"], ["ph_end_r"]),
        mk("Add", ["ph_col_y0", "ph_col_n1"], ["ph_end_c"]),
        mk("Concat", ["ph_end_r", "ph_end_c"], ["ph_end"], axis=0),
        const("ph_axes", [2, 3]),
        mk("Slice", [tree.output[0].name, "ph_start", "ph_end", "ph_axes"], ["ph_out"]),  # (N, 3, H, W)
    ]
    return make_graph(n, "MetaUpscale_phase", [], [float_out("ph_out")])


def not_conv(grouped: onnx.GraphProto, block: int) -> onnx.GraphProto:
    """The body's branch for plans off the convolution path: the phase path where it applies, else ``grouped``."""
    n = [const("c15", [15]), *take_condition(block)]
    n.append(mk("If", ["ph_take"], ["nc_out"], then_branch=_phase_path(block), else_branch=grouped))
    return make_graph(n, "MetaUpscale_not_conv", [], [float_out("nc_out")])
