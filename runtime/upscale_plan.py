"""The upscale stage's plan for one input size and scale (numpy only): the projection, its graph feeds and the
output tiles the stage runs in, as :class:`~metasr.runtime.pipeline.Pipeline` caches them per (h, w, scale,
budget), and what the largest tile holds in memory.

:func:`make_plan` picks the tiling by what runs the stage: the portable graphs take the whole output in one call
(with the graph's own hints); a TensorRT engine takes tiles inside its optimization profile
(:func:`~metasr.runtime.tiling.plan_profile_tiles`); anything else takes tiles under the memory budget
(:func:`~metasr.runtime.tiling.plan_upscale_tiles`), priced by the path the backend runs each call on: its phase
periods, whether it computes the filter table once per plan (then every tile is fed the whole table where it is
small enough: ``compact`` False), and whether it has the direct phase path (``metasr.runtime.ort_direct``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from metasr.runtime.feeds import plan_feeds, signature_hints
from metasr.runtime.memory import UpscaleCost
from metasr.runtime.phase_parts import phase_period
from metasr.runtime.projection import ProjectionPlan, project
from metasr.runtime.tiling import (
    MIN_TILE_ROWS,
    UpscaleTile,
    full_table_fits,
    plan_profile_tiles,
    plan_upscale_tiles,
    tile_bytes,
    window_feeds,
)

__all__ = ["StagePlan", "StageRunner", "make_plan", "plan_cost"]

# (plan, its feeds, its output tiles row-major, whether the tiles' offsets are compacted: ``window_feeds``)
StagePlan = tuple[ProjectionPlan, dict[str, np.ndarray], list[UpscaleTile], bool]


@dataclass(frozen=True)
class StageRunner:
    """What runs the stage, as far as its tiles depend on it."""

    portable: bool  # the portable graphs: one call, the plan computed in the graph
    profile: object | None  # a TensorRT engine's optimization profile (tiles cut to fit it), or None
    grouped_only: bool  # the backend runs the grouped path whatever the feeds (openvino)
    phase_periods: tuple[int, ...]  # the q of r = p/q the backend has the phase path for
    caches_table: bool  # it computes the filter table once per plan (the ort backend on the CPU provider)
    phase_direct: bool  # it has the direct phase path


def make_plan(
    h: int, w: int, scale: float, budget: float, channels: int, *, limits: tuple[float, float, float],
    runner: StageRunner,
) -> StagePlan:  # fmt: skip
    """The plan of an h x w input at ``scale`` under ``budget`` bytes per tile; ``limits``: the manifest's
    (scale_max, merge_tol, scale_min_exclusive)."""
    max_scale, merge_tol, min_scale = limits
    plan = project(h, w, scale, max_scale=max_scale, merge_tol=merge_tol, min_scale=min_scale)
    feeds = plan_feeds(plan)
    compact = True
    if runner.portable:  # one call for the whole output: one tile, with the graph's own hints
        for axis in ("row", "col"):
            hints = signature_hints(feeds[f"{axis}_src"], feeds[f"{axis}_idx"])
            feeds.update(zip((f"{axis}_groups", f"{axis}_slots", f"{axis}_pick"), hints, strict=True))
        tiles = [UpscaleTile(slice(0, plan.out_size[0]), slice(0, plan.out_size[1]), slice(0, h), slice(0, w))]
    elif runner.profile is not None:  # TensorRT: every tile's window and plan inside the engine's profile
        tiles = plan_profile_tiles(feeds, h, w, runner.profile)
    else:
        q = phase_period(scale, runner.phase_periods)
        # a backend that computes the filter table once per plan gets the whole table in every tile (the same
        # key each call), where it is small enough
        compact = not (runner.caches_table and full_table_fits(feeds, channels, budget))
        tiles = plan_upscale_tiles(
            feeds, h, w, channels, budget, grouped=runner.grouped_only, phase_q=q, compact_offsets=compact,
            phase_direct=runner.phase_direct,
        )  # fmt: skip
    return plan, feeds, tiles, compact


def plan_cost(stage: StagePlan, channels: int, budget: float, grouped: bool) -> UpscaleCost:
    """The tiles' largest :func:`~metasr.runtime.tiling.tile_bytes`, the tallest band and feature window (what
    :func:`~metasr.runtime.memory.plan_memory` needs)."""
    _, feeds, tiles, compact = stage
    rows = max(t.rows.stop - t.rows.start for t in tiles)
    window = max(t.in_rows.stop - t.in_rows.start for t in tiles)
    if len(tiles) > 32 and rows > min(feeds["row_src"].size, MIN_TILE_ROWS):
        # the planner kept every band of this height within the budget (it checks each one); only at its
        # smallest tiles can one exceed it: then (and for a few tiles, where it is cheap) each is counted
        return UpscaleCost(int(budget), rows, window)
    cache: dict = {}  # each band's row feeds and each column part's feeds computed once
    worst = max(
        tile_bytes(
            window_feeds(feeds, t, compact_offsets=compact, cache=cache),
            channels,
            t.in_rows.stop - t.in_rows.start,
            t.in_cols.stop - t.in_cols.start,
            grouped=grouped,
        )
        for t in tiles
    )
    return UpscaleCost(int(worst), rows, window)
