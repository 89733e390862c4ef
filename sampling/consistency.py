"""Owns data consistency: the measurement operator y = M ⊙ x, its projection, and the noisy form.

Both tasks of the paper observe a subset of the colour samples: a mask M
(1 = measured, see datasets/masks.py) of the image's shape. `project` keeps
every measured value exactly (x ← x − M⊙x + y) and leaves the rest to the prior; for a noisy
measurement, `weigh` combines the measured value with the current estimate instead.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from datasets.transforms import Transform


class MaskedObservation:
    """Observation of the samples where mask == 1 (demosaicking and inpainting alike).

    mask: B×3×H×W or 3×H×W (broadcast over the batch); values 0 or 1.
    """

    def __init__(self, mask: torch.Tensor):
        self.mask = mask

    def project(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Data consistency: measured samples set exactly to y, the rest kept."""
        return torch.where(self.mask > 0.5, y, x)

    def weigh(self, x: torch.Tensor, y: torch.Tensor, noise_sigma: float | torch.Tensor, step: float) -> torch.Tensor:
        """Data consistency for a noisy measurement y = M ⊙ (x* + s·z): at measured samples
        x ← (s²·x + η·y) / (η + s²), the rest kept.

        This is the proximal step of the data term ‖M⊙x − y‖² / (2s²) with the sampler's step η:
        argmin_u ‖u − x‖²/(2η) + ‖M⊙u − y‖²/(2s²), i.e. the posterior mean of a Gaussian around x
        of variance η combined with the measurement. Alternating it with a gradient step of size η
        on the prior is forward–backward splitting, whose fixed point is the maximum of
        prior × likelihood whatever η (proximal Langevin with noise injected); weighting by σ_i²
        instead would reach that point only for η = σ_i². `noise_sigma` s (the [0, 1] scale) is a
        number or a tensor broadcast against x (e.g. 1×3×1×1 for one level per colour channel).
        With s = 0 call `project`: this form divides η·y by η, which is y only up to rounding."""
        s2 = torch.as_tensor(noise_sigma, dtype=x.dtype, device=x.device) ** 2
        return torch.where(self.mask > 0.5, (s2 * x + step * y) / (step + s2), x)


def is_noisy(noise_sigma: float | torch.Tensor) -> bool:
    """Whether a measurement with this noise level (a number, or one per channel) needs `weigh`."""
    return bool((torch.as_tensor(noise_sigma) > 0).any())


def in_lifted_space(op: MaskedObservation, y: torch.Tensor, transform: Transform,
                    noise_sigma: float | torch.Tensor = 0.0) -> Callable[[torch.Tensor, float], torch.Tensor]:
    """The sampler's consistency(x, η) for a lifted iterate x: back to the image, the measurement
    enforced (`project`; `weigh` with the step η when any noise_sigma > 0), lifted again."""
    if not is_noisy(noise_sigma):
        return lambda x, eta: transform.forward(op.project(transform.inverse(x), y))
    sig = torch.as_tensor(noise_sigma, dtype=y.dtype, device=y.device).reshape(-1)
    sig = sig.view(1, -1, 1, 1) if sig.numel() == 3 else sig.reshape(())
    return lambda x, eta: transform.forward(op.weigh(transform.inverse(x), y, sig, eta))
