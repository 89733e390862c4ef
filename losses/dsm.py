"""Owns the training loss: annealed denoising score matching (Song & Ermon 2019, Eq. 5-6; HGM Eq. 4)."""
from __future__ import annotations

from collections.abc import Callable

import torch


def anneal_dsm_loss(score_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x: torch.Tensor,
                    sigmas: torch.Tensor, labels: torch.Tensor | None = None, anneal_power: float = 2.0,
                    noise: torch.Tensor | None = None, n_levels: int | None = None) -> torch.Tensor:
    """Mean over the batch of ½‖s(x̃, i) − target‖² · σ_i^anneal_power.

    x: clean (lifted) batch. x̃ = x + σ_i z and target = −(x̃ − x)/σ_i² = −z/σ_i,
    the score of the Gaussian perturbation kernel. `labels` (the level per
    sample) and `noise` are drawn when not given; drawn labels are among the
    first `n_levels` (the largest σ; default all).
    """
    if labels is None:
        labels = torch.randint(0, n_levels or len(sigmas), (x.shape[0],), device=x.device)
    if noise is None:
        noise = torch.randn_like(x)
    used = sigmas[labels].view(-1, *([1] * (x.dim() - 1)))
    perturbed = x + used * noise
    target = -noise / used
    scores = score_fn(perturbed, labels)
    per_sample = 0.5 * ((scores.float() - target) ** 2).flatten(1).sum(dim=1)
    return (per_sample * used.flatten() ** anneal_power).mean()
