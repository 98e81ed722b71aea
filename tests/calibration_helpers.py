"""Shared by the calibration tests: tiny calibration settings and a directory snapshot."""

from __future__ import annotations

from conftest import data_path
from metasr.calibration.calibrate import CalibrationConfig


def train_dirs():
    return (str(data_path("T91")), str(data_path("BSD200")))


def tiny(precision: str, **kw) -> CalibrationConfig:
    """Tiny settings for the default suite: a budget that holds without a sensitivity pass unless changed."""
    base = dict(
        image_dirs=train_dirs(),
        precision=precision,
        crops=6,
        held_apart=3,
        lr_sizes=(16, 32),
        budget_db=10.0,  # the largest budget: holds without a sensitivity pass
        min_psnr_db=0.0,
    )
    return CalibrationConfig(**{**base, **kw})


def snapshot(directory):
    """Every file under ``directory`` with its bytes, and the names beside it (leftover temporary dirs)."""
    files = {p.relative_to(directory): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}
    return files, sorted(p.name for p in directory.parent.iterdir())
