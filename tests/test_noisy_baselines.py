"""Classical anchors for noisy measurements: Menon 2007 with a denoiser after it (or before it, on
the mosaic's lattices), an inpainter followed by a denoiser, on exactly the noisy measurement the
restore runner makes."""
import os
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from classical import NOISY_DEMOSAIC_BASELINES, run_baseline
from datasets.errors import HGMError
from datasets.masks import bayer_mask
from datasets.noise import add_measurement_noise
from evaluation.metrics import psnr
from scripts import run_baseline as run_baseline_script

torch.set_num_threads(1)


def smooth_image(h=64, w=64):
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    return torch.stack([0.3 + 0.4 * xx, 0.5 + 0.2 * torch.sin(3 * yy), 0.2 + 0.5 * xx * yy])


@pytest.mark.parametrize("method", ["menon+nlm", "menon+wavelet", "nlm+menon", "wavelet+menon"])
def test_a_denoiser_with_menon_beats_menon_alone_on_a_noisy_mosaic(method):
    """On a smooth image with σ 10 noise, denoising must gain over Menon alone (which keeps the noise)."""
    gt, mask = smooth_image(), bayer_mask("grbg", 64, 64)
    y = add_measurement_noise(gt, mask, 10, "smooth")
    plain = psnr(run_baseline("menon", y, mask), gt)
    out = run_baseline(method, y, mask, noise_sigma=10 / 255)
    assert out.shape == gt.shape and out.min() >= 0 and out.max() <= 1
    assert psnr(out, gt) > plain + 3


@pytest.mark.parametrize("method", ["biharmonic+nlm", "biharmonic+wavelet", "harmonic+nlm"])
def test_an_inpainter_then_a_denoiser_beats_the_inpainter_alone_on_noisy_samples(method):
    from datasets.masks import box_mask, random_mask
    gt = smooth_image()
    for mask in (random_mask(64, 64, 0.5, torch.Generator().manual_seed(1)), box_mask(64, 64, 16)):
        y = add_measurement_noise(gt, mask, 10, "smooth")
        plain = psnr(run_baseline("biharmonic", y, mask), gt)
        out = run_baseline(method, y, mask, noise_sigma=10 / 255)
        assert out.shape == gt.shape and out.min() >= 0 and out.max() <= 1
        assert psnr(out, gt) > plain + 2
    with pytest.raises(HGMError, match="needs a mask"):
        run_baseline(method, y, None, noise_sigma=10 / 255)


def test_bm3d_is_optional_and_missing_it_says_how_to_get_it(monkeypatch):
    gt, mask = smooth_image(16, 16), bayer_mask("rggb", 16, 16)
    monkeypatch.setitem(sys.modules, "bm3d", None)  # import bm3d raises ImportError
    with pytest.raises(HGMError, match="pip install bm3d"):
        run_baseline("menon+bm3d", gt * mask, mask, noise_sigma=0.04)
    assert "menon+bm3d" in NOISY_DEMOSAIC_BASELINES and "bm3d+menon" in NOISY_DEMOSAIC_BASELINES


def test_unknown_noisy_method_is_named():
    with pytest.raises(HGMError, match="menon\\+median"):
        run_baseline("menon+median", torch.rand(3, 8, 8), None)
    with pytest.raises(HGMError, match="biharmonic\\+median"):
        run_baseline("biharmonic+median", torch.rand(3, 8, 8), torch.ones(3, 8, 8))


def test_run_baseline_uses_the_runners_noisy_measurement(tmp_path):
    """scripts/run_baseline.py --noise_sigma writes as input the same noisy mosaic as the runner's
    seed rule gives (datasets.noise.add_measurement_noise with the image's name)."""
    data = tmp_path / "images"
    data.mkdir()
    arr = (smooth_image(32, 40).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    Image.fromarray(arr).save(data / "photo.png")
    out = tmp_path / "out"
    assert run_baseline_script.main(["--method", "menon+wavelet", "--noise_sigma", "10", "--task", "demosaic",
                                     "--data", str(data), "-o", str(out), "--border", "3"]) == 0
    gt = torch.from_numpy(arr).permute(2, 0, 1).float() / 255
    want = add_measurement_noise(gt, bayer_mask("rggb", 32, 40), 10, "photo")
    got = np.asarray(Image.open(out / "input" / "photo.png")).astype(np.float64)
    assert np.abs(got - (want.clamp(0, 1) * 255).round().permute(1, 2, 0).numpy()).max() == 0
    assert os.path.isfile(out / "restored" / "photo.png")
