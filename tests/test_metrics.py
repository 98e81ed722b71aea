"""PSNR/SSIM against independent implementations (scikit-image; a float64 re-derivation)."""

import math

import numpy as np
import pytest
from conftest import data_path
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from metasr.data import load_rgb, make_pair
from metasr.evaluate import bicubic_upscale
from metasr.metrics import psnr_y, quantize, ssim_y


def _y(img):  # BasicSR's rgb2ycbcr(y_only=True) on 0..255 values
    return img.astype(np.float64) @ np.array([65.481, 128.553, 24.966]) / 255.0 + 16.0


@pytest.fixture(scope="module", params=[("Set5", "bird", 2.0), ("Set14", "lenna", 3.0), ("Set14", "comic", 4.0)])
def pair(request):
    folder, name, scale = request.param
    lr, hr = make_pair(load_rgb(data_path(folder, f"{name}.png")), scale, "benchmark")
    return bicubic_upscale(lr, scale), hr, scale


def test_psnr_matches_scikit_image_on_basicsr_y(pair):
    sr, hr, scale = pair
    s = math.ceil(scale)
    a, b = _y(sr)[s:-s, s:-s], _y(hr[: sr.shape[0], : sr.shape[1]])[s:-s, s:-s]
    # BasicSR's Y (65.481/255) and the official one (65.738/256) agree to 4e-6 relative
    assert psnr_y(sr, hr, scale) == pytest.approx(peak_signal_noise_ratio(b, a, data_range=255), abs=1e-3)


def test_psnr_matches_float64_rederivation(pair):
    sr, hr, scale = pair
    s = math.ceil(scale)
    d = (sr.astype(np.float64) - hr[: sr.shape[0], : sr.shape[1]]) / 255.0
    y = (65.738 * d[..., 0] + 129.057 * d[..., 1] + 25.064 * d[..., 2]) / 256.0
    mse = np.mean(y[s:-s, s:-s] ** 2)
    assert psnr_y(sr, hr, scale) == pytest.approx(10 * math.log10(1 / mse), abs=1e-4)


def test_ssim_matches_scikit_image(pair):
    sr, hr, scale = pair
    s = math.ceil(scale)
    a, b = _y(sr)[s:-s, s:-s], _y(hr[: sr.shape[0], : sr.shape[1]])[s:-s, s:-s]
    ref = structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255)
    assert ssim_y(sr, hr, scale) == pytest.approx(ref, abs=1e-5)


def test_quantize_rounds_half_to_even_and_clamps():
    x = np.array([[-3.0, 0.5, 1.5, 2.5, 254.5, 300.0]])
    assert quantize(x).tolist() == [[0, 0, 2, 2, 254, 255]]


def test_identical_images_have_infinite_psnr_and_unit_ssim():
    img = load_rgb(data_path("Set5", "bird.png"))
    assert psnr_y(img, img, 2) == math.inf
    assert ssim_y(img, img, 2) == pytest.approx(1.0)
