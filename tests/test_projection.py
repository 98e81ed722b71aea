import math

import numpy as np
import pytest
from metasr.runtime.projection import (
    UnsupportedScaleError,
    axis_projection,
    check_scale,
    output_size,
    project,
)

SCALES = [1.1, 1.5, 2.0, 2.3, 2.7, 3.0, 3.3, 3.7, 4.0]


def test_output_size_uses_python_double_truncation():
    assert output_size(45, 45, 1.4) == (62, 62)  # 1.4 * 45 == 62.99999999999999
    assert output_size(50, 50, 2.3) == (114, 114)  # 2.3 * 50 == 114.99999999999999
    assert output_size(7, 9, 2.0) == (14, 18)


def _reference(n_in: int, scale: float) -> tuple[list[int], list[float]]:
    """Scalar float32 re-derivation of the official arithmetic."""
    inv = np.float32(1.0 / scale)
    src, off = [], []
    for i in range(int(scale * n_in)):
        t = np.float32(np.float32(i) * inv)
        src.append(int(np.floor(t)))
        off.append(float(t - np.float32(np.floor(t))))
    return src, off


@pytest.mark.parametrize("scale", SCALES)
def test_axis_projection_matches_scalar_float32(scale):
    src, off = axis_projection(61, scale)
    ref_src, ref_off = _reference(61, scale)
    assert src.tolist() == ref_src
    assert off.tolist() == ref_off


@pytest.mark.parametrize("scale", [2.3, 2.7, 3.7])
def test_float32_exception_rows_land_on_the_row_before(scale):
    src, off = axis_projection(200, scale)
    exact = np.arange(src.size) / scale  # float64: exactly integral for the affected rows
    affected = np.flatnonzero((np.abs(exact - np.round(exact)) < 1e-9) & (src != np.round(exact)))
    assert affected.size > 0
    assert np.all(src[affected] == np.round(exact[affected]) - 1)
    assert np.all(off[affected] > 0.9999)


def test_no_exception_rows_at_exact_reciprocals():
    for scale in (2.0, 4.0):
        _, off = axis_projection(300, scale)
        assert np.all(off < 0.9)


@pytest.mark.parametrize("scale", SCALES)
def test_merged_offsets_stay_close_and_keep_sources(scale):
    plan = project(97, 131, scale)
    for axis, n_in in ((plan.rows, 97), (plan.cols, 131)):
        src, off = axis_projection(n_in, scale)
        assert np.array_equal(axis.src, src)
        assert np.abs(axis.offsets[axis.offset_index] - off).max() <= 1e-4
        assert np.all(np.diff(np.sort(axis.offsets)) > 1e-4)  # distinct after merging


def test_merging_finds_the_true_period_plus_exception_rows():
    # r = p/q has p distinct exact phases; float32 rounding splits them without merging
    assert project(512, 512, 3.3).rows.offsets.size == 33
    assert project(512, 512, 4.0).rows.offsets.size == 4
    assert project(512, 512, 1.5).rows.offsets.size == 3
    assert project(512, 512, 2.3).rows.offsets.size == 24  # 23 phases + the ~0.99999 exception offset
    unmerged = project(512, 512, 3.3, merge_tol=0).rows.offsets.size
    assert unmerged > 100


def test_pair_inputs_order_is_scale_row_col():
    plan = project(10, 12, 2.5)
    pairs = plan.pair_inputs().reshape(plan.rows.offsets.size, plan.cols.offsets.size, 3)
    assert np.all(pairs[..., 0] == np.float32(1 / 2.5))
    assert np.array_equal(pairs[:, 0, 1], plan.rows.offsets)
    assert np.array_equal(pairs[0, :, 2], plan.cols.offsets)


@pytest.mark.parametrize("bad", [0, -2.0, 1.0, math.nan, math.inf, 4.01, "x2", None])
def test_bad_scales_are_rejected_with_the_range(bad):
    with pytest.raises(UnsupportedScaleError, match=r"scale must be"):
        check_scale(bad)


def test_max_scale_is_configurable():
    assert check_scale(6.0, max_scale=8.0) == 6.0
    with pytest.raises(UnsupportedScaleError, match=r"\(1, 4\]"):
        project(10, 10, 6.0)
