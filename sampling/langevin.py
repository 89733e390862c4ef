"""Owns the annealed Langevin sampler with data consistency (HGM, Sec. 3.3; Alg. 1) and its two update rules.

The sampler is a plain function: it gets a score function, an initial state
in the lifted space, the noise levels, a schedule (step size, steps per level,
update rule, temperature: `Schedule`), data consistency and an optional earlier
estimate (the progressive strategy). It never sees a ground truth; a caller
that wants a trace passes `on_step`.

An update rule is a pair of small functions, in the manner of
score_sde_pytorch's predictors: `step` moves x along the score read at
`read_at`, and `read_point` says where the next score is read; data
consistency wraps either (the sampler projects after every step).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple, Protocol

import torch

ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class SamplerDiverged(RuntimeError):
    """The iterate left the finite range (step_lr too large for the prior)."""


class UpdateRule(NamedTuple):
    """step(score_fn, x, read_at, labels, eta, noise_scale) -> x; read_point(x, noise_scale) -> read_at."""
    step: Callable[..., torch.Tensor]
    read_point: Callable[[torch.Tensor, float], torch.Tensor]


def noisy_copy_step(score_fn: ScoreFn, x: torch.Tensor, read_at: torch.Tensor, labels: torch.Tensor, eta: float,
                    noise_scale: float) -> torch.Tensor:
    """x ← x + η s(x̂): the score is read at a noisy copy x̂ of the last iterate (the paper's code)."""
    return x + eta * score_fn(read_at, labels)


def noisy_copy(x: torch.Tensor, noise_scale: float) -> torch.Tensor:
    """x̂ ← x + √(2η) z, drawn after data consistency."""
    return x + noise_scale * torch.randn_like(x)


def langevin_step(score_fn: ScoreFn, x: torch.Tensor, read_at: torch.Tensor, labels: torch.Tensor, eta: float,
                  noise_scale: float) -> torch.Tensor:
    """x ← x + η s(x) + √(2η) z (read_at is x itself)."""
    return x + eta * score_fn(read_at, labels) + noise_scale * torch.randn_like(x)


def at_iterate(x: torch.Tensor, noise_scale: float) -> torch.Tensor:
    """The score is read at the iterate itself."""
    return x


# test.update values -> rules: "noisy_copy" is the rule of the paper's code ("reference", its earlier name,
# still works), "langevin" the textbook one
UPDATE_RULES = {"noisy_copy": UpdateRule(noisy_copy_step, noisy_copy),
                "langevin": UpdateRule(langevin_step, at_iterate),
                "reference": UpdateRule(noisy_copy_step, noisy_copy)}


def step_sizes(sigmas: torch.Tensor, step_lr: float) -> list[float]:
    """η_i = step_lr · (σ_i / σ_L)² (the NCSN schedule the paper keeps)."""
    return [step_lr * (float(s) / float(sigmas[-1])) ** 2 for s in sigmas]


class Schedule(Protocol):
    """What the sampler reads of its settings (sampling.settings.SamplerSettings in the paper's form,
    after `for_levels`): η_i = step_lr·(σ_i/σ_L)², n_steps_each steps per level from start_level on,
    the update rule, the injected noise's temperature, the progressive pull's weight, and whether a
    final denoising step ends the run."""
    step_lr: float
    n_steps_each: int
    update: str
    start_level: int
    denoise: bool
    temperature: float
    earlier_weight: float


Consistency = Callable[[torch.Tensor, float], torch.Tensor]


class HeldStart(NamedTuple):
    """The first levels of a coarse-to-fine start: before `level`, `consistency` replaces the sampler's
    (it holds the pixels near the measurement at a classical estimate while the holes' insides anneal
    from higher noise; sampling.restore_image), with `n_steps_each` steps per level."""
    level: int
    consistency: Consistency
    n_steps_each: int


def annealed_langevin(score_fn: ScoreFn, x: torch.Tensor, sigmas: torch.Tensor, settings: Schedule, *,
                      consistency: Consistency | None = None, earlier: torch.Tensor | None = None,
                      held: HeldStart | None = None, stop_level: int | None = None,
                      on_step: Callable[[int, torch.Tensor], None] | None = None,
                      divergence_limit: float = 1e4) -> torch.Tensor:
    """Run the annealed sampler and return the final iterate (lifted space).

    score_fn(x, labels) -> score; x: B×C×H×W initial state; settings: the schedule (`Schedule`).
    update "noisy_copy" reads the score at a noisy copy (the paper's code), "langevin" at the iterate.
    consistency(x, eta) -> x: data consistency (sampling.consistency), applied at the start with the
    first level's η, after every step with that step's η, and after the final denoising step with
    η = σ_L² (the Tweedie step is a gradient step of that size); None: no measurement.
    earlier: the lifted earlier estimate (progressive strategy, paper Eq. 11); adds
    −η·λ·(x − earlier), λ = earlier_weight/σ_i² (the paper's weight is 1).
    held: a coarse-to-fine start (`HeldStart`): before its level, its consistency and step count.
    start_level > 0 skips the levels before it (a good initial state needs no large noise);
    stop_level ends the run before that level (a first stage whose result another prior refines).
    denoise: one more evaluation at the last level, x ← x + σ_L² s(x) (Tweedie), which removes the
    sampler's leftover noise. temperature scales the injected noise (1: Langevin dynamics; < 1
    samples a sharpened density, moving the result towards a mode of the posterior).
    on_step(step, x): called after every step (traces, progress bars).
    """
    consistency = consistency or (lambda v, eta: v)
    release, held_consistency, held_steps = held if held is not None else (0, consistency, 0)
    if settings.update not in UPDATE_RULES:
        raise ValueError(f"unknown update {settings.update!r} ({' | '.join(UPDATE_RULES)})")
    start = settings.start_level
    if not 0 <= start < len(sigmas):
        raise ValueError(f"start level {start} is outside the {len(sigmas)} noise levels")
    stop = len(sigmas) if stop_level is None else stop_level
    if not start < stop <= len(sigmas):
        raise ValueError(f"stop level {stop} is not after the start level {start} and within the {len(sigmas)} levels")
    rule = UPDATE_RULES[settings.update]
    etas = step_sizes(sigmas, settings.step_lr)
    x = (held_consistency if start < release else consistency)(x, etas[start])
    read_at = x
    b = x.shape[0]
    step = 0
    for i in range(start, stop):
        sigma, eta = float(sigmas[i]), etas[i]
        labels = torch.full((b,), i, dtype=torch.long, device=x.device)
        noise_scale = settings.temperature * math.sqrt(2.0 * eta)
        consistent, n_steps = (held_consistency, held_steps) if i < release else (consistency, settings.n_steps_each)
        for _ in range(n_steps):
            x = rule.step(score_fn, x, read_at, labels, eta, noise_scale)
            if earlier is not None:
                x = x - (settings.earlier_weight * eta / sigma ** 2) * (x - earlier)
            x = consistent(x, eta)
            read_at = rule.read_point(x, noise_scale)
            step += 1
            if on_step is not None:
                on_step(step, x)
        # one host sync per level, not per step
        if not bool(torch.isfinite(x).all()) or float(x.abs().amax()) > divergence_limit:
            raise SamplerDiverged(f"the iterate diverged at noise level {i + 1} of {len(sigmas)} "
                                  f"(sigma {sigma:.4g}); step_lr={settings.step_lr:g} is too large for this prior")
    if settings.denoise:
        labels = torch.full((b,), len(sigmas) - 1, dtype=torch.long, device=x.device)
        last = float(sigmas[-1]) ** 2
        x = consistency(x + last * score_fn(x, labels), last)
    return x


def nfe(n_levels: int, n_steps_each: int, denoise: bool) -> int:
    """Network evaluations per sample."""
    return n_levels * n_steps_each + int(bool(denoise))
