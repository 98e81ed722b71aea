"""Host-side inputs of the upscale graph, computed from a projection plan (numpy only).

The upscale graph's output size follows from the *lengths* of ``row_src`` / ``col_src`` (no data-dependent
shapes). A tile of the output is the same graph fed with slices of the per-row / per-column arrays and the
grouping hints recomputed for the tile.

Grouping hints (inputs 6-11 of ``MetaUpscale``; rows shown, columns alike). An input row *hosts* the output
rows whose source it is (sources never decrease along the output). The hosting rows are cut into *blocks* of s
consecutive rows (s = 1, or 2 where that makes all blocks alike), blocks are put into *groups*, and each group
has *slots*: (row within the block, row offset) pairs covering every output row its blocks host. All pixels of a
(row group, column group) pair then need the filters of the same slot pairs, and one matrix product (or, with
one group per axis, one convolution) serves them:

``row_groups``  int64 (G_r, L_r)  per group, per member block: an output row hosted by the block's first row
                (so the block starts at input row ``row_src[row_groups[a, l]]``); a group shorter than L_r
                repeats its first entry.
``row_slots``   int64 (G_r, K_r)  per group, per slot: an output row with that slot's offset and row within its
                block (so the slot's offset index is ``row_idx[row_slots[a, k]]`` and its row within the block
                ``d[a, k] = row_src[row_slots[a, k]] - row_src[row_groups[a', l']]``, (a', l') being the member
                that ``row_pick`` assigns that output row to); a group with fewer slots repeats its first entry.
``row_pick``    int64 (H,)        output row i's entry ``(a * L_r + l) * K_r + k`` in the (G_r, L_r, K_r) grid.

The block size is ``s = 1 + max d`` (1 when every slot lies in its block's first row).

*Valid hints* (all the op needs; :func:`check_hints`): every value lies in [0, H), and for every output row i
with ``a, l, k`` decoded from ``row_pick[i]``: ``row_src[i] == row_src[row_groups[a, l]] + d[a, k]`` and
``row_idx[i] == row_idx[row_slots[a, k]]``. Any valid grouping gives the same output; the hints refer to output
positions, so a group's rows and slot offsets cannot contradict inputs 2-5 (and the op reads all of them).

The grouping this module computes (:func:`axis_hints`, exactly):

1. Blocks of s rows start at the first hosting row; s = 1 unless step 2 then keeps more than one group and
   s = 2 keeps exactly one (r = p/2: x1.5, x2.5, x3.5). A block's *signature* is the tuple of its output rows'
   (row within the block, offset index) keys, in output order; blocks with equal signatures form a signature
   group (ordered by first appearance).
2. K = the longest signature. Signature groups are visited by decreasing number of blocks (ties: first
   appearance). A group joins a kept group that has at least twice its blocks, shares at least one key with
   it, and whose slot list extended by the group's other keys (appended in signature order) stays within K:
   of those, the one sharing the most keys (ties: the first kept). Otherwise it is kept, its signature being
   its slot list. (The float32 "exception" rows of x2.3, x2.7, x3.7, ... form small groups that differ from
   their phase's group by one offset; this puts them into that group instead of padding a group of their own.)
3. Each kept group's blocks, in increasing order, are cut into chunks of L blocks (the last may be shorter), L
   from :func:`chunk_length`; every chunk is a group of the hints, with its kept group's slots. Members are
   represented by the first output row of the block, slots by the first output row (of all) with that key;
   K = the longest slot list; shorter lists repeat their first entry.

For r = p/q (q > 2) there are about q groups of h/q rows each, K = ceil(r) or ceil(r) + 1; an integer scale
gives one group of all rows with its r offsets, r = p/2 one group of 2-row blocks with p slots.
"""

from __future__ import annotations

import numpy as np
from metasr.runtime.projection import ProjectionPlan, inverse_scale, output_size

__all__ = [
    "HINT_NAMES",
    "UPSCALE_PLAN_INPUTS",
    "axis_feeds",
    "axis_hints",
    "block_rows",
    "check_hints",
    "chunk_length",
    "conv_path",
    "part_feeds",
    "plan_feeds",
    "portable_targets",
    "signature_hints",
    "slot_rows",
    "tile_feeds",
]

# name -> (dtype, shape); symbolic dims: H, W output size, P_r / P_c distinct offsets, G / L / K the grouping
UPSCALE_PLAN_INPUTS: dict[str, tuple[str, tuple[str | int, ...]]] = {
    "inv_scale": ("float32", (1,)),
    "row_offsets": ("float32", ("P_r",)),
    "col_offsets": ("float32", ("P_c",)),
    "row_src": ("int64", ("H",)),
    "row_idx": ("int64", ("H",)),
    "col_src": ("int64", ("W",)),
    "col_idx": ("int64", ("W",)),
    "row_groups": ("int64", ("G_r", "L_r", "S_r")),
    "row_slots": ("int64", ("G_r", "K_r")),
    "row_pick": ("int64", ("H",)),
    "col_groups": ("int64", ("G_c", "L_c", "S_c")),
    "col_slots": ("int64", ("G_c", "K_c")),
    "col_pick": ("int64", ("W",)),
}
HINT_NAMES = ("row_groups", "row_slots", "row_pick", "col_groups", "col_slots", "col_pick")


def _signature_groups(block: np.ndarray, key: np.ndarray) -> list[tuple[list[int], list[int]]]:
    """Steps 1-2 of the module docstring: ``[(slot keys, first output position of each member block), ...]``."""
    starts = np.flatnonzero(np.r_[True, block[1:] != block[:-1]])
    ends = np.r_[starts[1:], block.size]
    by_signature: dict[tuple[int, ...], list[int]] = {}
    for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
        by_signature.setdefault(tuple(key[s:e].tolist()), []).append(s)
    k_max = max(len(sig) for sig in by_signature)
    kept: list[tuple[list[int], list[int]]] = []
    holders: dict[int, list[int]] = {}  # slot key -> the kept groups whose slots hold it
    for sig, runs in sorted(by_signature.items(), key=lambda item: -len(item[1])):  # stable: ties in order
        shared: dict[int, int] = {}
        for o in sig:
            for g in holders.get(o, ()):
                shared[g] = shared.get(g, 0) + 1
        fits = [
            (-n, g) for g, n in shared.items()
            if n == len(sig) or (len(kept[g][1]) >= 2 * len(runs) and len(kept[g][0]) + len(sig) - n <= k_max)
        ]  # fmt: skip
        if fits:
            g = min(fits)[1]  # the most shared slots, then the first kept
            slots = kept[g][0]
            for o in sig:
                if o not in slots:
                    slots.append(o)
                    holders.setdefault(o, []).append(g)
            kept[g][1].extend(runs)
        else:
            for o in sig:
                holders.setdefault(o, []).append(len(kept))
            kept.append((list(sig), list(runs)))
    return kept


CHUNK_COST = 32  # a chunk costs about as much as this many padded members (its batch entries and filter copies)


def chunk_length(sizes: list[int]) -> int:
    """Step 3's L for groups of these sizes: the L in 1..max(sizes) minimising ``sum(ceil(m / L)) * (L +
    CHUNK_COST)`` (ties: the largest).

    >>> chunk_length([26, 26, 25]), chunk_length([300, 200, 100, 100]), chunk_length([256])
    (26, 100, 256)
    """
    m = np.asarray(sizes, dtype=np.int64)
    lengths = np.arange(1, int(m.max()) + 1)
    cost = (-(-m[None, :] // lengths[:, None])).sum(axis=1) * (lengths + CHUNK_COST)
    return int(lengths[len(cost) - 1 - np.argmin(cost[::-1])])


def _grouping(src: np.ndarray, idx: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray, list]:
    """Blocks of ``size`` rows from the first source row, each output's slot key ``row in block * P + offset``,
    and the kept groups of :func:`_signature_groups`."""
    rel = src - src[0]
    key = (rel % size) * (int(idx.max()) + 1) + idx
    block = rel // size
    return block, key, _signature_groups(block, key)


def block_rows(src: np.ndarray, idx: np.ndarray) -> int:
    """Step 1's block size for output positions with sources ``src`` and offset indices ``idx``: 2 where blocks of
    one row keep several groups and blocks of two keep one (r = p/2), else 1."""
    src, idx = np.asarray(src, dtype=np.int64), np.asarray(idx, dtype=np.int64)
    if src.size == 0 or len(_grouping(src, idx, 1)[2]) == 1:
        return 1
    return 2 if len(_grouping(src, idx, 2)[2]) == 1 else 1


def axis_hints(
    src: np.ndarray, idx: np.ndarray, block: int | None = None, min_groups: int = 1
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The grouping hints of one axis: ``groups`` (G, L, s), ``slots`` (G, K), ``pick`` (n,) as int64 (see the
    module docstring) for output positions with sources ``src`` (non-decreasing) and offset indices ``idx``.

    ``block``: the block size s (default: :func:`block_rows`). ``min_groups``: at least this many groups (1 or
    2; a second group repeating the first one's first member is added where needed), which keeps a tile of a
    plan that the body computes by matrix products on that path."""
    src, idx = np.asarray(src, dtype=np.int64), np.asarray(idx, dtype=np.int64)
    size = block or block_rows(src, idx)
    if src.size == 0:
        return np.zeros((min_groups, 1, size), np.int64), np.zeros((min_groups, 1), np.int64), np.zeros(0, np.int64)
    block_of, key, kept = _grouping(src, idx, size)
    length = chunk_length([len(members) for _, members in kept])
    chunks = [(slots, members[j : j + length]) for slots, runs in kept for members in [sorted(runs)]
              for j in range(0, len(members), length)]  # fmt: skip
    duplicate = len(chunks) < min_groups
    if duplicate:
        chunks.append(chunks[0])  # never picked: keeps the hints on the grouped path
    k = max(len(slots) for slots, _ in chunks)
    n_keys = int(key.max()) + 1
    first_with = np.full(n_keys, -1, dtype=np.int64)
    first_with[key[::-1]] = np.arange(key.size - 1, -1, -1)  # the first output position of every slot key
    new_block = np.r_[True, block_of[1:] != block_of[:-1]]
    run_of = np.cumsum(new_block) - 1  # (n,) the member block of each output position
    run_start = np.flatnonzero(new_block)
    # per block, per row of the block: its first output position (the block's first entry where it hosts none)
    row_first = np.full((run_start.size, size), -1, dtype=np.int64)
    sub = (src - src[0]) % size
    row_first[run_of[::-1], sub[::-1]] = np.arange(src.size - 1, -1, -1)
    row_first = np.where(row_first < 0, run_start[:, None], row_first)
    groups = np.empty((len(chunks), length, size), dtype=np.int64)
    slots_out = np.empty((len(chunks), k), dtype=np.int64)
    chunk_of_run = np.empty(run_start.size, dtype=np.int64)
    member_of_run = np.empty_like(chunk_of_run)
    keys, positions = [], []
    for a, (slots, members) in enumerate(chunks):
        runs = run_of[members]
        groups[a, : len(members)] = row_first[runs]
        groups[a, len(members) :] = row_first[runs[0]]
        slots_out[a, : len(slots)] = first_with[slots]
        slots_out[a, len(slots) :] = first_with[slots[0]]
        if not (duplicate and a == len(chunks) - 1):
            chunk_of_run[runs] = a
            member_of_run[runs] = np.arange(len(members))
        keys.append(a * n_keys + np.asarray(slots, dtype=np.int64))
        positions.append(np.arange(len(slots)))
    flat_key, pos = np.concatenate(keys), np.concatenate(positions)
    order = np.argsort(flat_key, kind="stable")
    chunk = chunk_of_run[run_of]
    slot = pos[order][np.searchsorted(flat_key[order], chunk * n_keys + key)]
    pick = (chunk * length + member_of_run[run_of]) * k + slot
    return groups, slots_out, pick


def portable_targets(form: str, h: int, w: int, scale: float) -> dict[str, np.ndarray]:
    """A portable graph's target inputs (docs/portable.md) for an h x w input at ``scale``: ``scale`` float64 []
    (``form="scale"``), or ``out_size`` int64 [2] = (int(scale * h), int(scale * w)) and ``inv_scale`` float32
    [1] = float32(1 / scale), both in float64 arithmetic (``form="inv"``)."""
    if form == "inv":
        size = np.array(output_size(h, w, scale), dtype=np.int64)
        return {"out_size": size, "inv_scale": np.array([inverse_scale(scale)], dtype=np.float32)}
    if form != "scale":
        raise ValueError(f"form must be 'scale' or 'inv', got {form!r}")
    return {"scale": np.array(scale, dtype=np.float64)}


def signature_hints(src: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The simpler grouping hints the portable graphs compute in-graph (:mod:`metasr.export.portable_plan`), bit for
    bit: blocks of one input row; blocks whose hosted outputs have equal offset indices form a group (groups in
    lexicographic order of those signatures, members in row order); no merging, no chunking. Returns
    ``groups`` (G, L, 1), ``slots`` (G, K), ``pick`` (n,) as :func:`axis_hints` does."""
    src, idx = np.asarray(src, dtype=np.int64), np.asarray(idx, dtype=np.int64)
    n = src.size
    _, first, block, counts = np.unique(src, return_index=True, return_inverse=True, return_counts=True)
    k, nb, ks = int(counts.max()), first.size, np.arange(int(counts.max()))
    sig = np.where(ks < counts[:, None], idx[np.minimum(first[:, None] + ks, n - 1)], -1)  # (B, K)
    _, gfirst, group, gcounts = np.unique(sig, axis=0, return_index=True, return_inverse=True, return_counts=True)
    group, length = group.reshape(-1), int(gcounts.max())
    order = np.argsort(group * nb + np.arange(nb))
    rank = np.empty(nb, dtype=np.int64)
    rank[order] = np.arange(nb) - np.r_[0, np.cumsum(gcounts)[:-1]][group[order]]
    lead = first[gfirst]
    members = np.repeat(lead[:, None], length, axis=1).reshape(-1)
    members[group * length + rank] = first
    slots = np.where(ks < counts[gfirst][:, None], lead[:, None] + ks, lead[:, None])
    pick = (group[block] * length + rank[block]) * k + np.arange(n) - first[block]
    return members.reshape(-1, length, 1), slots.astype(np.int64), pick.astype(np.int64)


def slot_rows(src: np.ndarray, groups: np.ndarray, slots: np.ndarray, pick: np.ndarray) -> np.ndarray:
    """``d`` (G, K): each slot's row within its block (module docstring), from the hints of one axis."""
    length, k = groups.shape[1], slots.shape[1]
    rep = pick[slots]
    return src[slots] - src[groups[rep // (length * k), (rep // k) % length, 0]]


def conv_path(feeds: dict[str, np.ndarray]) -> bool:
    """Whether the ``MetaUpscale`` body takes its convolution path for these feeds (the same test as the body's:
    one group per axis, equal block sizes of 1 or 2, every member block starting on the block grid of its window
    (a multiple of s), and the output columns one run of the (block column, K_c) layout)."""
    runs = []
    for axis in ("row", "col"):
        groups, slots, pick = (feeds[f"{axis}_{n}"] for n in ("groups", "slots", "pick"))
        size = groups.shape[2]
        first = feeds[f"{axis}_src"][groups[0, :, 0]]
        if groups.shape[0] != 1 or not pick.size or np.any(first % size):
            return False
        k = slots.shape[1]
        runs.append(first[(pick // k) % groups.shape[1]] // size * k + pick % k)
    same = feeds["row_groups"].shape[2] == feeds["col_groups"].shape[2] <= 2
    return same and bool(np.all(runs[1] - runs[1][0] == np.arange(runs[1].size)))


def check_hints(feeds: dict[str, np.ndarray]) -> None:
    """Raise ``ValueError`` unless the grouping hints in ``feeds`` are valid for its ``*_src`` / ``*_idx``
    (the module docstring's definition)."""
    for axis in ("row", "col"):
        src, idx = feeds[f"{axis}_src"], feeds[f"{axis}_idx"]
        groups, slots, pick = feeds[f"{axis}_groups"], feeds[f"{axis}_slots"], feeds[f"{axis}_pick"]
        n = src.size
        if groups.ndim != 3 or slots.ndim != 2 or groups.shape[0] != slots.shape[0] or pick.shape != (n,):
            raise ValueError(f"{axis} hints have inconsistent shapes {groups.shape}, {slots.shape}, {pick.shape}")
        if not n:
            continue
        for name, a in ((f"{axis}_groups", groups), (f"{axis}_slots", slots)):
            if a.min() < 0 or a.max() >= n:
                raise ValueError(f"{name} must lie in [0, {n})")
        length, k = groups.shape[1], slots.shape[1]
        if pick.min() < 0 or pick.max() >= groups.shape[0] * length * k:
            raise ValueError(f"{axis}_pick must lie in [0, {groups.shape[0] * length * k})")
        d = slot_rows(src, groups, slots, pick)
        a, m, s = pick // (length * k), (pick // k) % length, pick % k
        if d.min() < 0 or d.max() >= groups.shape[2] or not np.array_equal(src[groups[a, m, 0]] + d[a, s], src):
            raise ValueError(f"{axis}_pick sends an output {axis} to a member or slot of another source")
        if not np.array_equal(idx[slots[a, s]], idx):
            raise ValueError(f"{axis}_pick sends an output {axis} to a slot of another offset")


def axis_feeds(
    axis: str, src: np.ndarray, idx: np.ndarray, block: int | None = None, min_groups: int = 1
) -> dict[str, np.ndarray]:
    """``{axis}_src``, ``{axis}_idx`` and their grouping hints (``axis`` is "row" or "col") as upscale feeds
    (``block``, ``min_groups``: see :func:`axis_hints`)."""
    groups, slots, pick = axis_hints(src, idx, block, min_groups)
    src, idx = np.asarray(src, dtype=np.int64), np.asarray(idx, dtype=np.int64)
    arrays = {"src": src, "idx": idx, "groups": groups, "slots": slots, "pick": pick}
    return {f"{axis}_{name}": a for name, a in arrays.items()}


def plan_feeds(plan: ProjectionPlan) -> dict[str, np.ndarray]:
    """The plan's arrays under the upscale graph's input names (see :data:`UPSCALE_PLAN_INPUTS`)."""
    rows, cols = plan.rows, plan.cols
    return {
        "inv_scale": np.array([plan.inv_scale], dtype=np.float32),
        "row_offsets": rows.offsets.astype(np.float32),
        "col_offsets": cols.offsets.astype(np.float32),
        **axis_feeds("row", rows.src, rows.offset_index),
        **axis_feeds("col", cols.src, cols.offset_index),
    }


def part_feeds(
    feeds: dict[str, np.ndarray], axis: str, part: slice, shift: int = 0, idx: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """One axis' feeds for the output positions ``part`` of a plan's ``feeds``, sources moved by ``-shift`` (into
    a feature window) and offset indices ``idx`` (default: the plan's). The hints keep the plan's block size and,
    unless the plan takes the convolution path (:func:`conv_path`), at least two groups: every part of a plan is
    computed by the same path with the same products. Tiles equal the untiled result to float32 rounding, not
    always bit for bit: ONNX Runtime's MatMul and Conv pick their kernels (and so the summation order) by the
    matrix sizes, which differ between a tile and the whole plan (tests/test_properties.py)."""
    min_groups = 1 if conv_path(feeds) else 2
    idx = feeds[f"{axis}_idx"][part] if idx is None else idx
    return axis_feeds(axis, feeds[f"{axis}_src"][part] - shift, idx, feeds[f"{axis}_groups"].shape[2], min_groups)


def tile_feeds(feeds: dict[str, np.ndarray], rows: slice, cols: slice) -> dict[str, np.ndarray]:
    """Feeds for the output tile ``[rows, cols]`` of a plan's ``feeds`` (sources in image coordinates): the
    per-row / per-column arrays sliced, their hints recomputed (:func:`part_feeds`), the rest shared."""
    out = dict(feeds)
    for axis, part in (("row", rows), ("col", cols)):
        if part != slice(None):
            out.update(part_feeds(feeds, axis, part))
    return out
