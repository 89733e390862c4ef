"""Annealed denoising score matching: a hand-computed case, Gaussian data with a
known optimal score, and the sigma^p weighting."""
import math

import pytest
import torch

from losses.dsm import anneal_dsm_loss
from models.ncsn import CondRefineNetDilated, get_sigmas


def const_score(values):
    calls = []

    def fn(x, labels):
        calls.append((x.clone(), labels.clone()))
        return values.clone()
    fn.calls = calls
    return fn


# A 2-sample, 2-dimensional case whose numbers are exact in binary floating point.
X = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(2, 1, 1, 2)
NOISE = torch.tensor([[0.5, -1.0], [2.0, 0.0]]).view(2, 1, 1, 2)
SCORE = torch.tensor([[1.0, 0.0], [0.0, -1.0]]).view(2, 1, 1, 2)
SIGMAS = torch.tensor([1.0, 0.5])
LABELS = torch.tensor([0, 1])
# sample 0: sigma 1,   target -z/1   = [-0.5, 1],  s - t = [1.5, -1], 1/2 |.|^2 = 1.625, x sigma^2 = 1.625
# sample 1: sigma 1/2, target -z/0.5 = [-4, 0],    s - t = [4, -1],   1/2 |.|^2 = 8.5,   x sigma^2 = 2.125
PER_SAMPLE = [1.625, 8.5]


def test_hand_computed_value():
    fn = const_score(SCORE)
    loss = anneal_dsm_loss(fn, X, SIGMAS, LABELS, anneal_power=2.0, noise=NOISE)
    assert loss.item() == pytest.approx((1.625 * 1.0 + 8.5 * 0.25) / 2, abs=1e-6)  # 1.875
    # the network saw x + sigma z and the labels
    (seen, seen_labels), = fn.calls
    assert torch.equal(seen.view(2, 2), torch.tensor([[1.5, 1.0], [4.0, 4.0]]))
    assert torch.equal(seen_labels, LABELS)


def test_default_anneal_power_is_two():
    a = anneal_dsm_loss(const_score(SCORE), X, SIGMAS, LABELS, noise=NOISE)
    b = anneal_dsm_loss(const_score(SCORE), X, SIGMAS, LABELS, anneal_power=2.0, noise=NOISE)
    assert a.item() == b.item()


@pytest.mark.parametrize("power", [0.0, 1.0, 2.0, 3.0])
def test_anneal_power_weights_each_sample_by_sigma_power(power):
    loss = anneal_dsm_loss(const_score(SCORE), X, SIGMAS, LABELS, anneal_power=power, noise=NOISE)
    want = (PER_SAMPLE[0] * 1.0 ** power + PER_SAMPLE[1] * 0.5 ** power) / 2
    assert loss.item() == pytest.approx(want, rel=1e-6)
    if power == 0.0:
        assert loss.item() == pytest.approx(5.0625, rel=1e-6)


def test_anneal_power_two_balances_levels_for_the_zero_score():
    """With s = 0 the loss is 1/2 |z|^2 / sigma^2 per sample: sigma^2 weighting makes it
    the same at every level, sigma^0 makes small levels dominate by 1/sigma^2."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(8, 3, 4, 4, generator=g)
    z = torch.randn(x.shape, generator=g)
    sigmas = torch.tensor([1.0, 0.1])
    zero = lambda xt, y: torch.zeros_like(xt)  # noqa: E731
    half_sq = 0.5 * (z ** 2).flatten(1).sum(1).mean().item()
    for level, sigma in enumerate(sigmas.tolist()):
        labels = torch.full((8,), level)
        p2 = anneal_dsm_loss(zero, x, sigmas, labels, 2.0, z).item()
        p0 = anneal_dsm_loss(zero, x, sigmas, labels, 0.0, z).item()
        assert p2 == pytest.approx(half_sq, rel=1e-5)
        assert p0 == pytest.approx(half_sq / sigma ** 2, rel=1e-5)


def test_draws_labels_and_noise_when_not_given():
    x = torch.rand(64, 3, 2, 2)
    seen = []

    def fn(xt, labels):
        seen.append(labels)
        return torch.zeros_like(xt)
    torch.manual_seed(3)
    a = anneal_dsm_loss(fn, x, torch.tensor([1.0, 0.5, 0.25]))
    torch.manual_seed(3)
    b = anneal_dsm_loss(fn, x, torch.tensor([1.0, 0.5, 0.25]))
    assert a.item() == b.item()
    assert seen[0].shape == (64,) and seen[0].min() >= 0 and seen[0].max() <= 2
    assert len(set(seen[0].tolist())) == 3  # all levels drawn among 64 samples


def test_drawn_labels_stay_among_the_first_n_levels():
    seen = []

    def fn(xt, labels):
        seen.append(labels)
        return torch.zeros_like(xt)
    anneal_dsm_loss(fn, torch.rand(200, 3, 2, 2), torch.tensor([1.0, 0.5, 0.25, 0.125]), n_levels=2)
    assert set(seen[0].tolist()) == {0, 1}


def test_gradient_reaches_the_score_network():
    model = CondRefineNetDilated(6, 4, 2)
    loss = anneal_dsm_loss(model, torch.rand(2, 6, 8, 8), get_sigmas(1.0, 0.1, 2))
    loss.backward()
    assert model.end_conv.weight.grad is not None and model.end_conv.weight.grad.abs().sum() > 0


# ---- Gaussian data: the optimal score is known in closed form -------------------------------------------
#
# x ~ N(mu, s^2 I_d), x~ = x + sigma z. The perturbed density is N(mu, (s^2 + sigma^2) I), with score
# s*(x~) = -(x~ - mu)/(s^2 + sigma^2); the DSM target is t = -z/sigma. With e = x - mu,
#     s* - t = a e + b z,  a = -1/(s^2+sigma^2),  b = 1/sigma - sigma/(s^2+sigma^2) = s^2/(sigma (s^2+sigma^2)),
# whose coordinates are N(0, v) with v = a^2 s^2 + b^2 = s^2 / (sigma^2 (s^2 + sigma^2)).
# So 1/2 |s* - t|^2 sigma^2 = c chi^2_d with c = s^2 / (2 (s^2 + sigma^2)):
#     mean d c,  variance 2 d c^2  per sample at level sigma.
# With n samples at each of L levels the loss (their mean) has mean d/L sum_i c_i and standard error
#     sqrt(sum_i 2 d c_i^2 n) / (L n).
# A score scaled by k has excess loss 1/2 (k-1)^2 E|s*|^2 sigma^2 = 1/2 (k-1)^2 d sigma^2 / (s^2+sigma^2)
# (the cross term vanishes as s* = E[t | x~]); a shift by delta adds 1/2 d delta^2 sigma^2.

D_SHAPE = (2, 2, 2)  # d = 8
D = 8
MU, S = 0.3, 0.5
GAUSS_SIGMAS = torch.tensor([1.0, 0.5, 0.1], dtype=torch.float64)
N_PER_LEVEL = 20000
N_CHUNKS = 40


def gaussian_batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    L = len(GAUSS_SIGMAS)
    n = N_PER_LEVEL * L
    x = MU + S * torch.randn((n, *D_SHAPE), generator=g, dtype=torch.float64)
    labels = torch.arange(n) % L  # balanced levels: no variance from drawing labels
    noise = torch.randn(x.shape, generator=g, dtype=torch.float64)
    return x, labels, noise


def optimal_score(xt, labels):
    var = (S ** 2 + GAUSS_SIGMAS[labels] ** 2).view(-1, 1, 1, 1)
    return -(xt - MU) / var


def chunk_losses(score_fn, x, labels, noise):
    """Loss on N_CHUNKS equal, level-balanced chunks; their mean is the loss on everything."""
    size = len(x) // N_CHUNKS
    return torch.tensor([anneal_dsm_loss(score_fn, x[i:i + size], GAUSS_SIGMAS, labels[i:i + size], 2.0,
                                         noise[i:i + size]).item() for i in range(0, len(x), size)],
                        dtype=torch.float64)


def test_gaussian_optimal_score_matches_closed_form():
    x, labels, noise = gaussian_batch()
    sig2 = GAUSS_SIGMAS ** 2
    c = S ** 2 / (2 * (S ** 2 + sig2))
    L, n = len(GAUSS_SIGMAS), N_PER_LEVEL
    expected = D * c.mean().item()
    se = math.sqrt((2 * D * c ** 2 * n).sum().item()) / (L * n)
    loss = anneal_dsm_loss(optimal_score, x, GAUSS_SIGMAS, labels, 2.0, noise).item()
    assert abs(loss - expected) < 5 * se, (loss, expected, se)  # 5 SE: false alarm rate ~6e-7
    assert 5 * se < 0.02 * expected  # the check is sharp: 2% of the value

    # the same holds level by level
    for i in range(L):
        sel = labels == i
        li = anneal_dsm_loss(optimal_score, x[sel], GAUSS_SIGMAS, labels[sel], 2.0, noise[sel]).item()
        se_i = math.sqrt(2 * D / n) * c[i].item()
        assert abs(li - D * c[i].item()) < 5 * se_i


def test_gaussian_wrong_scores_have_larger_loss():
    x, labels, noise = gaussian_batch(seed=1)
    sig2 = GAUSS_SIGMAS ** 2
    best = chunk_losses(optimal_score, x, labels, noise)
    wrong = {
        "scaled": (lambda xt, y: 1.2 * optimal_score(xt, y),
                   (0.5 * 0.2 ** 2 * D * sig2 / (S ** 2 + sig2)).mean().item()),
        "shifted": (lambda xt, y: optimal_score(xt, y) + 0.1,
                    (0.5 * D * 0.1 ** 2 * sig2).mean().item()),
        "ignores sigma": (lambda xt, y: -(xt - MU) / (S ** 2 + 0.25), None),
    }
    for name, (fn, excess) in wrong.items():
        other = chunk_losses(fn, x, labels, noise)
        diff = other - best  # same data, labels and noise: only the score differs
        assert diff.mean() > 0, name
        if excess is not None:
            se = diff.std().item() / math.sqrt(len(diff))
            assert abs(diff.mean().item() - excess) < 5 * se + 1e-12, (name, diff.mean().item(), excess, se)
            assert 5 * se < 0.5 * excess  # the comparison is sharp enough to mean something


def test_sigmas_are_geometric():
    s = get_sigmas(1.0, 0.01, 10)
    assert s[0].item() == pytest.approx(1.0) and s[-1].item() == pytest.approx(0.01)
    ratios = s[1:] / s[:-1]
    assert torch.allclose(ratios, ratios[0].expand_as(ratios), rtol=1e-5)


def test_tiny_training_decreases_the_loss():
    """A 2-level NCSN trained for 40 steps on blocky random images beats both its
    initial loss and the zero score on a fixed evaluation batch."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    data = torch.rand(64, 3, 4, 4, generator=g).repeat_interleave(2, -1).repeat_interleave(2, -2)
    model = CondRefineNetDilated(3, 8, 2)
    sigmas = get_sigmas(1.0, 0.1, 2)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    xe, le = data[:16], torch.arange(16) % 2
    ne = torch.randn(xe.shape, generator=g)

    def evaluate(fn):
        with torch.no_grad():
            return anneal_dsm_loss(fn, xe, sigmas, le, 2.0, ne).item()
    zero = evaluate(lambda xt, y: torch.zeros_like(xt))
    before = evaluate(model)
    for _ in range(40):
        loss = anneal_dsm_loss(model, data[torch.randint(0, 64, (8,))], sigmas)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = evaluate(model)
    assert after < 0.85 * zero, (before, after, zero)
    assert after < 0.8 * before, (before, after, zero)
