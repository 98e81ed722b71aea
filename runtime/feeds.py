"""Host-side inputs of the upscale graph, computed from a projection plan (numpy only).

The upscale graph's output size follows from the *lengths* of ``row_src`` / ``col_src`` (no data-dependent
shapes). A tile of the output is the same graph fed with slices of the four per-row / per-column arrays.
"""

from __future__ import annotations

import numpy as np
from metasr.runtime.projection import ProjectionPlan

__all__ = ["UPSCALE_PLAN_INPUTS", "plan_feeds", "tile_feeds"]

# name -> (dtype, shape); symbolic dims: H, W output size, P_r / P_c distinct offsets
UPSCALE_PLAN_INPUTS: dict[str, tuple[str, tuple[str | int, ...]]] = {
    "inv_scale": ("float32", (1,)),
    "row_offsets": ("float32", ("P_r",)),
    "col_offsets": ("float32", ("P_c",)),
    "row_src": ("int64", ("H",)),
    "row_idx": ("int64", ("H",)),
    "col_src": ("int64", ("W",)),
    "col_idx": ("int64", ("W",)),
}


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
    }


def tile_feeds(feeds: dict[str, np.ndarray], rows: slice, cols: slice) -> dict[str, np.ndarray]:
    """Feeds for the output tile ``[rows, cols]``: the per-row / per-column arrays sliced, the rest shared."""
    out = dict(feeds)
    for name in ("row_src", "row_idx"):
        out[name] = feeds[name][rows]
    for name in ("col_src", "col_idx"):
        out[name] = feeds[name][cols]
    return out
