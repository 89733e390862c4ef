"""Annealed Langevin dynamics with data consistency (HGM, Sec. 3.3; Alg. 1).

The sampler is a plain function: it gets a score function, an initial state
in the lifted space, the noise levels and step sizes, a data-consistency
projection and an optional progressive anchor. It never sees a ground truth;
a caller that wants a trace passes `callback`.
"""
import math

import torch
from tqdm import tqdm


class SamplerDiverged(RuntimeError):
    """The iterate left the finite range (step_lr too large for the prior)."""


def step_sizes(sigmas, step_lr):
    """η_i = step_lr · (σ_i / σ_L)² (the NCSN schedule the paper keeps)."""
    return [step_lr * (float(s) / float(sigmas[-1])) ** 2 for s in sigmas]


def annealed_langevin(score_fn, x, sigmas, step_lr, n_steps_each, project=None, anchor=None, anchor_weight=1.0,
                      first_level=0, update="reference", denoise=False, callback=None, progress=None, divergence_limit=1e4):
    """Run the annealed sampler and return the final iterate (lifted space).

    score_fn(x, labels) -> score; x: B×C×H×W initial state.
    project(x) -> x with the measurement enforced (called after every step).
    anchor: lifted earlier estimate; adds −η·λ·(x − anchor), λ = anchor_weight/σ_i²
    (progressive strategy, paper Eq. 11; the paper's weight is 1).
    update: "reference" — x ← x + η s(x̂); x̂ ← x + √(2η) z (the score is read at a
    noisy copy, as the paper's code does); "langevin" — x ← x + η s(x) + √(2η) z.
    denoise: one more evaluation at the last level, x ← x + σ_L² s(x) (Tweedie),
    which removes the sampler's leftover noise.
    first_level: skip the levels before it (a good initial state needs no large noise).
    callback(step, x): called after every step (for traces); progress: a tqdm bar.
    """
    project = project or (lambda v: v)
    if update not in ("reference", "langevin"):
        raise ValueError(f"unknown update {update!r} (reference | langevin)")
    x = project(x)
    x_noisy = x
    b = x.shape[0]
    step = 0
    if not 0 <= first_level < len(sigmas):
        raise ValueError(f"first level {first_level} is outside the {len(sigmas)} noise levels")
    for i, (sigma, eta) in enumerate(zip(sigmas, step_sizes(sigmas, step_lr))):
        if i < first_level:
            continue
        sigma = float(sigma)
        labels = torch.full((b,), i, dtype=torch.long, device=x.device)
        noise_scale = math.sqrt(2.0 * eta)
        for _ in range(n_steps_each):
            if update == "reference":
                x = x + eta * score_fn(x_noisy, labels)
            else:
                x = x + eta * score_fn(x, labels) + noise_scale * torch.randn_like(x)
            if anchor is not None:
                x = x - (anchor_weight * eta / sigma ** 2) * (x - anchor)
            x = project(x)
            if update == "reference":
                x_noisy = x + noise_scale * torch.randn_like(x)
            step += 1
            if callback is not None:
                callback(step, x)
            if progress is not None:
                progress.update(1)
        # one host sync per level, not per step
        if not bool(torch.isfinite(x).all()) or float(x.abs().amax()) > divergence_limit:
            raise SamplerDiverged(f"the iterate diverged at noise level {i + 1} of {len(sigmas)} "
                                  f"(sigma {sigma:.4g}); step_lr={step_lr:g} is too large for this prior")
    if denoise:
        labels = torch.full((b,), len(sigmas) - 1, dtype=torch.long, device=x.device)
        x = project(x + float(sigmas[-1]) ** 2 * score_fn(x, labels))
    return x


def nfe(n_levels, n_steps_each, denoise):
    """Network evaluations per sample."""
    return n_levels * n_steps_each + int(bool(denoise))


def level_bar(desc):
    """A per-image bar; restore_image sets its total (levels × steps × chunks)."""
    return tqdm(desc=desc, leave=False, dynamic_ncols=True, mininterval=1.0)
