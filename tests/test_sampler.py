"""The sampler against closed forms, and the restoration pipeline's guarantees."""
import math
from dataclasses import replace

import pytest
import torch

from datasets.masks import bayer_mask, box_mask, random_mask
from datasets.transforms import make_transform
from sampling import SamplerDiverged, SamplerSettings, annealed_langevin, restore_image
from sampling.consistency import MaskedObservation
from sampling.langevin import step_sizes
from sampling.patches import from_patches, pad_to_multiple, to_patches

torch.set_num_threads(1)


def gaussian_problem(d=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(d, d, generator=g, dtype=torch.float64)
    q, _ = torch.linalg.qr(a)
    eig = torch.linspace(0.05, 0.5, d, dtype=torch.float64)
    cov = (q * eig) @ q.T
    mu = torch.randn(d, generator=g, dtype=torch.float64) * 0.3
    return mu, cov


@pytest.mark.parametrize("update", ["noisy_copy", "langevin", "reference"])
def test_inpainting_converges_to_the_analytic_posterior_mean(update):
    """Prior x ~ N(mu, C). At level sigma the perturbed prior is N(mu, C + sigma² I) with score
    -(C + sigma² I)^-1 (x - mu). With the known coordinates clamped by data consistency, both
    updates are linear maps whose fixed-point mean is the conditional (posterior) mean of
    N(mu, C + sigma_L² I) given the known coordinates; Langevin's discretisation biases the
    variance, not the mean. The mean over B independent chains has standard error
    sqrt(var_post / B) per coordinate; we allow 5 of them (plus 1.5× for the discretisation's
    variance inflation), so a correct sampler fails this with probability < 1e-5."""
    torch.manual_seed(0)
    d, B = 12, 2000
    mu, cov = gaussian_problem(d)
    sigmas = torch.tensor([0.3, 0.173, 0.1], dtype=torch.float64)
    precs = [torch.linalg.inv(cov + float(s) ** 2 * torch.eye(d, dtype=torch.float64)) for s in sigmas]

    def score(x, labels):
        p = precs[int(labels[0])]
        return -(x - mu) @ p  # p is symmetric

    known = torch.zeros(d, dtype=torch.bool)
    known[::3] = True
    x_true = mu + torch.linalg.cholesky(cov) @ torch.randn(d, dtype=torch.float64)
    y = torch.where(known, x_true, torch.zeros(d, dtype=torch.float64))
    op = MaskedObservation(known.double().expand(B, d))
    x0 = torch.rand(B, d, dtype=torch.float64)
    out = annealed_langevin(score, x0, sigmas, SamplerSettings(step_lr=0.02, n_steps_each=400, update=update),
                            consistency=lambda v, eta: op.project(v, y.expand(B, d)))
    c = cov + float(sigmas[-1]) ** 2 * torch.eye(d, dtype=torch.float64)
    k, u = known, ~known
    post_mean = mu[u] + c[u][:, k] @ torch.linalg.solve(c[k][:, k], x_true[k] - mu[k])
    post_cov = c[u][:, u] - c[u][:, k] @ torch.linalg.solve(c[k][:, k], c[k][:, u])
    se = torch.sqrt(torch.diag(post_cov) * 1.5 / B)
    err = (out[:, u].mean(0) - post_mean).abs()
    assert torch.all(err < 5 * se), (err / se).max()
    assert torch.equal(out[:, k], y[k].expand(B, -1))  # measured values kept exactly


def test_langevin_samples_have_the_prior_spread():
    """Unconstrained Langevin on N(0, s²) ends with sample variance close to s² + sigma_L²."""
    torch.manual_seed(1)
    s2, sigmas = 0.25, torch.tensor([1.0, 0.3, 0.1])
    out = annealed_langevin(lambda x, lab: -x / (s2 + float(sigmas[int(lab[0])]) ** 2), torch.rand(20000, 1),
                            sigmas, SamplerSettings(step_lr=0.001, n_steps_each=300, update="langevin"))
    target = s2 + 0.01
    assert abs(out.var().item() - target) < 0.05 * target


@pytest.mark.parametrize("temperature", [0.5, 0.0])
def test_temperature_scales_the_stationary_spread(temperature):
    """Langevin with its noise scaled by t samples p^(1/t²): for N(0, v) that is N(0, t² v);
    t = 0 is deterministic score ascent (no randomness at all)."""
    s2, sigmas = 0.25, torch.tensor([1.0, 0.3, 0.1])

    def run(seed):
        torch.manual_seed(seed)
        return annealed_langevin(lambda x, lab: -x / (s2 + float(sigmas[int(lab[0])]) ** 2),
                                 torch.rand(20000, 1) if seed == 1 else torch.full((20000, 1), 0.5), sigmas,
                                 SamplerSettings(step_lr=0.001, n_steps_each=300, update="langevin",
                                                 temperature=temperature))
    target = temperature ** 2 * (s2 + 0.01)
    if temperature > 0:
        assert abs(run(1).var().item() - target) < 0.05 * target
    else:
        assert torch.equal(run(2), run(3)) and run(2).abs().max() < 1e-3


def test_step_sizes_follow_the_schedule():
    sig = torch.tensor([1.0, 0.1, 0.01])
    assert step_sizes(sig, 2e-5) == pytest.approx([2e-5 * 1e4, 2e-5 * 100, 2e-5])


def test_progressive_term_pulls_towards_the_earlier_estimate():
    """With a zero score (and the reference update, whose x carries no noise) the progressive
    term alone contracts x towards the earlier estimate by (1 - η/σ²) per step."""
    sig = torch.tensor([1.0, 0.5])
    earlier = torch.full((1, 3, 4, 4), 0.25)
    schedule = SamplerSettings(step_lr=0.05, n_steps_each=200, update="noisy_copy")
    out = annealed_langevin(lambda x, lab: torch.zeros_like(x), torch.ones(1, 3, 4, 4), sig, schedule, earlier=earlier)
    assert (out - earlier).abs().max() < 1e-3
    far = annealed_langevin(lambda x, lab: torch.zeros_like(x), torch.ones(1, 3, 4, 4), sig, schedule)
    assert torch.equal(far, torch.ones(1, 3, 4, 4))


def test_divergence_is_detected_and_names_step_lr():
    with pytest.raises(SamplerDiverged, match="step_lr=100"):
        annealed_langevin(lambda x, lab: x * 10, torch.rand(1, 3, 4, 4), torch.tensor([1.0, 0.1]),
                          SamplerSettings(step_lr=100, n_steps_each=5))


class FakePrior:
    """A 'network' with a fixed score, for pipeline tests that need no training."""

    def __init__(self, transform, score=None, sigmas=(1.0, 0.1)):
        self.transform = transform
        self.sigmas = torch.tensor(sigmas)
        self.device = torch.device("cpu")
        self._score = score or (lambda x, lab: 0.3 - x)
        self.size_multiple = transform.size_multiple * 2  # the network halves the lifted image once
        self.training_crop = None  # not recorded: test.tile_size auto falls back to its default

    def score(self, x, labels):
        assert x.shape[1] == self.transform.channels
        return self._score(x, labels)


SETTINGS = SamplerSettings(step_lr=0.01, n_steps_each=3, patch_stride=8, pad_mode="reflect", denoise=True)


@pytest.mark.parametrize("transform", ["identity", "channel_copy", "pixel_scale"])
@pytest.mark.parametrize("task", ["demosaic", "inpaint", "box"])
@pytest.mark.parametrize("patch", [None, 8])
def test_known_pixels_are_kept_exactly(transform, task, patch):
    torch.manual_seed(2)
    h, w = 13, 18  # odd sizes need padding for pixel_scale and the network
    gt = (torch.rand(1, 3, h, w) * 255).round() / 255
    mask = {"demosaic": bayer_mask("grbg", h, w), "inpaint": random_mask(h, w, 0.6),
            "box": box_mask(h, w, 5)}[task][None]
    y = gt * mask
    prior = FakePrior(make_transform(transform))
    out = restore_image(prior, y, mask, replace(SETTINGS, patch_size=patch))
    assert out.shape == gt.shape
    assert torch.equal(out[mask > 0.5], gt[mask > 0.5])
    assert out.min() >= 0 and out.max() <= 1


@pytest.mark.parametrize("size,patch,stride,mode", [((500, 500), 300, 256, "circular"), ((37, 53), 16, 12, "reflect"),
                                                    ((20, 20), 32, 16, "circular"), ((33, 40), 16, 16, "circular")])
def test_patch_stitching_of_an_identity_model_reproduces_the_image(size, patch, stride, mode):
    x = torch.rand(2, 3, *size)
    tiles, layout = to_patches(x, patch, stride, mode)
    assert tiles.shape[-2:] == (patch, patch)
    assert torch.allclose(from_patches(tiles, layout), x, atol=1e-6)


def test_restoration_through_patches_equals_the_image_when_all_is_known():
    x = torch.rand(1, 3, 40, 44)
    mask = torch.ones_like(x)
    out = restore_image(FakePrior(make_transform("channel_copy")), x, mask,
                        replace(SETTINGS, patch_size=16, n_steps_each=2))
    assert torch.equal(out, x)


def test_pad_to_multiple_pads_only_what_is_needed():
    x = torch.rand(1, 3, 13, 16)
    p, hw = pad_to_multiple(x, 4)
    assert p.shape[-2:] == (16, 16) and hw == (13, 16)
    assert torch.equal(p[..., :13, :], x)


@pytest.mark.parametrize("init", ["uniform", "measurement", "bilinear"])
def test_the_sampler_never_needs_the_ground_truth(init):
    """Two ground truths that agree on the measured samples, fed as they come (y = gt, the
    mask not applied by the caller): restoration must read only the measured samples, so
    the two results are identical (fixed seed), and they differ from those of another
    measurement. Were any unmeasured value used, the results would differ."""
    mask = bayer_mask("rggb", 8, 8)[None]
    a, b = torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8)
    b = torch.where(mask > 0.5, a, b)  # same measurement, different truth
    assert not torch.equal(a, b)

    def restore(y):
        torch.manual_seed(3)
        return restore_image(FakePrior(make_transform("identity")), y, mask,
                             replace(SETTINGS, init=init, n_steps_each=2, step_lr=1e-4))  # the start matters
    out_a = restore(a)
    assert torch.equal(out_a, restore(b))
    assert not math.isnan(float(out_a.sum()))
    assert not torch.equal(out_a, restore(torch.where(mask > 0.5, 1 - a, a)))  # the measurement does matter


def test_progressive_weight_scales_the_pull():
    """weight 0 is no pull at all; a weight w contracts by (1 - w·η/σ²) per step."""
    sig = torch.tensor([1.0])
    earlier = torch.zeros(1, 3, 2, 2)
    zero = lambda x, lab: torch.zeros_like(x)  # noqa: E731
    none = annealed_langevin(zero, torch.ones(1, 3, 2, 2), sig, SamplerSettings(0.1, 3, earlier_weight=0.0),
                             earlier=earlier)
    assert torch.equal(none, torch.ones(1, 3, 2, 2))
    half = annealed_langevin(zero, torch.ones(1, 3, 2, 2), sig, SamplerSettings(0.1, 3, earlier_weight=0.5),
                             earlier=earlier)
    assert torch.allclose(half, torch.full((1, 3, 2, 2), (1 - 0.05) ** 3))


@pytest.mark.parametrize("init,task", [("malvar", "demosaic"), ("bilinear", "demosaic"), ("biharmonic", "inpaint")])
def test_classical_init_with_skipped_levels(init, task):
    """Starting from a classical estimate at a low level: the result stays close to it
    under a score that is zero (nothing pulls it away), known pixels stay exact."""
    torch.manual_seed(4)
    h, w = 16, 20
    yy, xx = torch.meshgrid(torch.linspace(0, 3, h), torch.linspace(0, 3, w), indexing="ij")
    gt = torch.stack([torch.sin(xx), torch.cos(yy), torch.sin(xx + yy)])[None] * 0.3 + 0.5
    mask = (bayer_mask("rggb", h, w) if task == "demosaic" else random_mask(h, w, 0.5))[None]
    prior = FakePrior(make_transform("pixel_scale"), score=lambda x, lab: torch.zeros_like(x),
                      sigmas=(1.0, 0.5, 0.1, 0.05))
    calls = []
    prior._score = lambda x, lab: calls.append(int(lab[0])) or torch.zeros_like(x)
    out = restore_image(prior, gt * mask, mask,
                        replace(SETTINGS, init=init, start_level=2, denoise=False, step_lr=1e-3, n_steps_each=2))
    assert calls == [2, 2, 3, 3]  # only the last two levels ran
    from classical import run_baseline
    assert torch.allclose(out, run_baseline(init, (gt * mask)[0], mask[0])[None], atol=1e-5)
    assert torch.equal(out[mask > 0.5], gt[mask > 0.5])


def test_coarse_to_fine_start_frees_only_the_inside_of_the_hole_before_the_start_level():
    """hole_sigma_start: the levels above the start move only pixels far from every measured
    pixel; the rest stays at the classical start until the start level, then all move."""
    torch.manual_seed(5)
    h, w = 24, 24
    gt = torch.rand(1, 3, h, w)
    mask = box_mask(h, w, 12)[None]  # a 12×12 hole: farther than 4 px from its edge is the central 4×4
    prior = FakePrior(make_transform("identity"), sigmas=(1.0, 0.5, 0.1, 0.05))
    labels, iterates = [], []
    prior._score = lambda x, lab: labels.append(int(lab[0])) or (0.3 - x)
    settings = replace(SETTINGS, init="biharmonic", sigma_start=0.1, hole_sigma_start=1.0, hole_distance=4,
                       denoise=False, n_steps_each=2, step_lr=1e-3)
    out = restore_image(prior, gt * mask, mask, settings, callback=lambda step, x, part: iterates.append(x.clone()))
    assert labels == [0, 0, 1, 1, 2, 2, 3, 3]  # from the holes' level down
    assert settings.evaluations(prior.sigmas) == 8
    from classical import run_baseline
    init = run_baseline("biharmonic", (gt * mask)[0], mask[0])[None]
    inside = torch.zeros(1, 3, h, w, dtype=torch.bool)
    inside[..., 10:14, 10:14] = True
    ring = (mask < 0.5) & ~inside
    for x in iterates[:4]:  # levels 0 and 1: the ring held, the inside free
        assert torch.allclose(x[ring], init[ring], atol=1e-6)
        assert not torch.allclose(x[inside], init[inside], atol=1e-3)
    assert not torch.allclose(iterates[4][ring], init[ring], atol=1e-3)  # released at the start level
    assert torch.equal(out[mask > 0.5], gt[mask > 0.5])


def test_a_hole_prior_samples_the_first_levels_and_the_main_prior_the_rest():
    """hole_prior: the hole prior (levels to σ 1, its own transform) runs from hole_sigma_start
    down to the main start σ with the ring held, without a final denoising step; the main prior
    (levels to σ 0.1 only) then starts from that result at its start level, the same step scale."""
    torch.manual_seed(6)
    h, w = 24, 24
    gt = torch.rand(1, 3, h, w)
    mask = box_mask(h, w, 12)[None]
    hole = FakePrior(make_transform("pixel_scale"), sigmas=(1.0, 0.5, 0.2, 0.1, 0.05))
    main = FakePrior(make_transform("identity"), sigmas=(0.1, 0.05, 0.025))
    calls, seen = [], []
    hole._score = lambda x, lab: calls.append(("hole", int(lab[0]), x.shape[1])) or (0.3 - x)
    main._score = lambda x, lab: calls.append(("main", int(lab[0]), x.shape[1])) or seen.append(x.clone()) or (0.3 - x)
    settings = replace(SETTINGS, init="biharmonic", step_lr=None, step_scale=0.4, sigma_start=0.1,
                       hole_sigma_start=1.0, n_steps_each=2, denoise=True, temperature=0.0)
    stats = {}
    out = restore_image(main, gt * mask, mask, settings, stats=stats, hole_prior=hole)
    assert calls == [("hole", i, 12) for i in (0, 0, 1, 1, 2, 2)] + [("main", i, 3) for i in (0, 0, 1, 1, 2, 2, 2)]
    from sampling.restore_image import evaluations
    assert stats["nfe"] == evaluations(main, settings, hole) == 13
    coarse, fine = settings.hole_stages(main.sigmas)
    assert coarse.for_levels(hole.sigmas).step_lr == pytest.approx(0.4 * 0.05 ** 2)  # η = 0.4·σ² on both
    assert fine.for_levels(main.sigmas).step_lr == pytest.approx(0.4 * 0.025 ** 2)
    assert not coarse.denoise and fine.hole_sigma_start is None
    from classical import run_baseline
    init = run_baseline("biharmonic", (gt * mask)[0], mask[0])[None]
    inside = torch.zeros(1, 3, h, w, dtype=torch.bool)
    inside[..., 10:14, 10:14] = True
    ring = (mask < 0.5) & ~inside
    start = seen[0]  # where the main prior began (temperature 0: the score is read at the iterate)
    assert torch.allclose(start[ring], init[ring], atol=1e-5)  # held through the hole prior's levels
    assert not torch.allclose(start[inside], init[inside], atol=1e-3)  # moved by the hole prior
    assert torch.equal(out[mask > 0.5], gt[mask > 0.5])
    with pytest.raises(Exception, match="hole_sigma_start"):
        restore_image(main, gt * mask, mask, replace(settings, hole_sigma_start=None), hole_prior=hole)


def test_the_holes_levels_take_their_own_number_of_steps():
    """hole_n_steps_each: the levels where only the holes' insides move run that many steps (with one
    prior or with a hole prior); the rest keep n_steps_each; the evaluations counted are those run."""
    h, w = 24, 24
    gt = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(8))
    mask = box_mask(h, w, 12)[None]
    prior = FakePrior(make_transform("identity"), sigmas=(1.0, 0.5, 0.1, 0.05))
    labels = []
    prior._score = lambda x, lab: labels.append(int(lab[0])) or (0.3 - x)
    settings = replace(SETTINGS, init="biharmonic", sigma_start=0.1, hole_sigma_start=1.0, denoise=True,
                       n_steps_each=2, hole_n_steps_each=3, step_lr=1e-3)
    stats = {}
    restore_image(prior, gt * mask, mask, settings, stats=stats)
    assert labels == [0, 0, 0, 1, 1, 1, 2, 2, 3, 3, 3]
    assert stats["nfe"] == settings.evaluations(prior.sigmas) == len(labels)
    hole = FakePrior(make_transform("identity"), sigmas=(1.0, 0.5, 0.2, 0.1, 0.05))
    main = FakePrior(make_transform("identity"), sigmas=(0.1, 0.05))
    calls = []
    hole._score = lambda x, lab: calls.append(("hole", int(lab[0]))) or (0.3 - x)
    main._score = lambda x, lab: calls.append(("main", int(lab[0]))) or (0.3 - x)
    stats = {}
    restore_image(main, gt * mask, mask, replace(settings, hole_n_steps_each=4), stats=stats, hole_prior=hole)
    assert calls == [("hole", i) for i in (0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2)] + [("main", i) for i in (0, 0, 1, 1, 1)]
    from sampling.restore_image import evaluations
    assert stats["nfe"] == evaluations(main, replace(settings, hole_n_steps_each=4), hole) == len(calls)


def test_an_image_with_holes_starts_from_hole_init_and_one_without_from_init():
    """hole_init: a mask with holes farther than hole_distance from the measurement starts (hole prior
    and main prior alike) from that classical estimate, as test.init would; a mask without holes keeps
    test.init, bit for bit."""
    h, w = 24, 24
    gt = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(9))
    hole = FakePrior(make_transform("identity"), sigmas=(1.0, 0.5, 0.2, 0.1, 0.05))
    main = FakePrior(make_transform("identity"), sigmas=(0.1, 0.05))
    starts = []
    hole._score = lambda x, lab: starts.append(x.clone()) or (0.3 - x)
    main._score = lambda x, lab: (0.3 - x)
    settings = replace(SETTINGS, init="biharmonic", step_lr=None, step_scale=0.4, sigma_start=0.1,
                       hole_sigma_start=1.0, n_steps_each=2, temperature=0.0)
    box = box_mask(h, w, 12)[None]

    def run(mask, **changes):
        starts.clear()
        torch.manual_seed(3)
        out = restore_image(main, gt * mask, mask, replace(settings, **changes), hole_prior=hole)
        return out, starts[0] if starts else None

    out, start = run(box, hole_init="harmonic")
    from classical import run_baseline
    assert torch.allclose(start, run_baseline("harmonic", (gt * box)[0], box[0])[None], atol=1e-6)
    assert torch.equal(out, run(box, init="harmonic")[0])
    assert not torch.equal(out, run(box)[0])
    scattered = random_mask(h, w, 0.5, torch.Generator().manual_seed(8))[None]
    assert torch.equal(run(scattered, hole_init="harmonic")[0], run(scattered)[0])


def test_the_reduced_measurement_keeps_only_blocks_measured_whole():
    """A pixel of the half-resolution measurement is measured where all four of its pixels are (per
    channel), at their mean; an odd edge averages the pixels its block has."""
    from sampling.restore_image import reduced
    y = torch.arange(75, dtype=torch.float32).reshape(1, 3, 5, 5) / 75
    mask = torch.ones(1, 3, 5, 5)
    mask[0, 0, 0, 0] = 0  # one missing sample: the red of block (0, 0) is unmeasured, its green is not
    small_y, small_mask = reduced(y * mask, mask, 2)
    assert small_y.shape == small_mask.shape == (1, 3, 3, 3)
    assert small_mask[0, 0, 0, 0] == 0 and small_y[0, 0, 0, 0] == 0
    assert small_mask[0, 1].all() and small_mask.sum() == 26
    assert torch.allclose(small_y[0, 1, 0, 0], y[0, 1, :2, :2].mean())
    assert torch.allclose(small_y[0, 2, 2, 1], y[0, 2, 4, 2:4].mean())  # the bottom edge: two pixels
    assert torch.allclose(small_y[0, 2, 2, 2], y[0, 2, 4, 4])


def test_an_image_with_holes_is_restored_at_half_resolution_first():
    """hole_scale 2: the hole prior and the main prior restore the image at half size first (the
    preset's stages), then the main prior alone from the start level at full size, begun at that
    result enlarged; the measured pixels stay exact and the evaluations counted are those run. A mask
    without holes, an image too small to halve and one whose halved form has no measured pixel run as
    without the option."""
    h, w = 32, 32
    gt = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(10))
    hole = FakePrior(make_transform("identity"), sigmas=(1.0, 0.5, 0.2, 0.1, 0.05))
    main = FakePrior(make_transform("identity"), sigmas=(0.1, 0.05))
    calls = []
    hole._score = lambda x, lab: calls.append(("hole", x.shape[-1], int(lab[0]))) or (0.3 - x)
    main._score = lambda x, lab: calls.append(("main", x.shape[-1], int(lab[0]))) or (0.3 - x)
    settings = replace(SETTINGS, init="biharmonic", hole_init="harmonic", step_lr=None, step_scale=0.4,
                       sigma_start=0.1, hole_sigma_start=1.0, n_steps_each=1, hole_n_steps_each=2, hole_scale=2)
    mask = box_mask(h, w, 20)[None]  # halved, a 10×10 hole: its middle is 5 px from the measurement
    stats = {}
    torch.manual_seed(0)
    out = restore_image(main, gt * mask, mask, settings, stats=stats, hole_prior=hole)
    half = [("hole", 16, i) for i in (0, 0, 1, 1, 2, 2)] + [("main", 16, i) for i in (0, 1, 1)]
    assert calls == half + [("main", 32, i) for i in (0, 1, 1)]
    from sampling.restore_image import evaluations
    assert stats["nfe"] == evaluations(main, settings, hole) == len(calls)
    assert torch.equal(out[mask > 0.5], gt[mask > 0.5])
    assert not torch.equal(out, restore_image(main, gt * mask, mask, replace(settings, hole_scale=1),
                                              hole_prior=hole))
    scattered = random_mask(h, w, 0.5, torch.Generator().manual_seed(8))[None]
    torch.manual_seed(1)
    with_option = restore_image(main, gt * scattered, scattered, settings, hole_prior=hole)
    torch.manual_seed(1)
    assert torch.equal(with_option, restore_image(main, gt * scattered, scattered, replace(settings, hole_scale=1),
                                                  hole_prior=hole))
    calls.clear()
    small = box_mask(6, 6, 4)[None]  # a hole at hole_distance 1; halved, every pixel touches it
    restore_image(main, gt[..., :6, :6] * small, small, replace(settings, hole_distance=1), hole_prior=hole)
    assert {(name, size) for name, size, _ in calls} == {("hole", 6), ("main", 6)}
    calls.clear()
    lifted = FakePrior(make_transform("pixel_scale"), sigmas=(0.1, 0.05))  # takes images of 8×8 and more
    lifted._score = lambda x, lab: calls.append(("main", x.shape[-1] * 2, int(lab[0]))) or (0.3 - x)
    small = box_mask(8, 8, 4)[None]  # halved, 4×4 with a measured ring: too small for this network
    restore_image(lifted, gt[..., :8, :8] * small, small, replace(settings, hole_distance=1, hole_sigma_start=None))
    assert {size for _, size, _ in calls} == {8}


def test_a_mask_without_holes_skips_the_coarse_to_fine_start():
    """A random mask leaves no pixel farther than 4 px from a measured one: with or without a hole
    prior, the run is the plain run from the start level (the same evaluations and result)."""
    h, w = 24, 24
    gt = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(7))
    mask = random_mask(h, w, 0.5, torch.Generator().manual_seed(8))[None]
    hole = FakePrior(make_transform("identity"), sigmas=(1.0, 0.5, 0.2, 0.1, 0.05))
    hole._score = lambda x, lab: pytest.fail("the hole prior ran on a mask without holes")
    main = FakePrior(make_transform("identity"), sigmas=(1.0, 0.5, 0.1, 0.05))
    settings = replace(SETTINGS, init="biharmonic", sigma_start=0.1, hole_sigma_start=1.0, n_steps_each=2)
    outs, nfes = [], []
    for s, hp in ((replace(settings, hole_sigma_start=None), None), (settings, None), (settings, hole)):
        stats = {}
        torch.manual_seed(9)
        outs.append(restore_image(main, gt * mask, mask, s, stats=stats, hole_prior=hp))
        nfes.append(stats["nfe"])
    assert nfes == [2 * 2 + 1] * 3
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])


def test_coarse_to_fine_start_must_begin_above_the_start_level():
    from datasets.errors import HGMError
    settings = replace(SETTINGS, sigma_start=0.5, hole_sigma_start=0.5)
    with pytest.raises(HGMError, match="test.hole_sigma_start=0.5: the holes must start above"):
        settings.evaluations(torch.tensor([1.0, 0.5, 0.1]))
    assert replace(settings, hole_sigma_start=None).evaluations(torch.tensor([1.0, 0.5, 0.1])) == 2 * 3 + 1


def test_the_first_level_follows_the_noise_with_a_noise_start_ratio():
    from sampling.restore_image import restore_image as restore
    sigmas = torch.tensor([0.2, 0.1328, 0.0882, 0.0586, 0.0389, 0.0258])
    settings = replace(SETTINGS, sigma_start=0.0882, noise_start_ratio=2.25)
    assert settings.for_noise(0.0) is settings
    assert replace(settings, noise_start_ratio=None).for_noise(0.1).sigma_start == 0.0882
    for noise, level in ((5 / 255, 4), (10 / 255, 2), (15 / 255, 1)):
        assert settings.for_noise(noise).for_levels(sigmas).start_level == level
    per_channel = torch.tensor([5, 15, 10]) / 255  # auto: one per channel, the largest counts
    assert settings.for_noise(per_channel).for_levels(sigmas).start_level == 1
    h, w = 16, 16
    gt, mask = torch.rand(1, 3, h, w), bayer_mask("rggb", h, w)[None]
    prior = FakePrior(make_transform("identity"), sigmas=tuple(sigmas.tolist()))
    for noise, n in ((15 / 255, 5 * 3 + 1), (0.0, 4 * 3 + 1)):  # levels 1..5 or 2..5, 3 steps each, denoising
        stats = {}
        restore(prior, gt * mask, mask, replace(settings, start_level=None), noise_sigma=noise, stats=stats)
        assert stats["nfe"] == n


def test_the_step_follows_the_noise_with_a_noise_step_total():
    """The levels a noisy measurement runs (from the one its noise picks) add up to noise_step_total
    units η_i/σ_i²; without noise, step_scale applies as given."""
    sigmas = torch.tensor([0.2, 0.1328, 0.0882, 0.0586, 0.0389, 0.0258, 0.0171, 0.0114, 0.0075, 0.005])
    settings = SamplerSettings(step_lr=None, step_scale=0.4, n_steps_each=3, sigma_start=0.039,
                               noise_start_ratio=2.25, noise_step_total=6.0)
    assert settings.for_noise(0.0).for_levels(sigmas).step_lr == pytest.approx(0.4 * 0.005 ** 2)
    for noise, levels in ((5 / 255, 6), (10 / 255, 8), (15 / 255, 9)):
        s = settings.for_noise(noise).for_levels(sigmas)
        assert len(sigmas) - s.start_level == levels
        scale = s.step_lr / 0.005 ** 2
        assert levels * 3 * scale == pytest.approx(6.0)
    assert replace(settings, noise_step_total=None).for_noise(10 / 255).for_levels(sigmas).step_lr == \
        pytest.approx(0.4 * 0.005 ** 2)


def test_near_measurement_is_a_chessboard_distance():
    from sampling.restore_image import near_measurement
    mask = torch.zeros(1, 3, 9, 9)
    mask[..., 4, 4] = 1
    near = near_measurement(mask, 2)
    assert near.shape == (1, 1, 9, 9) and int(near.sum()) == 25 and near[0, 0, 2:7, 2:7].min() == 1


def test_start_level_out_of_range_is_an_error():
    with pytest.raises(ValueError, match="start level"):
        annealed_langevin(lambda x, lab: x, torch.rand(1, 3, 4, 4), torch.tensor([1.0, 0.1]),
                          SamplerSettings(1e-3, 1, start_level=2))


@pytest.mark.parametrize("setting,word", [({"update": "euler"}, "test.update"), ({"init": "zeros"}, "test.init"),
                                          ({"step_lr": 0.0}, "test.step_lr"),
                                          ({"temperature": -0.5}, "test.temperature"),
                                          ({"start_level": -1}, "test.start_level"),
                                          ({"step_scale": 0.0}, "test.step_scale"),
                                          ({"sigma_start": -0.1}, "test.sigma_start"),
                                          ({"hole_sigma_start": 0.0}, "test.hole_sigma_start"),
                                          ({"hole_distance": 0}, "test.hole_distance"),
                                          ({"hole_n_steps_each": 0}, "test.hole_n_steps_each"),
                                          ({"hole_init": "zeros"}, "test.hole_init"),
                                          ({"hole_scale": 0}, "test.hole_scale"),
                                          ({"noise_start_ratio": 0.0}, "test.noise_start_ratio"),
                                          ({"n_samples": 0}, "test.n_samples"),
                                          ({"noise_step_total": 0.0}, "test.noise_step_total"),
                                          ({"patch_size": 16, "patch_stride": 32}, "test.patch_stride")])
def test_sampler_settings_are_checked(setting, word):
    from datasets.errors import HGMError
    with pytest.raises(HGMError, match=word):
        replace(SETTINGS, **setting).validate()


def test_a_start_level_the_prior_does_not_have_is_an_error():
    from datasets.errors import HGMError
    with pytest.raises(HGMError, match="test.start_level=10 .this prior has 10 noise levels"):
        replace(SETTINGS, start_level=10).for_levels(torch.linspace(1, 0.1, 10))


def test_mean_of_samples_is_the_mean_of_independent_restorations():
    """n_samples 3 equals three plain runs drawn in turn from the same random stream, averaged, with
    the measured pixels exact and three times the evaluations."""
    h, w = 16, 16
    gt = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(3))
    mask = random_mask(h, w, 0.5, torch.Generator().manual_seed(4))[None]
    prior = FakePrior(make_transform("pixel_scale"))
    one = replace(SETTINGS, init="measurement")
    torch.manual_seed(5)
    runs, nfe = [], 0
    for _ in range(3):
        stats = {}
        runs.append(restore_image(prior, gt * mask, mask, one, stats=stats))
        nfe += stats["nfe"]
    torch.manual_seed(5)
    stats = {}
    mean = restore_image(prior, gt * mask, mask, replace(one, n_samples=3), stats=stats)
    assert torch.allclose(mean, sum(runs) / 3, atol=1e-6)
    assert not torch.allclose(runs[0], runs[1])  # the samples differ
    assert torch.equal(mean[mask > 0.5], gt[mask > 0.5])
    assert stats["nfe"] == nfe == 3 * one.evaluations(prior.sigmas)
    assert replace(one, n_samples=3).evaluations(prior.sigmas) == nfe


def test_mean_of_samples_is_nearer_the_posterior_mean_than_one_sample():
    """Prior N(0.5, 0.1²) on every unknown sample (a score that ignores σ): the posterior mean of an
    unknown pixel is 0.5; one sample strays by about 0.1, the mean of 16 by about 0.025."""
    h, w = 16, 16
    mask = random_mask(h, w, 0.5, torch.Generator().manual_seed(4))[None]
    prior = FakePrior(make_transform("identity"), score=lambda x, lab: (0.5 - x) / 0.01, sigmas=(0.1, 0.05))
    settings = SamplerSettings(step_lr=1e-3, n_steps_each=200, init="measurement", update="langevin")
    errors = {}
    for n in (1, 16):
        torch.manual_seed(6)
        out = restore_image(prior, torch.rand(1, 3, h, w) * mask, mask, replace(settings, n_samples=n))
        errors[n] = float(((out - 0.5)[(mask < 0.5).expand_as(out)]).pow(2).mean().sqrt())
    assert 0.06 < errors[1] < 0.14
    assert errors[16] < errors[1] / 3
