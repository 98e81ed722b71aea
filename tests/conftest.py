"""Shared fixtures: paths to the shared data (never copied into the project) and seeded models."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # the oracle module lives beside the tests

DATA = Path(os.environ.get("METASR_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data")).resolve()


def data_path(*parts: str) -> Path:
    """A path under the shared data folder; skips the test (with the reason) when it is absent."""
    path = DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared data not found at {path} (set METASR_DATA)")
    return path
