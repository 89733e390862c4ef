"""Owns the measurement operator y = M ⊙ x and its data-consistency projection.

Both tasks of the paper observe a subset of the colour samples: a mask M
(1 = measured, see datasets/masks.py) of the image's shape. `project` keeps
every measured value exactly (x ← x − M⊙x + y) and leaves the rest to the prior.
"""
import torch


class MaskedObservation:
    """Observation of the samples where mask == 1 (demosaicking and inpainting alike).

    mask: B×3×H×W or 3×H×W (broadcast over the batch); values 0 or 1.
    """

    def __init__(self, mask: torch.Tensor):
        self.mask = mask

    def project(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Data consistency: measured samples set exactly to y, the rest kept."""
        return torch.where(self.mask > 0.5, y, x)
