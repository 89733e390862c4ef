"""Noisy measurements: the noise-weighted data-consistency step against a closed form, its
reduction to exact replacement at σ 0, the seeded noise of an evaluation run and the `auto` estimate."""
import csv
import os
from dataclasses import replace

import pytest
import torch

from datasets.errors import HGMError
from datasets.masks import bayer_mask, name_seed, random_mask
from datasets.noise import add_measurement_noise, estimate_noise_sigma, noise_seed, parse_noise_sigma
from datasets.transforms import make_transform
from sampling import SamplerSettings, annealed_langevin, restore_image
from sampling.consistency import MaskedObservation
from tests.test_sampler import FakePrior, gaussian_problem

torch.set_num_threads(1)


def noisy_gaussian_case(d=12, s=0.3):
    """Prior N(mu, C); coordinates 0, 3, 6, 9 measured with noise s. At level σ the perturbed prior
    is N(mu, C + σ² I) with score −(C + σ² I)⁻¹ (x − mu) (the Gaussian case of HGM Eq. 4)."""
    mu, cov = gaussian_problem(d)
    sigmas = torch.tensor([0.3, 0.173, 0.1], dtype=torch.float64)
    precs = [torch.linalg.inv(cov + float(v) ** 2 * torch.eye(d, dtype=torch.float64)) for v in sigmas]
    known = torch.zeros(d, dtype=torch.bool)
    known[::3] = True
    g = torch.Generator().manual_seed(5)
    x_true = mu + torch.linalg.cholesky(cov) @ torch.randn(d, generator=g, dtype=torch.float64)
    y = torch.where(known, x_true + s * torch.randn(d, generator=g, dtype=torch.float64), torch.zeros(d).double())
    return mu, cov, sigmas, precs, known, y


def posterior_mean(mu, c, known, y, s):
    """E[x | y] for x ~ N(mu, c), y = x[known] + N(0, s² I): mu + c Aᵀ (A c Aᵀ + s² I)⁻¹ (y − A mu)."""
    k = known
    gain = c[:, k] @ torch.linalg.inv(c[k][:, k] + s ** 2 * torch.eye(int(k.sum()), dtype=c.dtype))
    return mu + gain @ (y[k] - mu[k])


def run_case(s, weight_noise, temperature, chains, update="langevin", step_lr=0.02):
    mu, cov, sigmas, precs, known, y = noisy_gaussian_case(s=s)
    d = len(mu)
    op = MaskedObservation(known.double().expand(chains, d))
    yb = y.expand(chains, d)
    torch.manual_seed(0)
    out = annealed_langevin(lambda x, lab: -(x - mu) @ precs[int(lab[0])], torch.rand(chains, d, dtype=torch.float64),
                            sigmas, SamplerSettings(step_lr, 600, update=update, temperature=temperature),
                            consistency=(lambda v, eta: op.weigh(v, yb, weight_noise, eta)) if weight_noise else
                            (lambda v, eta: op.project(v, yb)))
    c = cov + float(sigmas[-1]) ** 2 * torch.eye(d, dtype=torch.float64)
    return out, posterior_mean(mu, c, known, y, s), known, y


@pytest.mark.parametrize("step_lr", [0.005, 0.02])
def test_noise_weighted_consistency_reaches_the_analytic_posterior_mean(step_lr):
    """Temperature 0 makes the sampler deterministic; its fixed point is where the prior's score
    equals the data term's gradient (forward–backward splitting with the proximal step of
    MaskedObservation.weigh), i.e. the mode of N(mu, C + σ_L² I) × N(y; A x, s² I), which for a
    Gaussian is the posterior mean. It must not depend on the step size. Exact replacement (the
    noiseless step) gives another answer here, so the check can tell the two apart."""
    s = 0.3
    out, want, known, y = run_case(s, s, temperature=0.0, chains=1, step_lr=step_lr)
    assert (out[0] - want).abs().max() < 1e-4
    assert (out[0, known] - y[known]).abs().min() > 1e-3  # measured samples are estimates, not the noisy values
    hard, _, _, _ = run_case(s, 0.0, temperature=0.0, chains=1)
    assert (hard[0] - want).abs().max() > 0.05


def test_noise_weighted_langevin_chains_average_to_the_posterior_mean():
    """With noise injected (Langevin, temperature 1) the map is affine plus zero-mean noise, so the
    mean over chains converges to the same fixed point: the posterior mean, within 5 standard
    errors of a mean over 4000 chains (posterior variances bound below by the prior's, ≤ 0.5)."""
    s = 0.3
    out, want, _, _ = run_case(s, s, temperature=1.0, chains=4000)
    se = (0.6 / 4000) ** 0.5
    assert (out.mean(0) - want).abs().max() < 5 * se


def test_weighing_with_a_vanishing_noise_becomes_replacement_and_zero_is_exactly_replacement():
    """(s²x + ηy)/(η + s²) → y as s → 0; restore_image with noise_sigma 0 takes the exact path
    (measured samples equal y bit for bit) and gives exactly what it gave before the argument existed."""
    x, y = torch.rand(2, 3, 5, 6), torch.rand(2, 3, 5, 6)
    mask = random_mask(5, 6, 0.5)
    op = MaskedObservation(mask)
    assert torch.allclose(op.weigh(x, y, 1e-6, 1e-3), op.project(x, y), atol=1e-8)
    assert torch.equal(op.weigh(x, y, 0.1, 1e-3)[:, mask < 0.5], x[:, mask < 0.5])  # unmeasured: untouched
    prior = FakePrior(make_transform("pixel_scale"))
    settings = SamplerSettings(step_lr=0.01, n_steps_each=3, denoise=True)
    y1, m1 = torch.rand(1, 3, 12, 14), bayer_mask("rggb", 12, 14)[None]
    torch.manual_seed(3)
    before = restore_image(prior, y1 * m1, m1, settings)
    torch.manual_seed(3)
    zero = restore_image(prior, y1 * m1, m1, settings, noise_sigma=0.0)
    assert torch.equal(before, zero) and torch.equal(zero[m1 > 0.5], y1[m1 > 0.5])
    torch.manual_seed(3)
    noisy = restore_image(prior, y1 * m1, m1, replace(settings, temperature=0.0), noise_sigma=10 / 255)
    assert not torch.equal(noisy[m1 > 0.5], y1[m1 > 0.5])  # the noisy values are not put back


def test_per_channel_noise_levels_weigh_each_channel_by_its_own_level():
    x, y = torch.zeros(1, 3, 2, 2), torch.ones(1, 3, 2, 2)
    out = MaskedObservation(torch.ones(3, 2, 2)).weigh(x, y, torch.tensor([0.0, 1.0, 3.0]).view(1, 3, 1, 1), 1.0)
    assert out[0, :, 0, 0].tolist() == pytest.approx([1.0, 0.5, 0.1])


def test_the_measurement_noise_is_seeded_by_the_image_name():
    """The same name gives the same noise on every run (and σ only scales it); another name other noise."""
    x, mask = torch.full((3, 8, 8), 0.5), bayer_mask("rggb", 8, 8)
    a, b = add_measurement_noise(x, mask, 10, "kodim01"), add_measurement_noise(x, mask, 10, "kodim01")
    assert torch.equal(a, b)
    assert torch.allclose(add_measurement_noise(x, mask, 5, "kodim01") - x * mask, (a - x * mask) / 2, atol=1e-7)
    assert not torch.equal(a, add_measurement_noise(x, mask, 10, "kodim02"))
    assert torch.equal(a[mask < 0.5], torch.zeros(int((mask < 0.5).sum())))
    assert noise_seed("kodim01") != name_seed("kodim01")  # independent of the image's random mask


@pytest.mark.parametrize("kind", ["mosaic", "holes"])
@pytest.mark.parametrize("sigma255", [5.0, 15.0])
def test_auto_noise_estimate_recovers_the_level_on_a_smooth_image(kind, sigma255):
    """On a smooth image the Haar-MAD estimate is within 10 % of the noise added, per channel,
    for a mosaic (the channel's own lattice) and for an image with holes (adjacent pixels)."""
    h, w = 256, 256
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    x = torch.stack([0.3 + 0.4 * xx, 0.5 + 0.2 * torch.sin(3 * yy), 0.2 + 0.5 * xx * yy])
    mask = bayer_mask("gbrg", h, w) if kind == "mosaic" else random_mask(h, w, 0.3, torch.Generator().manual_seed(0))
    est = estimate_noise_sigma(add_measurement_noise(x, mask, sigma255, "smooth"), mask) * 255
    assert torch.allclose(est, torch.full((3,), sigma255), rtol=0.1), est


def test_noise_sigma_values_are_checked():
    assert parse_noise_sigma(None) == 0.0 and parse_noise_sigma(10) == 10.0 and parse_noise_sigma("Auto") == "auto"
    for bad in (-1, 300, "loud", True):
        with pytest.raises(HGMError, match="test.noise_sigma"):
            parse_noise_sigma(bad)
    with pytest.raises(HGMError, match="too few measured samples"):
        estimate_noise_sigma(torch.rand(3, 6, 6), bayer_mask("rggb", 6, 6))


def test_a_noisy_run_adds_seeded_noise_and_auto_estimates_it_from_degraded_inputs(tmp_path, hgm_log, capsys):
    """Through main.py: with ground truth and noise_sigma 10 the input written is the noisy mosaic
    (the same on a rerun); auto needs degraded inputs and then logs its per-channel estimate."""
    import numpy as np
    from PIL import Image

    import main as hgm_main
    from tests.test_restore_regression import write_images, write_priors
    data, run = write_images(str(tmp_path / "images")), str(tmp_path / "run")
    write_priors(run)
    base = ["--runner", "Test_12ch_demoscaicking_pool", "--doc", "pool", "--config", "tiny.yml", "--run", run, "--test"]
    sets = ["--set", "test.n_steps_each=1", "test.step_lr=1e-5", "test.border=3", "test.init=menon",
            "test.start_level=5"]

    def restore(out, *more):
        return hgm_main.main([*base, "-o", str(out), *sets, *more])
    outs = [tmp_path / f"out{k}" for k in range(2)]
    for out in outs:
        assert restore(out, f"test.data_path={data}", "test.noise_sigma=10") == 0
    noisy = np.asarray(Image.open(outs[0] / "input" / "im0.png")).astype(int)
    assert np.array_equal(noisy, np.asarray(Image.open(outs[1] / "input" / "im0.png")))
    gt = np.asarray(Image.open(os.path.join(data, "im0.png"))).astype(int)
    m = bayer_mask("rggb", *gt.shape[:2]).permute(1, 2, 0).numpy() > 0.5
    assert 5 < np.abs(noisy - gt)[m].std() < 15  # σ 10 (clipped and rounded in the PNG)
    # the first level following the noise: metrics.csv counts the evaluations each image took
    from models.ncsn import get_sigmas
    from runners.config import load_config
    from sampling.settings import nearest_level
    net = load_config("tiny.yml")["model"]
    sigmas = get_sigmas(net["sigma_begin"], net["sigma_end"], net["num_classes"], torch.device("cpu"))
    for ratio in (1, 3):
        out = tmp_path / f"ratio{ratio}"
        assert restore(out, f"test.data_path={data}", "test.noise_sigma=10", f"test.noise_start_ratio={ratio}") == 0
        rows = {r["image"]: r for r in csv.DictReader(open(out / "metrics.csv"))}
        n_eval = len(sigmas) - nearest_level(sigmas, ratio * 10 / 255)
        assert int(float(rows["im0"]["nfe"])) == n_eval
        assert f"{n_eval} evaluations per image (the first level nearest {ratio}× the measurement's noise)" \
            in hgm_log.text  # the run log says what the images will take
    assert restore(tmp_path / "bad", f"test.data_path={data}", "test.noise_sigma=auto") != 0
    assert "test.noise_sigma=auto" in capsys.readouterr().err
    mosaics = tmp_path / "mosaics"
    mosaics.mkdir()
    Image.fromarray((noisy * m).sum(-1).astype(np.uint8)).save(mosaics / "im0.png")
    assert restore(tmp_path / "d", f"test.data_path={mosaics}", "test.noise_sigma=auto",
                   "test.degraded_input=true") == 0
    assert "noise estimated from the measurement" in hgm_log.text
