"""Adapter from a sequence of feed dicts to ONNX Runtime's ``CalibrationDataReader``.

For users of ``onnxruntime.quantization.quantize_static``. Its MinMax calibrator takes crops of different
sizes one by one; its Entropy / Percentile calibrators stack all batches and fail on varied sizes, which is
why :mod:`metasr.calibration.ranges` collects ranges itself (streaming, per feed).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from onnxruntime.quantization import CalibrationDataReader

__all__ = ["OrtCalibrationReader"]


class OrtCalibrationReader(CalibrationDataReader):
    """``get_next() -> dict | None`` over ``feeds``; ``rewind()`` starts again; ``set_range`` serves
    ``quantize_static(..., extra_options={"CalibStridedMinMax": n})``."""

    def __init__(self, feeds: Sequence[dict[str, np.ndarray]]) -> None:
        self.feeds = feeds
        self._range = (0, len(feeds))
        self._it: Iterator[int] | None = None

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._it is None:
            self._it = iter(range(*self._range))
        i = next(self._it, None)
        return None if i is None else self.feeds[i]

    def rewind(self) -> None:
        self._it = None

    def set_range(self, start_index: int, end_index: int) -> None:
        self._range = (start_index, min(end_index, len(self.feeds)))
        self._it = None

    def __len__(self) -> int:
        return len(self.feeds)
