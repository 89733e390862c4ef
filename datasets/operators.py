"""Measurement operators y = M ⊙ x and the data-consistency projection.

Both tasks of the paper observe a subset of the colour samples: a mask M
(1 = measured) of the image's shape. `project` keeps every measured value
exactly (x ← x − M⊙x + y) and leaves the rest to the prior.
"""
import torch

from runners.errors import HGMError

PATTERNS = ("rggb", "bggr", "grbg", "gbrg")
_CHANNEL = {"r": 0, "g": 1, "b": 2}


def bayer_mask(pattern, h, w, device=None):
    """3×H×W mask of a Bayer colour filter array; the pattern names the 2×2 tile
    read row by row (RGGB: R at even row/even col, B at odd/odd, G elsewhere)."""
    pattern = str(pattern).lower()
    if pattern not in PATTERNS:
        raise HGMError(f"unknown Bayer pattern {pattern!r}; choose one of {', '.join(PATTERNS)}")
    m = torch.zeros(3, h, w, device=device)
    for k, c in enumerate(pattern):
        i, j = divmod(k, 2)
        m[_CHANNEL[c], i::2, j::2] = 1
    return m


def random_mask(h, w, missing_rate, generator=None, device=None):
    """Pixels missing at random (all three channels of a pixel together)."""
    if not 0 <= missing_rate < 1:
        raise HGMError(f"missing rate must be in [0, 1), got {missing_rate}")
    keep = (torch.rand(h, w, generator=generator) >= missing_rate).float()
    return keep.expand(3, h, w).clone().to(device)


def box_mask(h, w, size, device=None):
    """A centred size×size hole."""
    if size >= min(h, w):
        raise HGMError(f"box of {size} pixels does not fit a {h}×{w} image")
    m = torch.ones(3, h, w, device=device)
    top, left = (h - size) // 2, (w - size) // 2
    m[:, top:top + size, left:left + size] = 0
    return m


class MaskedObservation:
    """Observation of the samples where mask == 1 (demosaicking and inpainting alike).

    mask: B×3×H×W or 3×H×W (broadcast over the batch); values 0 or 1.
    """

    def __init__(self, mask):
        self.mask = mask

    def measure(self, x):
        return x * self.mask

    def project(self, x, y):
        """Data consistency: measured samples set exactly to y, the rest kept."""
        return torch.where(self.mask > 0.5, y, x)

    def to(self, device):
        return MaskedObservation(self.mask.to(device))
