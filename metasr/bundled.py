"""The bundled default model (small preset, trained on T91 + BSD200) and the sample-image lookup."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

__all__ = ["BUNDLED_MODEL", "bundled_model_path", "find_shared_data", "sample_image"]

BUNDLED_MODEL = Path(__file__).with_name("assets") / "small.safetensors"


def bundled_model_path() -> Path:
    """Path of the bundled checkpoint; a clear error if this installation lacks it."""
    if not BUNDLED_MODEL.is_file():
        raise FileNotFoundError(f"the bundled model is missing at {BUNDLED_MODEL}")
    return BUNDLED_MODEL


def find_shared_data() -> Path | None:
    """The shared test-data folder: ``$METASR_DATA``, else ``../shared/data`` beside the checkout or cwd."""
    candidates = [os.environ.get("METASR_DATA", "")]
    candidates += [
        str(Path(__file__).resolve().parents[2] / "shared" / "data"),
        str(Path.cwd().parent / "shared" / "data"),
    ]
    for c in candidates:
        if c and Path(c).is_dir():
            return Path(c)
    return None


def sample_image() -> tuple[np.ndarray, str]:
    """A sample HR image (uint8 RGB) and its name: Set5's butterfly when the shared data is present,
    otherwise a synthetic test chart (edges, rings and gradients) drawn here."""
    from metasr.data import load_rgb

    data = find_shared_data()
    if data is not None and (data / "Set5" / "butterfly.png").is_file():
        return load_rgb(data / "Set5" / "butterfly.png"), "Set5/butterfly"
    y, x = np.mgrid[0:256, 0:256].astype(np.float64)
    r2 = (x - 128) ** 2 + (y - 128) ** 2
    rings = 127.5 * (1 + np.cos(r2 / 180.0))
    bars = np.where((x // 16) % 2 == 0, 220.0, 40.0)
    ramp = x
    img = np.stack([rings, np.where(y < 128, bars, ramp), 255 - rings], axis=-1)
    return img.clip(0, 255).astype(np.uint8), "synthetic-chart"
