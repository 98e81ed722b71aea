"""The phase path of ONNX Runtime's CPU variant of the ``MetaUpscale`` body (``export/metaupscale_phase.py``):
r = p/q with q > 2 as q^2 strided convolutions on the NCHWc kernels.

Oracle: the exported graph forced onto its grouped path (batched matrix products, no convolution), on the same
plans; the variant must equal it to float32 rounding. Taken where it applies (the outputs are then not
bit-identical to the standard body's, which runs the grouped path there: another summation order) and not
elsewhere (bit-identical): scales whose float32 offsets break the period, calls under ``PHASE_MIN_PIXELS``, tiles
with fewer rows than the period.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
from metasr.export.metaupscale_phase import PHASE_MIN_PIXELS
from metasr.runtime import ort_cpu
from metasr.runtime.feeds import check_hints, conv_path, plan_feeds, tile_feeds
from metasr.runtime.projection import project

from tests.test_upscale_body import _permute_row_slots, cpu_session, grouped_model


@pytest.fixture(scope="module")
def sessions(bundled_artifacts, block):
    raw = (bundled_artifacts / "upscale.onnx").read_bytes()
    variant, said = ort_cpu.specialize(raw, "fp32")
    assert "Col2Im" in said, said  # the phase path needs opset 18 (the exported graphs are 17: raised)
    return cpu_session(raw), cpu_session(variant), cpu_session(grouped_model(raw))


def _permute_row_groups(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The same plan with the row groups in reverse order (valid hints; each phase's group moves)."""
    out = dict(feeds)
    g, k = feeds["row_groups"].shape[0], feeds["row_slots"].shape[1]
    length = feeds["row_groups"].shape[1]
    out["row_groups"] = feeds["row_groups"][::-1].copy()
    out["row_slots"] = feeds["row_slots"][::-1].copy()
    pick = feeds["row_pick"]
    a, rest = pick // (length * k), pick % (length * k)
    out["row_pick"] = (g - 1 - a) * length * k + rest
    check_hints(out)
    return out


def _pad_col_slots(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The same plan with one more column slot per group, repeating its first (valid hints; K_c = K_r + 1)."""
    out = dict(feeds)
    slots, k = feeds["col_slots"], feeds["col_slots"].shape[1]
    out["col_slots"] = np.concatenate([slots, slots[:, :1]], axis=1)
    out["col_pick"] = feeds["col_pick"] // k * (k + 1) + feeds["col_pick"] % k
    check_hints(out)
    return out


def _run(sessions, feeds, h, w, n=1, seed=1):
    feeds = {"features": np.random.default_rng(seed).standard_normal((n, 32, h, w)).astype(np.float32) * 3, **feeds}
    return [s.run(None, feeds)[0] for s in sessions]


def _agree(got, want):
    # measured: at most 1.5e-5 on outputs of magnitude ~100 (2e-7 relative), as the body's other paths
    return np.abs(got - want).max() <= 1e-4 * max(1.0, np.abs(want).max())


# (scale, h, w): every period the path has (q = 3, 4, 5, 10), slot counts 2..4 (Opad 16, 32, 48), sizes that are
# not whole periods, one axis shorter than two periods
TAKEN = [(4 / 3, 40, 45), (1.25, 37, 50), (3.75, 41, 33), (1.2, 45, 52), (3.4, 33, 47), (1.1, 61, 97),
         (2.1, 48, 40), (3.3, 44, 61), (3.9, 35, 36), (1.7, 12, 200)]  # fmt: skip


@pytest.mark.parametrize(("scale", "h", "w"), TAKEN)
def test_phase_path_equals_the_grouped_path_where_it_runs(sessions, scale, h, w):
    feeds = plan_feeds(project(h, w, scale))
    assert not conv_path(feeds)
    std, got, want = _run(sessions, feeds, h, w)
    assert got.shape == want.shape == (1, 3, *project(h, w, scale).out_size)
    assert _agree(got, want), scale
    assert not np.array_equal(got, std), f"x{scale:g}: the phase path did not run"


HINT_CASES = ["batch of 2", "groups reversed", "column slots padded", "row slots reversed", "tile",
              "tile of one period", "row tile"]  # fmt: skip


def hint_case(case: str) -> tuple[dict[str, np.ndarray], int, int, int, bool]:
    """One of :data:`HINT_CASES` on 50 x 64 features (x3.3, or x2.1): (feeds, h, w, batch, whether the phase path
    applies)."""
    h, w, n = 50, 64, 1
    feeds = plan_feeds(project(h, w, 2.1 if case == "column slots padded" else 3.3))
    takes = True
    if case == "batch of 2":
        n = 2
    elif case == "groups reversed":  # the phase of each group is read from its members
        feeds = _permute_row_groups(feeds)
    elif case == "column slots padded":  # K_r = 3, K_c = 4: the planes' index reads both
        feeds = _pad_col_slots(feeds)
        assert feeds["row_slots"].shape[1] == 3 and feeds["col_slots"].shape[1] == 4
    elif case == "row slots reversed":  # rows no longer in slot order: not the periodic layout
        feeds, takes = _permute_row_slots(feeds), False
    elif case == "tile":
        feeds = tile_feeds(feeds, slice(7, 150), slice(20, 190))
    elif case == "tile of one period":  # 33 output rows: 10 input rows, every phase once
        feeds = tile_feeds(feeds, slice(33, 66), slice(0, 211))
    elif case == "row tile":  # 5 output rows: two phases of ten, no longer a group per phase
        feeds, takes = tile_feeds(feeds, slice(40, 45), slice(0, 211)), False
    return feeds, h, w, n, takes


@pytest.mark.parametrize("case", HINT_CASES)
def test_phase_path_on_other_valid_hints(sessions, case):
    feeds, h, w, n, takes = hint_case(case)
    std, got, want = _run(sessions, feeds, h, w, n)
    assert _agree(got, want), case
    assert (not np.array_equal(got, std)) == takes, case


@pytest.mark.parametrize(
    ("scale", "h", "w", "why"),
    [
        (2.3, 40, 52, "float32 offsets: exception rows out of the period"),
        (3.7, 40, 52, "float32 offsets: eleven groups"),
        (3.3, 31, 33, "fewer than PHASE_MIN_PIXELS"),
    ],
)
def test_phase_path_is_left_where_it_does_not_apply(sessions, scale, h, w, why):
    assert (h * w >= PHASE_MIN_PIXELS) == (why != "fewer than PHASE_MIN_PIXELS")
    std, got, want = _run(sessions, plan_feeds(project(h, w, scale)), h, w)
    assert np.array_equal(got, std), why  # the grouped path, as the standard body runs it
    assert _agree(got, want)


def test_standard_body_has_no_phase_path():
    """The exported body is unchanged: the phase path exists in the runtime's variant only."""
    from metasr.export.metaupscale_op import function_proto

    standard = function_proto(17).SerializeToString()
    assert b"MetaUpscale_phase" not in standard and b"ReorderInput" not in standard
    assert b"MetaUpscale_phase" in function_proto(18, 16).SerializeToString()
    assert b"MetaUpscale_phase" not in function_proto(17, 16).SerializeToString()  # no Col2Im: no phase path


def test_probe_checks_the_phase_paths_convolution(sessions, monkeypatch):
    """The per-process probe also runs a strided convolution whose pads reach past the kernel (the phase path's
    form) on a filter packed as the variant packs it: a wrong packing (here none) is caught there."""
    block = ort_cpu.nchwc_block()
    assert ort_cpu._agrees(block) is None
    monkeypatch.setattr(ort_cpu, "pack_filters", lambda w, b: w)
    assert "strided convolution differs" in ort_cpu._agrees(block)
