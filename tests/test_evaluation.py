"""Tests of the evaluation metrics and the classical baselines."""
import math
import os

import numpy as np
import pytest
import torch

from classical import (
    BASELINES,
    bayer_pattern_of,
    biharmonic_inpaint,
    bilinear_demosaic,
    harmonic_inpaint,
    malvar_demosaic,
    menon_demosaic,
    run_baseline,
)
from datasets.errors import HGMError
from datasets.masks import PATTERNS, bayer_mask, random_mask
from evaluation.metrics import psnr, ssim

DEMOSAIC = {"bilinear": bilinear_demosaic, "malvar": malvar_demosaic, "menon": menon_demosaic}


def _rand_image(h=32, w=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(3, h, w, generator=g, dtype=torch.float64)


def _ramp(h=24, w=28):
    """Per-channel linear gradients, different for each channel, inside [0, 1]."""
    i = torch.arange(h, dtype=torch.float64).view(h, 1)
    j = torch.arange(w, dtype=torch.float64).view(1, w)
    r = 0.10 + 0.010 * i + 0.015 * j
    g = 0.20 + 0.012 * i - 0.004 * j + 0.1
    b = 0.90 - 0.008 * i - 0.012 * j
    img = torch.stack([r, g, b])
    assert img.min() > 0 and img.max() < 1
    return img


def _smooth(h=48, w=48, dtype=torch.float64):
    """A low-frequency sum of sinusoids per channel, in (0, 1)."""
    i = torch.arange(h, dtype=dtype).view(h, 1) / h
    j = torch.arange(w, dtype=dtype).view(1, w) / w
    chans = []
    for c in range(3):
        v = 0.5 + 0.2 * torch.sin(2 * math.pi * (1.1 * i + 0.7 * j) + c) \
            + 0.15 * torch.cos(2 * math.pi * (0.6 * i - 1.3 * j) + 2 * c) \
            + 0.1 * torch.sin(2 * math.pi * 1.7 * j + 0.5 * c) * torch.cos(2 * math.pi * 0.9 * i)
        chans.append(v)
    return torch.stack(chans)


# ------------------------------------------------------------------ metrics

def test_psnr_identical_is_inf():
    x = _rand_image()
    assert psnr(x, x) == float("inf")
    assert psnr(x.permute(1, 2, 0).numpy(), x.permute(1, 2, 0).numpy()) == float("inf")


def test_psnr_constant_offset_matches_formula():
    ref = _rand_image() * 0.9
    x = ref + 1.0 / 255          # every sample off by one 8-bit level: MSE = 1
    assert psnr(x, ref) == pytest.approx(10 * math.log10(255.0 ** 2), abs=1e-6)
    assert psnr(x, ref) == pytest.approx(48.1308, abs=1e-4)
    y = ref + 4.0 / 255          # MSE = 16
    assert psnr(y, ref) == pytest.approx(10 * math.log10(255.0 ** 2 / 16), abs=1e-6)


def test_psnr_border_ignores_corrupted_border():
    ref = _rand_image(30, 30)
    x = ref.clone()
    x[:, :3, :] = 1 - x[:, :3, :]
    x[:, :, -3:] = 0
    assert psnr(x, ref) < 30
    assert psnr(x, ref, border=3) == float("inf")
    x[:, 3, 3] += 0.5            # inside the kept region: counted
    assert psnr(x, ref, border=3) < float("inf")


def test_numpy_and_torch_agree():
    ref = _rand_image(40, 40, seed=1)
    x = (ref + 0.05 * torch.randn(ref.shape, generator=torch.Generator().manual_seed(2),
                                  dtype=ref.dtype)).clamp(0, 1)
    xn, rn = x.permute(1, 2, 0).numpy(), ref.permute(1, 2, 0).numpy()
    assert psnr(x, ref, border=2) == pytest.approx(psnr(xn, rn, border=2), rel=1e-12)
    assert psnr(x, ref) == pytest.approx(psnr(xn, ref))           # mixed inputs
    assert psnr(x.unsqueeze(0).float(), ref.float()) == pytest.approx(psnr(x, ref), abs=1e-4)
    assert ssim(x, ref) == pytest.approx(ssim(xn, rn), rel=1e-12)


def test_shape_mismatch_raises_with_both_shapes():
    a, b = _rand_image(16, 16), _rand_image(16, 18)
    with pytest.raises(ValueError, match=r"16, 16.*16, 18"):
        psnr(a, b)
    with pytest.raises(ValueError):
        ssim(a.permute(1, 2, 0).numpy(), b.permute(1, 2, 0).numpy())


def test_ssim_identical_is_one_and_drops_with_noise():
    ref = _smooth(40, 40)
    assert ssim(ref, ref) == pytest.approx(1.0, abs=1e-12)
    g = torch.Generator().manual_seed(3)
    values = []
    for s in (0.01, 0.05, 0.2):
        noisy = (ref + s * torch.randn(ref.shape, generator=g, dtype=ref.dtype)).clamp(0, 1)
        values.append(ssim(noisy, ref))
    assert 1.0 > values[0] > values[1] > values[2]


# ------------------------------------------------------------------ demosaicking

@pytest.mark.parametrize("name", sorted(DEMOSAIC))
@pytest.mark.parametrize("pattern", PATTERNS)
def test_demosaic_keeps_measured_samples(name, pattern):
    img = _rand_image(18, 22, seed=4).float()
    m = bayer_mask(pattern, 18, 22)
    out = DEMOSAIC[name](img * m, pattern)
    assert out.shape == img.shape and out.dtype == img.dtype
    assert torch.equal(out[m > 0.5], img[m > 0.5])
    assert out.min() >= 0 and out.max() <= 1


@pytest.mark.parametrize("name", sorted(DEMOSAIC))
@pytest.mark.parametrize("pattern", PATTERNS)
def test_demosaic_constant_colour_exact_everywhere(name, pattern):
    h, w = 13, 16                # odd height: the tile is cut at the border
    img = torch.tensor([0.8, 0.3, 0.55]).view(3, 1, 1).expand(3, h, w).clone()
    out = DEMOSAIC[name](img * bayer_mask(pattern, h, w), pattern)
    assert (out - img).abs().max() < 1e-6


@pytest.mark.parametrize("name", sorted(DEMOSAIC))
@pytest.mark.parametrize("pattern", PATTERNS)
def test_demosaic_exact_on_linear_ramp_interior(name, pattern):
    img = _ramp()
    out = DEMOSAIC[name](img * bayer_mask(pattern, *img.shape[1:]).double(), pattern)
    b = 6 if name == "menon" else 2  # Menon's refining step cascades three filters: mirrored borders reach further
    err = (out - img)[:, b:-b, b:-b].abs().max()
    assert err < 1e-5, f"{name}/{pattern}: interior error {err}"


def _correlated_smooth(h=48, w=48):
    """Smooth image whose channels share their detail (as in natural images):
    one sum of sinusoids scaled per channel plus a weak, slow per-channel tint.
    Malvar's correction borrows detail across channels, so it only wins when
    the channels are correlated; with independent channels bilinear is better."""
    i = torch.arange(h, dtype=torch.float64).view(h, 1) / h
    j = torch.arange(w, dtype=torch.float64).view(1, w) / w
    f = 3.0
    lum = 0.15 * torch.sin(2 * math.pi * f * (1.1 * i + 0.7 * j)) \
        + 0.1 * torch.cos(2 * math.pi * f * (0.6 * i - 1.3 * j) + 1) \
        + 0.07 * torch.sin(2 * math.pi * 1.7 * f * j) * torch.cos(2 * math.pi * 0.9 * f * i)
    tint = [0.05 * torch.sin(2 * math.pi * (0.5 * i + 0.3 * j) + c) for c in range(3)]
    img = torch.stack([0.5 + 0.9 * lum + tint[0], 0.5 + lum + tint[1], 0.45 + 1.1 * lum + tint[2]])
    assert img.min() > 0 and img.max() < 1
    return img


@pytest.mark.parametrize("pattern", PATTERNS)
def test_malvar_beats_bilinear_on_smooth_image(pattern):
    img = _correlated_smooth()
    mosaic = img * bayer_mask(pattern, *img.shape[1:]).double()
    p_bil = psnr(bilinear_demosaic(mosaic, pattern), img, border=2)
    p_mal = psnr(malvar_demosaic(mosaic, pattern), img, border=2)
    assert p_mal > p_bil + 1.0, (p_mal, p_bil)


@pytest.mark.parametrize("pattern", PATTERNS)
def test_menon_matches_the_colour_demosaicing_package(pattern):
    """Against the package's output (tests/data/make_menon_reference.py). Where the
    horizontal and vertical classifier sums tie up to rounding, the two may pick
    different directions; everywhere else they agree to float precision."""
    ref = np.load(os.path.join(os.path.dirname(__file__), "data", "menon2007_reference.npz"))
    imgs = torch.from_numpy(ref["images"]).permute(0, 3, 1, 2)
    want = torch.from_numpy(ref[pattern]).permute(0, 3, 1, 2).clamp(0, 1)
    got = menon_demosaic(imgs * bayer_mask(pattern, *imgs.shape[-2:]), pattern)
    close = (got - want).abs() < 1e-5
    assert close.float().mean() > 0.99, close.float().mean()
    for n in range(len(imgs)):
        assert abs(psnr(got[n], imgs[n]) - psnr(want[n], imgs[n])) < 0.05


@pytest.mark.parametrize("pattern", PATTERNS)
def test_menon_beats_malvar_on_fine_stripes(pattern):
    """Near-Nyquist vertical stripes with correlated channels: the directional
    decision interpolates along them, where Malvar's isotropic filters alias."""
    j = torch.arange(48, dtype=torch.float64).view(1, 48)
    i = torch.arange(48, dtype=torch.float64).view(48, 1)
    lum = 0.5 + 0.3 * torch.sin(2 * math.pi * j / 2.6 + 0.02 * i)
    img = torch.stack([0.9 * lum + 0.05, lum, 0.8 * lum + 0.1])
    mosaic = img * bayer_mask(pattern, 48, 48).double()
    assert psnr(menon_demosaic(mosaic, pattern), img, border=6) > psnr(malvar_demosaic(mosaic, pattern), img,
                                                                       border=6) + 6


def test_wrong_pattern_is_worse():
    """Guards against the filters silently ignoring the pattern."""
    img = _smooth()
    mosaic = img * bayer_mask("grbg", *img.shape[1:]).double()
    for fn in DEMOSAIC.values():
        assert psnr(fn(mosaic, "grbg"), img) > psnr(fn(mosaic, "rggb"), img) + 10


def test_demosaic_batch_matches_single():
    imgs = torch.stack([_smooth(20, 20), _rand_image(20, 20)]).float()
    mosaic = imgs * bayer_mask("bggr", 20, 20)
    for fn in DEMOSAIC.values():
        batch = fn(mosaic, "bggr")
        assert batch.shape == imgs.shape
        for n in range(2):
            assert torch.allclose(batch[n], fn(mosaic[n], "bggr"), atol=1e-6)


# ------------------------------------------------------------------ inpainting

def test_biharmonic_keeps_known_and_fills_smooth_holes():
    img = _smooth(40, 40)
    mask = random_mask(40, 40, 0.5, generator=torch.Generator().manual_seed(5)).double()
    out = biharmonic_inpaint(img * mask, mask)
    assert out.shape == img.shape
    known = mask > 0.5
    assert torch.equal(out[known], img[known])
    assert psnr(out, img) > 35


def test_biharmonic_batch_with_shared_mask():
    imgs = torch.stack([_smooth(24, 24), 1 - _smooth(24, 24)]).float()
    mask = random_mask(24, 24, 0.3, generator=torch.Generator().manual_seed(6))
    out = biharmonic_inpaint(imgs * mask, mask)
    assert out.shape == imgs.shape
    for n in range(2):
        assert torch.allclose(out[n], biharmonic_inpaint(imgs[n] * mask, mask), atol=1e-6)


def test_harmonic_fill_solves_laplace_with_the_known_pixels_as_boundary():
    img = torch.rand(3, 30, 34, dtype=torch.float64)
    mask = random_mask(30, 34, 0.6, generator=torch.Generator().manual_seed(7)).double()
    mask[:, 8:20, 10:24] = 0  # a hole, and scattered pixels around it, some on the image's border
    out = harmonic_inpaint(img * mask, mask)
    known = mask > 0.5
    assert torch.equal(out[known], img[known])
    # each missing pixel is the mean of its neighbours inside the image (the discrete Laplace equation)
    padded = torch.nn.functional.pad(out[None], (1, 1, 1, 1))[0]
    count = torch.nn.functional.pad(torch.ones(1, 1, 30, 34, dtype=out.dtype), (1, 1, 1, 1))[0]
    def neighbours(t):
        return t[:, :-2, 1:-1] + t[:, 2:, 1:-1] + t[:, 1:-1, :-2] + t[:, 1:-1, 2:]
    mean = neighbours(padded) / neighbours(count)
    assert torch.allclose(out[~known], mean[~known], atol=1e-9)


def test_harmonic_fill_stays_within_the_known_values_and_fills_a_ramp_exactly():
    img = torch.full((3, 48, 48), 0.9, dtype=torch.float64)
    img[:, :, :20] = 0.1
    mask = torch.ones(3, 48, 48, dtype=torch.float64)
    mask[:, 12:36, 12:36] = 0
    hole = mask < 0.5
    harmonic = harmonic_inpaint(img * mask, mask)
    assert harmonic[hole].min() >= 0.1 - 1e-9 and harmonic[hole].max() <= 0.9 + 1e-9
    ramp = torch.linspace(0, 1, 48, dtype=torch.float64).expand(3, 48, 48)  # a harmonic function is filled exactly
    assert torch.allclose(harmonic_inpaint(ramp * mask, mask), ramp, atol=1e-9)
    with pytest.raises(ValueError, match="at least one known pixel"):
        harmonic_inpaint(img, torch.zeros_like(mask))


@pytest.mark.parametrize("method", ["telea", "ns"])
def test_opencv_inpainting_keeps_known_and_fills_smooth_holes(method):
    pytest.importorskip("cv2")
    img = (_smooth(40, 40) * 255).round() / 255  # 8-bit values: OpenCV works on the 8-bit image
    mask = torch.ones(3, 40, 40)
    mask[:, 15:25, 12:22] = 0
    out = run_baseline(method, img * mask, mask)
    known = mask > 0.5
    assert torch.equal(out[known], img[known].to(out.dtype))
    assert psnr(out, img) > 35  # a smooth field is filled closely
    assert psnr(img * mask, img) < 25  # the hole alone is far off


def test_opencv_inpainting_without_opencv_says_how_to_install_it(monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "cv2", None)
    with pytest.raises(HGMError, match="pip install opencv-python-headless"):
        run_baseline("telea", torch.rand(3, 8, 8), torch.ones(3, 8, 8))


# ------------------------------------------------------------------ registry

@pytest.mark.parametrize("pattern", PATTERNS)
def test_run_baseline_reads_pattern_from_mask(pattern):
    img = _smooth(16, 16).float()
    m = bayer_mask(pattern, 16, 16)
    assert bayer_pattern_of(m) == pattern
    for name in ("bilinear", "malvar"):
        # the pattern argument is overridden by the mask
        assert torch.equal(run_baseline(name, img * m, m, pattern="rggb"),
                           BASELINES[name](img * m, pattern))


def test_run_baseline_dispatch_and_errors():
    img = _smooth(16, 16).float()
    mask = random_mask(16, 16, 0.3, generator=torch.Generator().manual_seed(7))
    assert torch.equal(run_baseline("biharmonic", img * mask, mask), biharmonic_inpaint(img * mask, mask))
    with pytest.raises(HGMError, match="unknown baseline"):
        run_baseline("nope", img, mask)
    with pytest.raises(HGMError, match="Bayer"):
        run_baseline("malvar", img * mask, mask)
    with pytest.raises(HGMError):
        run_baseline("biharmonic", img, None)
