"""Host-side inputs of the upscale graph, computed from a projection plan (numpy only).

The upscale graph's output size follows from the *lengths* of ``row_src`` / ``col_src`` (no data-dependent
shapes). A tile of the output is the same graph fed with slices of the per-row / per-column arrays (and the
row and column groups recomputed for the tile).

Input positions of an axis are grouped by their *signature*, the tuple of offset indices of the outputs they
host: all input columns with one signature need the same filters. The PyTorch fast path and the ONNX body
of ``MetaUpscale`` both contract group by group, so neither computes a column offset where it is not used.
The ONNX body also groups output rows by row offset, so one filter set serves all rows of an offset.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from metasr.runtime.projection import ProjectionPlan

__all__ = [
    "UPSCALE_PLAN_INPUTS",
    "AxisGroup",
    "axis_groups",
    "column_group_feeds",
    "padded_groups",
    "plan_feeds",
    "row_group_feeds",
    "tile_feeds",
]

# name -> (dtype, shape); symbolic dims: H, W output size, P_r / P_c distinct offsets
UPSCALE_PLAN_INPUTS: dict[str, tuple[str, tuple[str | int, ...]]] = {
    "inv_scale": ("float32", (1,)),
    "row_offsets": ("float32", ("P_r",)),
    "col_offsets": ("float32", ("P_c",)),
    "row_src": ("int64", ("H",)),
    "row_idx": ("int64", ("H",)),
    "col_src": ("int64", ("W",)),
    "col_idx": ("int64", ("W",)),
    "row_group_src": ("int64", ("P_r", "M")),
    "row_pick": ("int64", ("H",)),
    "col_groups": ("int64", ("G_c", "X")),
    "col_group_offsets": ("int64", ("G_c", "K_c")),
    "col_pick": ("int64", ("W",)),
}


@dataclass(frozen=True)
class AxisGroup:
    """Input positions of one axis sharing a signature: ``inputs`` (m,), ``outputs`` (m, K), ``offsets`` (K,)."""

    inputs: np.ndarray
    outputs: np.ndarray
    offsets: np.ndarray


def axis_groups(src: np.ndarray, offset_index: np.ndarray) -> list[AxisGroup]:
    """Group the input positions hosting ``src`` (sorted, (n,)) by the offset indices they host.

    Output positions are local: 0..n-1 in the order of ``src``.
    """
    starts = np.flatnonzero(np.r_[True, src[1:] != src[:-1]])
    counts = np.diff(np.r_[starts, src.size])
    by_signature: dict[tuple[int, ...], list[int]] = {}
    for s, c in zip(starts.tolist(), counts.tolist(), strict=True):
        by_signature.setdefault(tuple(offset_index[s : s + c].tolist()), []).append(s)
    groups = []
    for signature, run_starts in by_signature.items():
        first = np.asarray(run_starts, dtype=np.int64)
        groups.append(
            AxisGroup(
                inputs=src[first],
                outputs=first[:, None] + np.arange(len(signature)),  # (m, K)
                offsets=np.asarray(signature, dtype=np.int64),
            )
        )
    return groups


def padded_groups(groups: list[AxisGroup], dummy: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stack groups into rectangular arrays, padding with input 0 whose outputs go to ``dummy``.

    Returns ``inputs`` (G, X), ``outputs`` (G, X, K) and ``offsets`` (G, K) as int64.
    """
    n_groups = len(groups)
    x_max = max(g.inputs.size for g in groups)
    k_max = max(g.offsets.size for g in groups)
    inputs = np.zeros((n_groups, x_max), dtype=np.int64)
    outputs = np.full((n_groups, x_max, k_max), dummy, dtype=np.int64)
    offsets = np.zeros((n_groups, k_max), dtype=np.int64)
    for t, g in enumerate(groups):
        m, k = g.outputs.shape
        inputs[t, :m] = g.inputs
        outputs[t, :m, :k] = g.outputs
        offsets[t, :k] = g.offsets
    return inputs, outputs, offsets


def column_group_feeds(col_src: np.ndarray, col_idx: np.ndarray) -> dict[str, np.ndarray]:
    """Input columns grouped by the column offsets they host, for the ``MetaUpscale`` body.

    ``col_groups`` (G, X): the input columns of each group (padded with column 0); ``col_group_offsets`` (G, K):
    the offsets each group's columns host, in order; ``col_pick`` (W,): each output column's position in the
    flattened (G, X, K) result. With r = p/q there are about q groups, and K is at most ceil(r) + 1.
    """
    width = col_src.size
    inputs, outputs, offsets = padded_groups(axis_groups(col_src, col_idx), dummy=width)
    pick = np.empty(width, dtype=np.int64)
    flat = outputs.reshape(-1)
    real = flat < width
    pick[flat[real]] = np.flatnonzero(real)
    return {"col_groups": inputs, "col_group_offsets": offsets, "col_pick": pick}


def row_group_feeds(row_src: np.ndarray, row_idx: np.ndarray, n_offsets: int) -> dict[str, np.ndarray]:
    """Output rows grouped by their row offset, for the ``MetaUpscale`` body.

    ``row_group_src`` (P_r, M): the source rows of each offset's output rows (padded with a valid row);
    ``row_pick`` (H,): each output row's position in the flattened (P_r, M) grouping.
    """
    order = np.argsort(row_idx, kind="stable")
    counts = np.bincount(row_idx, minlength=n_offsets)
    m = max(1, int(counts.max(initial=0)))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    slot = np.empty(row_idx.size, dtype=np.int64)
    slot[order] = np.arange(row_idx.size) - np.repeat(starts, counts)
    pick = row_idx.astype(np.int64) * m + slot
    group_src = np.full(n_offsets * m, row_src[0] if row_src.size else 0, dtype=np.int64)
    group_src[pick] = row_src
    return {"row_group_src": group_src.reshape(n_offsets, m), "row_pick": pick}


def plan_feeds(plan: ProjectionPlan) -> dict[str, np.ndarray]:
    """The plan's arrays under the upscale graph's input names (see :data:`UPSCALE_PLAN_INPUTS`)."""
    return {
        "inv_scale": np.array([plan.inv_scale], dtype=np.float32),
        "row_offsets": plan.rows.offsets.astype(np.float32),
        "col_offsets": plan.cols.offsets.astype(np.float32),
        "row_src": plan.rows.src.astype(np.int64),
        "row_idx": plan.rows.offset_index.astype(np.int64),
        "col_src": plan.cols.src.astype(np.int64),
        "col_idx": plan.cols.offset_index.astype(np.int64),
        **row_group_feeds(plan.rows.src, plan.rows.offset_index, plan.rows.offsets.size),
        **column_group_feeds(plan.cols.src, plan.cols.offset_index),
    }


def tile_feeds(feeds: dict[str, np.ndarray], rows: slice, cols: slice) -> dict[str, np.ndarray]:
    """Feeds for the output tile ``[rows, cols]``: the per-row / per-column arrays sliced, the rest shared."""
    out = dict(feeds)
    for name in ("row_src", "row_idx"):
        out[name] = feeds[name][rows]
    if rows != slice(None):  # the row groups are recomputed for the tile's rows
        out.update(row_group_feeds(out["row_src"], out["row_idx"], feeds["row_offsets"].size))
    for name in ("col_src", "col_idx"):
        out[name] = feeds[name][cols]
    if cols != slice(None):  # the column groups are recomputed for the tile's columns
        out.update(column_group_feeds(out["col_src"], out["col_idx"]))
    return out
