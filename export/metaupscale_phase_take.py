"""When the ``MetaUpscale`` body's phase path applies (:mod:`metasr.export.metaupscale_phase`): ``ph_take``, the
variant's test of the host's hints, in ONNX nodes, and the limits it checks. The runtime ports the same test to
numpy (:func:`metasr.runtime.tile_cost.phase_layouts`, held to this one by ``tests/test_tile_cost.py``).

Per axis (:func:`_axis_condition`): q groups of one-pixel blocks, one per input phase (each group's phase is its
first member's row mod q, a permutation of 0..q-1); every output's member on its group's phase and its slot
within the group's own count; the outputs exactly the periodic layout (block + 1) p + (the phase's first slot) +
slot, minus the first output's position. Then (:func:`take_condition`): G_r = G_c = q in :data:`PHASE_PERIODS`,
p_r = p_c in [PHASE_MIN_P, PHASE_MAX_P], 3 K_r K_c <= :data:`PHASE_MAX_O`, C in whole channel blocks, N >= 1 and
at least :data:`PHASE_MIN_PIXELS` input pixels.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from metasr.export.metaupscale_nodes import all_of, any_of, const, mk

if TYPE_CHECKING:
    import onnx

__all__ = ["PHASE_MAX_O", "PHASE_MAX_P", "PHASE_MIN_P", "PHASE_MIN_PIXELS", "PHASE_PERIODS", "take_condition"]

PHASE_PERIODS = (3, 4, 5, 10)  # q: x4/3, x1.25 ... x3.75, x1.2 ... x3.8, x1.1 ... x3.9 (one branch of q^2 convs each)
PHASE_MAX_O = 48  # 3*K_r*K_c per phase pair: K <= 4 (every r = p/q up to x4 without float32 exceptions)
PHASE_MIN_P, PHASE_MAX_P = 4, 40  # periods the interleave has a branch for: p > q >= 3; x4 (the default largest
# scale) at q = 10
PHASE_MIN_PIXELS = 1024  # below: the grouped path (measured: even 24 x 24 is not slower; a margin)


def _axis_condition(axis: str) -> list[onnx.NodeProto]:
    """Per axis: ``ph_{axis}_ok`` (1,) the phase layout holds; the period ``ph_{axis}_p`` (1,), its first
    row's position ``ph_{axis}_y0`` (1,), each group's phase and each phase's group, and the plane-index part of
    every position in a period, ``ph_{axis}_tphi`` / ``ph_{axis}_tk`` (p,) (phase and slot)."""
    v = lambda name: f"ph_{axis}_{name}"  # noqa: E731
    q, a = f"G_{axis}", f"{axis}_"
    return [
        # each group's phase: its first member's row mod q; a permutation of 0..q-1
        mk("Gather", [a + "in", "c0"], [v("in0")], axis=1),  # (G, 1)
        mk("Reshape", [v("in0"), "cm1"], [v("first")]),  # (G,)
        mk("Mod", [v("first"), q], [v("phase")]),  # (G,)
        mk("Squeeze", [q], [v("qs")]),
        mk("Range", ["s0", v("qs"), "s1"], [v("ar")]),  # (q,)
        mk("Unsqueeze", [v("phase"), "cm1"], [v("phase2")]),  # (G, 1)
        mk("Equal", [v("phase2"), v("ar")], [v("hot_b")]),  # (G, q): group g has phase j
        mk("Cast", [v("hot_b")], [v("hot")], to=7),
        mk("ReduceSum", [v("hot"), "c0"], [v("count")], keepdims=0),  # (q,) groups per phase
        mk("ReduceMin", [v("count")], [v("count_min")], keepdims=1),
        mk("ReduceMax", [v("count")], [v("count_max")], keepdims=1),
        mk("Equal", [v("count_min"), "c1"], [v("once_lo")]),
        mk("Equal", [v("count_max"), "c1"], [v("once_hi")]),
        mk("Cast", [v("hot_b")], [v("hot_f")], to=1),
        mk("ArgMax", [v("hot_f")], [v("gop")], axis=0, keepdims=0),  # (q,) each phase's group
        # every output position's member lies on its group's phase; its block
        mk("Gather", [v("phase"), a + "a"], [v("pos_phase")]),  # (H,)
        mk("Sub", [a + "member_in", v("pos_phase")], [v("rel")]),
        mk("Mod", [v("rel"), q], [v("off_phase")]),
        mk("ReduceMax", [v("off_phase")], [v("off_max")], keepdims=1),
        mk("Equal", [v("off_max"), "c0"], [v("on_phase")]),
        mk("Div", [v("rel"), q], [v("blk")]),  # (H,)
        # each group's slot count (a shorter list repeats its first entry), per phase, their starts in a period
        mk("Gather", [a + "slots", "c0"], [v("slot0")], axis=1),  # (G, 1)
        mk("Equal", [a + "slots", v("slot0")], [v("rep_b")]),
        mk("Not", [v("rep_b")], [v("new_b")]),
        mk("Cast", [v("new_b")], [v("new")], to=7),
        mk("ReduceSum", [v("new"), "c1"], [v("extra")], keepdims=0),
        mk("Add", [v("extra"), "c1"], [v("kt")]),  # (G,)
        mk("Gather", [v("kt"), a + "a"], [v("pos_kt")]),
        mk("Less", [a + "k", v("pos_kt")], [v("k_in")]),
        mk("Cast", [v("k_in")], [v("k_in_i")], to=7),
        mk("ReduceMin", [v("k_in_i")], [v("k_in_min")], keepdims=1),
        mk("Equal", [v("k_in_min"), "c1"], [v("slots_ok")]),
        mk("Gather", [v("kt"), v("gop")], [v("kphase")]),  # (q,)
        mk("CumSum", [v("kphase"), "s0"], [v("cum")], exclusive=1),  # (q,) first position of each phase
        mk("ReduceSum", [v("kphase"), "c0"], [v("p")], keepdims=1),  # (1,) the period
        # output position y lies at (block + 1) * p + cum[phase] + slot: that minus y is one constant, y0
        mk("Gather", [v("cum"), v("pos_phase")], [v("pos_cum")]),
        mk("Add", [v("pos_cum"), a + "k"], [v("t")]),
        mk("Add", [v("blk"), "c1"], [v("blk1")]),
        mk("Mul", [v("blk1"), v("p")], [v("base")]),
        mk("Add", [v("base"), v("t")], [v("Y")]),
        mk("Shape", [a + "pick"], [v("n1")]),
        mk("Squeeze", [v("n1")], [v("n")]),
        mk("Range", ["s0", v("n"), "s1"], [v("y")]),
        mk("Sub", [v("Y"), v("y")], [v("dev")]),
        mk("Gather", [v("dev"), "c0"], [v("y0")]),
        mk("Sub", [v("dev"), v("y0")], [v("dev0")]),
        mk("Abs", [v("dev0")], [v("dev_abs")]),
        mk("ReduceMax", [v("dev_abs")], [v("dev_max")], keepdims=1),
        mk("Equal", [v("dev_max"), "c0"], [v("periodic")]),
        *all_of([v("once_lo"), v("once_hi"), v("on_phase"), v("slots_ok"), v("periodic")], v("ok")),
        # each position t of a period: its phase (the phases ending at or before t) and slot
        mk("Squeeze", [v("p")], [v("ps")]),
        mk("Range", ["s0", v("ps"), "s1"], [v("tt")]),  # (p,)
        mk("Add", [v("cum"), v("kphase")], [v("end")]),  # (q,)
        mk("Unsqueeze", [v("tt"), "cm1"], [v("tt2")]),
        mk("GreaterOrEqual", [v("tt2"), v("end")], [v("past_b")]),  # (p, q)
        mk("Cast", [v("past_b")], [v("past")], to=7),
        mk("ReduceSum", [v("past"), "c1"], [v("tphi")], keepdims=0),  # (p,)
        mk("Gather", [v("cum"), v("tphi")], [v("tcum")]),
        mk("Sub", [v("tt"), v("tcum")], [v("tk")]),  # (p,)
    ]


def take_condition(block: int) -> list[onnx.NodeProto]:
    """``ph_take``: a rank-0 bool, the phase path applies (module docstring)."""
    n = _axis_condition("row") + _axis_condition("col")
    n += [const(f"ph_q{q}", [q]) for q in PHASE_PERIODS]
    n += [mk("Equal", ["G_row", f"ph_q{q}"], [f"ph_is{q}"]) for q in PHASE_PERIODS]
    n += any_of([f"ph_is{q}" for q in PHASE_PERIODS], "ph_known_q")
    n += [
        mk("Equal", ["row_s", "s1"], ["ph_unit_r"]),
        mk("Equal", ["col_s", "s1"], ["ph_unit_c"]),
        mk("And", ["ph_unit_r", "ph_unit_c"], ["ph_unit0"]),
        mk("Unsqueeze", ["ph_unit0", "c0"], ["ph_unit"]),
        mk("Equal", ["G_row", "G_col"], ["ph_same_q"]),
        mk("Equal", ["ph_row_p", "ph_col_p"], ["ph_same_p"]),
        const("ph_max_p", [PHASE_MAX_P]),
        mk("LessOrEqual", ["ph_row_p", "ph_max_p"], ["ph_p_le"]),
        const("ph_min_p", [PHASE_MIN_P]),
        mk("GreaterOrEqual", ["ph_row_p", "ph_min_p"], ["ph_p_ge"]),
        mk("And", ["ph_p_le", "ph_p_ge"], ["ph_small_p"]),  # one of the interleave tree's periods
        mk("Mul", ["K_row", "K_col"], ["ph_kk"]),
        mk("Mul", ["ph_kk", "c3"], ["ph_o"]),  # (1,) output channels per phase pair, (o, kr, kc)
        const("ph_max_o", [PHASE_MAX_O]),
        mk("LessOrEqual", ["ph_o", "ph_max_o"], ["ph_few_o"]),
        const("ph_B", [block]),
        mk("Mod", ["C", "ph_B"], ["ph_Cm"]),
        mk("Equal", ["ph_Cm", "c0"], ["ph_whole"]),
        mk("GreaterOrEqual", ["N", "c1"], ["ph_batch"]),
        mk("Mul", ["h", "w"], ["ph_hw"]),
        const("ph_min_px", [PHASE_MIN_PIXELS]),
        mk("GreaterOrEqual", ["ph_hw", "ph_min_px"], ["ph_big"]),
        *all_of(
            [
                "ph_unit",
                "ph_same_q",
                "ph_known_q",
                "ph_row_ok",
                "ph_col_ok",
                "ph_same_p",
                "ph_small_p",
                "ph_few_o",
                "ph_whole",
                "ph_big",
                "ph_batch",
            ],
            "ph_take1",
        ),
        mk("Reshape", ["ph_take1", "scalar_shape"], ["ph_take"]),
    ]
    return n
