"""Reference Meta-Upscale: the official formulation, written from ``shared/docs/official-behaviour.md``.

Every input pixel gets a ceil(r) x ceil(r) grid of slots; a slot is used when an output pixel projects
there. The feature map is repeated ceil(r)^2 times, a weight set is predicted for every slot from its own
unmerged float32 offsets, the 3x3 neighbourhoods are contracted slot by slot, and the used slots are
picked out by a mask, in output order. Slow and memory-hungry on purpose: it is the yardstick.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from metasr.runtime.projection import axis_projection, inverse_scale


def _slots(n_in: int, scale: float, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per input position, its hosted outputs' offsets in slots 0..k-1: offsets (n_in, k), used mask."""
    src, offset = axis_projection(n_in, scale)
    offsets = np.zeros((n_in, k), dtype=np.float32)
    used = np.zeros((n_in, k), dtype=bool)
    slot = 0
    for i in range(src.size):
        slot = 0 if i == 0 or src[i] != src[i - 1] else slot + 1
        offsets[src[i], slot] = offset[i]
        used[src[i], slot] = True
    return offsets, used


def oracle_upscale(features: torch.Tensor, p2w: torch.nn.Module, scale: float) -> torch.Tensor:
    """features (N, C, h, w) -> (N, 3, int(r*h), int(r*w)) without mean, the official way."""
    n, c, h, w = features.shape
    k = math.ceil(scale)
    row_off, row_used = _slots(h, scale, k)
    col_off, col_used = _slots(w, scale, k)
    # slot grid (h*k, w*k): grid row y*k + a is input row y, slot a
    pos = torch.empty(h * k, w * k, 3)
    pos[..., 0] = float(inverse_scale(scale))
    pos[..., 1] = torch.from_numpy(row_off.reshape(-1))[:, None]
    pos[..., 2] = torch.from_numpy(col_off.reshape(-1))[None, :]
    mask = torch.from_numpy(row_used.reshape(-1)[:, None] & col_used.reshape(-1)[None, :])
    weights = p2w(pos.view(-1, 3)).view(h * k * w * k, c * 9, 3)  # one weight set per slot
    # neighbourhoods (N, C*9, h, w), repeated over the ceil(r)^2 slots of every input pixel
    unfold = F.unfold(features, 3, padding=1).view(n, c * 9, h, 1, w, 1)
    repeated = unfold.expand(n, c * 9, h, k, w, k).reshape(n, c * 9, h * k * w * k)
    out = torch.einsum("nkp,pko->nop", repeated, weights)  # (N, 3, slots)
    out_h, out_w = int(row_used.sum()), int(col_used.sum())
    return out[:, :, mask.view(-1)].view(n, 3, out_h, out_w)
