"""hgm_api's input contract: what an array means is checked or converted explicitly, never guessed.

A uint8 tensor (torchvision's read_image), 0..255 floats and 12-bit data in uint16 were taken as [0, 1]
and gave near-white results with no error; each case here compares against the plain uint8 H×W×3 path.
"""
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

import hgm_api
from tests.helpers import smooth_image

FAST = {"n_steps_each": 1, "seed": 5}


@pytest.fixture(scope="module")
def prior():
    return hgm_api.load_prior("cpu_12ch_64")


@pytest.fixture(scope="module")
def truth():
    return smooth_image(24, 28)


@pytest.fixture(scope="module")
def reference(prior, truth):
    """The demosaicked uint8 H×W×3 image: the path whose meaning was never in doubt."""
    return hgm_api.demosaic(prior, truth, **FAST)


def test_read_image_output_is_uint8_chw(prior, truth, reference, tmp_path):
    """torchvision.io.read_image gives a uint8 3×H×W tensor: scaled by 255, returned as one."""
    from torchvision.io import read_image
    path = str(tmp_path / "x.png")
    Image.fromarray(truth).save(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torchvision 0.29 points to torchcodec
        x = read_image(path)
    assert x.dtype == torch.uint8 and x.shape == (3, 24, 28)
    out = hgm_api.demosaic(prior, x, **FAST)
    assert out.dtype == torch.uint8 and out.shape == (3, 24, 28)
    assert torch.equal(out, torch.from_numpy(reference).permute(2, 0, 1))
    assert hgm_api.metrics(out, x)["psnr"] > 25


def test_floats_in_0_255_are_refused_unless_the_range_is_given(prior, truth, reference):
    x = truth.astype(np.float32)
    with pytest.raises(hgm_api.HGMError, match=r"values span .*outside \[0, 1\].*value_range"):
        hgm_api.demosaic(prior, x, **FAST)
    with pytest.raises(hgm_api.HGMError, match="value_range"):
        hgm_api.metrics(x, truth)
    out = hgm_api.demosaic(prior, x, value_range=(0, 255), **FAST)
    assert out.dtype == np.float32 and out.max() > 1.5  # given back on its own 0..255 scale
    assert np.abs(out - reference).max() <= 0.51
    assert hgm_api.metrics(out, x, value_range=(0, 255))["psnr"] > 25


def test_twelve_bit_data_in_uint16(prior, truth, reference):
    """12-bit values in uint16 with value_range=(0, 4095) mean what they say, and come back as 12-bit."""
    x12 = np.round(truth.astype(np.float64) * 4095 / 255).astype(np.uint16)
    out = hgm_api.demosaic(prior, x12, value_range=(0, 4095), **FAST)
    assert out.dtype == np.uint16 and out.max() <= 4095 and out.max() > 2000
    assert np.abs(out.astype(np.float64) * 255 / 4095 - reference).max() < 1.0
    with pytest.warns(UserWarning, match="12-bit"):
        hgm_api.metrics(x12, x12)


def test_sixteen_bit_raw_mosaic(prior, truth):
    """A uint16 raw mosaic (H×W) is scaled by 65535, not read as [0, 1]."""
    m = hgm_api.bayer_mask("rggb", 24, 28).permute(1, 2, 0).numpy()
    mosaic = np.round((truth / 255.0 * m).sum(-1) * 65535).astype(np.uint16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # full 16-bit data: no 12-bit warning
        out = hgm_api.demosaic(prior, mosaic, **FAST)
    assert out.dtype == np.uint16 and out.shape == (24, 28, 3)
    assert hgm_api.metrics(out, truth)["psnr"] > 25


def test_a_batch_is_restored_image_by_image(prior, truth, reference):
    """N×3×H×W floats in [0, 1]: each image as if given alone; the batch comes back N×3×H×W."""
    one = torch.from_numpy(truth).permute(2, 0, 1).float() / 255
    batch = torch.stack([one, one.flip(-1)])
    out = hgm_api.demosaic(prior, batch, **FAST)
    assert out.shape == (2, 3, 24, 28) and out.dtype == torch.float32
    assert torch.allclose(out[0], hgm_api.demosaic(prior, one, **FAST), atol=1e-6)
    assert torch.allclose(out[1], hgm_api.demosaic(prior, batch[1], **FAST), atol=1e-6)
    assert np.abs((out[0].permute(1, 2, 0).numpy() * 255).round() - reference).max() <= 1
    known = np.ones((24, 28), bool)
    known[8:16, 8:16] = False
    filled = hgm_api.inpaint(prior, batch, known, **FAST)
    assert filled.shape == (2, 3, 24, 28)
    with pytest.raises(hgm_api.HGMError, match="one image at a time"):
        hgm_api.metrics(batch, batch)


@pytest.mark.parametrize("bad,match", [
    (np.zeros((24, 28, 4), np.uint8), "4 channels"),
    (np.zeros((24, 28, 3), bool), "bool"),
    (np.zeros((24, 28, 3), np.int32), "value_range"),
    (np.full((24, 28, 3), np.nan, np.float32), "NaN"),
    (np.full((24, 28, 3), -0.5, np.float32), r"outside \[0, 1\]"),
    (np.zeros((24, 28, 5), np.float32), "no axis of 1 or 3 channels"),
    (torch.zeros(2, 24, 28), "2 channels"),
    (torch.zeros(1, 2, 1, 24, 28), "a batch of mosaics is N×1×H×W"),
])
def test_inputs_that_mean_nothing_clear_are_refused(prior, bad, match):
    with pytest.raises(hgm_api.HGMError, match=match):
        hgm_api.demosaic(prior, bad, **FAST)


def test_a_mask_must_leave_something_missing(prior, truth):
    with pytest.raises(hgm_api.HGMError, match="no pixel missing"):
        hgm_api.inpaint(prior, truth, np.ones((24, 28), bool), **FAST)
    with pytest.raises(hgm_api.HGMError, match="every pixel missing"):
        hgm_api.inpaint(prior, truth, np.zeros((24, 28), bool), **FAST)
