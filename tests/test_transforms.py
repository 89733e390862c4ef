"""The liftings RGB -> 3/6/12 channels and back."""
import pytest
import torch

from datasets.errors import HGMError
from datasets.transforms import ChannelCopy, Identity, PixelScale, make_transform, transform_from_config


def rand(shape, seed=0, dtype=torch.float32):
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@pytest.mark.parametrize("name,factor", [("identity", 1), ("channel_copy", 2), ("channel_copy", 4),
                                         ("pixel_scale", 2)])
@pytest.mark.parametrize("shape", [(4, 3, 16, 16), (1, 3, 8, 12), (2, 3, 2, 34)])
def test_inverse_is_exact(name, factor, shape):
    t = make_transform(name, factor)
    for seed in range(3):
        x = rand(shape, seed)
        y = t.forward(x)
        assert y.shape[1] == t.channels
        assert torch.equal(t.inverse(y), x)
    x64 = rand(shape, 7, torch.float64)
    assert torch.equal(t.inverse(t.forward(x64)), x64)


@pytest.mark.parametrize("name,factor,channels,size_multiple", [
    ("identity", 2, 3, 1), ("channel_copy", 2, 6, 1), ("pixel_scale", 2, 12, 2), ("channel_copy", 4, 12, 1)])
def test_channel_counts(name, factor, channels, size_multiple):
    t = make_transform(name, factor)
    assert t.channels == channels
    assert t.size_multiple == size_multiple
    y = t.forward(rand((2, 3, 8, 8)))
    assert y.shape[1] == channels
    assert y.shape[-1] == 8 // size_multiple


def test_pixel_scale_layout_by_hand():
    t = make_transform("pixel_scale", 2)
    x = torch.arange(3 * 4 * 4, dtype=torch.float32).reshape(1, 3, 4, 4)
    y = t.forward(x)
    assert y.shape == (1, 12, 2, 2)
    # pixel (c=1, row=3, col=2) has value 1*16 + 3*4 + 2 = 30; in the 2×2 block (row//2, col//2) = (1, 1)
    # it sits at offset (i, j) = (row%2, col%2) = (1, 0), i.e. channel c*4 + i*2 + j = 6.
    assert x[0, 1, 3, 2] == 30
    assert y[0, 6, 1, 1] == 30
    # the top-left 2×2 block of the red channel fills channels 0..3 at block (0, 0): values 0, 1, 4, 5
    assert y[0, 0:4, 0, 0].tolist() == [0, 1, 4, 5]
    # the whole layout: y[c*4 + 2i + j, by, bx] = x[c, 2by + i, 2bx + j]
    for c in range(3):
        for i in range(2):
            for j in range(2):
                for by in range(2):
                    for bx in range(2):
                        assert y[0, c * 4 + 2 * i + j, by, bx] == x[0, c, 2 * by + i, 2 * bx + j]


def test_channel_copy_layout_is_rgbrgb():
    x = rand((2, 3, 5, 7))
    y = make_transform("channel_copy", 2).forward(x)
    assert torch.equal(y[:, 0:3], x) and torch.equal(y[:, 3:6], x)


def test_channel_copy_inverse_is_mean_of_copies():
    t = make_transform("channel_copy", 2)
    a, b = rand((2, 3, 4, 4), 1), rand((2, 3, 4, 4), 2)
    assert torch.allclose(t.inverse(torch.cat([a, b], 1)), (a + b) / 2, atol=0, rtol=1e-6)
    t4 = make_transform("channel_copy", 4)
    parts = [torch.full((1, 3, 2, 2), v) for v in (0.0, 1.0, 2.0, 5.0)]
    assert torch.equal(t4.inverse(torch.cat(parts, 1)), torch.full((1, 3, 2, 2), 2.0))
    # channels are averaged per colour: copy k's red with copy k's red, not across colours
    x = torch.zeros(1, 6, 1, 1)
    x[0, :, 0, 0] = torch.tensor([1.0, 10.0, 100.0, 3.0, 30.0, 300.0])
    assert t.inverse(x)[0, :, 0, 0].tolist() == [2.0, 20.0, 200.0]


def test_unknown_transform_raises():
    with pytest.raises(HGMError, match="unknown transform 'wavelet'"):
        make_transform("wavelet", 2)
    with pytest.raises(HGMError, match="identity"):  # the message lists the valid names
        make_transform("nope")


@pytest.mark.parametrize("alias,cls", [("rgb", Identity), ("3ch", Identity), ("copy", ChannelCopy),
                                       ("rgbrgb", ChannelCopy), ("6ch", ChannelCopy), ("pool", PixelScale),
                                       ("12ch", PixelScale), ("POOL", PixelScale), ("Channel_Copy", ChannelCopy)])
def test_aliases(alias, cls):
    assert isinstance(make_transform(alias, 2), cls)


def test_transform_from_config():
    t = transform_from_config({"data": {"transform": "pool", "transform_factor": 2}})
    assert isinstance(t, PixelScale) and t.channels == 12


@pytest.mark.parametrize("h,w", [(5, 4), (4, 7), (3, 3)])
def test_pixel_scale_odd_size_raises(h, w):
    with pytest.raises(HGMError, match="divisible"):
        make_transform("pixel_scale", 2).forward(rand((1, 3, h, w)))


@pytest.mark.parametrize("name", ["channel_copy", "pixel_scale"])
def test_factor_below_one_raises(name):
    with pytest.raises(HGMError, match="transform_factor"):
        make_transform(name, 0)
