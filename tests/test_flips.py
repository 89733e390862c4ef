"""The score read on the image's flips in turn (test.flips)."""
from dataclasses import replace

import pytest
import torch
from test_sampler import SETTINGS, FakePrior

from datasets.masks import bayer_mask, random_mask
from datasets.transforms import make_transform
from sampling import restore_image
from sampling.flips import FLIPS, FlippedScore

TRANSFORMS = ["identity", "channel_copy", "pixel_scale"]


@pytest.mark.parametrize("name", TRANSFORMS)
@pytest.mark.parametrize("dims", FLIPS)
def test_a_flip_of_the_lifted_tensor_is_the_lift_of_the_flipped_image(name, dims):
    t = make_transform(name)
    image = torch.rand(2, 3, 8, 12)
    assert torch.equal(t.flip(t.forward(image), dims), t.forward(image.flip(dims)))
    assert torch.equal(t.flip(t.flip(t.forward(image), dims), dims), t.forward(image))


@pytest.mark.parametrize("name", TRANSFORMS)
def test_each_call_reads_the_next_flip_and_flips_the_score_back(name):
    """A score that depends on position (a ramp along the image's width, lifted) is read on the
    image, then left–right flipped, up–down flipped, both, and again from the start."""
    t = make_transform(name)
    ramp = torch.arange(8.0).expand(1, 3, 4, 8)
    ramp = ramp + 10 * torch.arange(4.0)[:, None]
    seen = []

    def score(x, labels):
        seen.append(x)
        return t.forward(ramp)

    flipped = FlippedScore(score, t)
    x = t.forward(torch.rand(1, 3, 4, 8))
    for k in range(6):
        dims = FLIPS[k % 4]
        out = flipped(x, torch.zeros(1, dtype=torch.long))
        assert torch.equal(seen[-1], t.flip(x, dims) if dims else x)
        assert torch.equal(out, t.forward(ramp.flip(dims)) if dims else t.forward(ramp))


def test_flips_change_nothing_for_a_score_without_orientation():
    """A pointwise score is the same on every flip: the restorations are equal, random stream and all."""
    h, w = 16, 20
    gt = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(1))
    prior = FakePrior(make_transform("pixel_scale"))
    for mask in (bayer_mask("rggb", h, w)[None], random_mask(h, w, 0.5, torch.Generator().manual_seed(2))[None]):
        for tiles in (None, 8):
            settings = replace(SETTINGS, init="measurement", tile_size=tiles, tile_overlap=2)
            torch.manual_seed(3)
            plain = restore_image(prior, gt * mask, mask, settings)
            torch.manual_seed(3)
            flipped = restore_image(prior, gt * mask, mask, replace(settings, flips=True))
            assert torch.allclose(plain, flipped, atol=1e-6)


def test_flips_average_an_orientation_error_out():
    """A score with an error that points one way in the image (a push to the right-hand side's value)
    leaves a gradient in the restoration; read on the four flips in turn, the errors cancel."""
    h, w = 16, 16
    prior = FakePrior(make_transform("identity"), sigmas=(0.1, 0.05),
                      score=lambda x, lab: (0.5 - x) + 0.2 * torch.linspace(-1, 1, x.shape[-1]))
    mask = torch.zeros(1, 3, h, w)
    settings = replace(SETTINGS, init="measurement", n_steps_each=40, step_lr=0.05, temperature=0.0, denoise=False)
    tilt = {}
    for flips in (False, True):
        out = restore_image(prior, torch.zeros(1, 3, h, w), mask, replace(settings, flips=flips))
        tilt[flips] = float(out[..., -1].mean() - out[..., 0].mean())
    assert tilt[False] > 0.2
    assert abs(tilt[True]) < 0.05
