"""Every branch of the ``MetaUpscale`` body's convolution path against its grouped path, in ONNX Runtime.

The body holds two formulations of the same product (``export/metaupscale_body.py``): the convolution path (one
``Conv``, then a ``DepthToSpace`` per slot count in ``D2S_SLOTS`` or two transposes, then a ``Slice`` of rows
and columns or a ``Gather`` of rows) and the grouped path (a patch matrix and a batched ``MatMul``). The grouped
path is the oracle here: the same graph with its path ``If`` replaced by the grouped branch (what the openvino
backend runs), fed the same plan. Plans are chosen to reach each branch: integer and half-integer scales (the
``DepthToSpace`` for K = 2 ... 7, as the whole output or sliced), narrow tiles whose slot counts differ per axis
(the transposes), and valid hints whose row slots are listed in another order (rows not one run: the row
``Gather``).
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
import onnx
import onnx.inliner
import onnxruntime as ort
from metasr.export.metaupscale_body import D2S_SLOTS
from metasr.runtime.feeds import check_hints, conv_path, plan_feeds, tile_feeds
from metasr.runtime.openvino_backend import _take_grouped_path
from metasr.runtime.projection import project


def grouped_model(raw: bytes) -> bytes:
    """The upscale graph ``raw`` forced onto its grouped path (batched matrix products, no convolution): the
    oracle of the convolution, phase and direct paths."""
    grouped = onnx.inliner.inline_local_functions(onnx.load_from_string(raw))
    _take_grouped_path(grouped.graph)
    return grouped.SerializeToString()


def cpu_session(model: bytes) -> ort.InferenceSession:
    return ort.InferenceSession(model, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def sessions(bundled_artifacts):
    """(the upscale graph as exported, the same graph forced onto the grouped path)."""
    raw = (bundled_artifacts / "upscale.onnx").read_bytes()
    return cpu_session(raw), cpu_session(grouped_model(raw))


def _permute_row_slots(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The same plan with each row group's slots listed in reverse order (valid hints, rows no longer a run)."""
    out = dict(feeds)
    k = feeds["row_slots"].shape[1]
    out["row_slots"] = feeds["row_slots"][:, ::-1].copy()
    pick = feeds["row_pick"]
    out["row_pick"] = pick - pick % k + (k - 1 - pick % k)
    check_hints(out)
    return out


def _case(name: str) -> tuple[dict[str, np.ndarray], int, int]:
    h, w = 23, 19
    scale = {"x2": 2.0, "x3": 3.0, "x4": 4.0, "x1.5": 1.5, "x2.5": 2.5, "x3.5": 3.5}.get(name.split()[0], 2.0)
    feeds = plan_feeds(project(h, w, scale))
    if name == "narrow tile":  # one output column: K_c = 1, K_r = 2 (the transposes)
        feeds = tile_feeds(feeds, slice(4, 20), slice(6, 7))
    if name == "tile x2":  # K_r = K_c = 2 inside the image: the DepthToSpace, then the Slice
        feeds = tile_feeds(feeds, slice(4, 20), slice(6, 16))
    if name == "one pixel":  # K_r = K_c = 1: no DepthToSpace branch (the transposes)
        feeds = tile_feeds(feeds, slice(6, 7), slice(6, 7))
    if name == "row slots reversed":
        feeds = _permute_row_slots(feeds)
    return feeds, h, w


CASES = ["x2", "x3", "x4", "x1.5", "x2.5", "x3.5", "tile x2", "narrow tile", "one pixel", "row slots reversed",
         "x3 batch of 2", "x2.5 batch of 2"]


@pytest.mark.parametrize("name", CASES)
def test_convolution_path_equals_grouped_path(sessions, name):
    conv, grouped = sessions
    feeds, h, w = _case(name)
    assert conv_path(feeds), name  # every case exercises the convolution path
    k_r, k_c = feeds["row_slots"].shape[1], feeds["col_slots"].shape[1]
    if name in ("narrow tile", "one pixel"):
        assert k_r != k_c or k_r not in D2S_SLOTS
    else:
        assert k_r == k_c in D2S_SLOTS
    n = 2 if "batch" in name else 1
    feats = np.random.default_rng(0).standard_normal((n, 32, h, w)).astype(np.float32) * 3
    feeds = {"features": feats, **feeds}
    got = conv.run(None, feeds)[0]
    want = grouped.run(None, feeds)[0]
    assert got.shape == want.shape == (n, 3, feeds["row_src"].size, feeds["col_src"].size)
    # measured: at most 1.5e-5 on outputs of magnitude ~130 (float32 summation order of Conv vs MatMul)
    assert np.abs(got - want).max() <= 1e-4 * max(1.0, np.abs(want).max()), name
