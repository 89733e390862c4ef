"""Owns noisy measurements: the seeded Gaussian noise an evaluation run adds to its measurement, the
noise level a user gives (test.noise_sigma, 0–255 units) and its estimate from a measurement (`auto`).

The noise model is y = M ⊙ (x + s·z), z ~ N(0, I), s the noise level on the [0, 1] scale
(noise_sigma / 255). The noise an evaluation run adds is not clipped to [0, 1] (the Gaussian model
holds exactly; the input/ PNG written for viewing is clipped and rounded) and is drawn with
torch.Generator().manual_seed(zlib.crc32(b"noise/" + the image's name in UTF-8)), one z of the
image's shape per image: the same noise for the same image on every run, every machine and every
method (scripts/run_baseline.py draws it the same way), and at σ 5, 10 and 15 the same z scaled.
"""
from __future__ import annotations

import zlib

import torch

from datasets.errors import HGMError

NOISE_AUTO = "auto"
MAD_TO_SIGMA = 0.6744897501960817  # the median of |N(0, 1)|: σ = median(|d|) / 0.6745
MIN_BLOCKS = 64  # fewer usable 2×2 blocks than this in a channel: no estimate


def noise_seed(stem: str) -> int:
    """The seed of image `stem`'s measurement noise: CRC-32 of "noise/<stem>" in UTF-8 (not the
    seed of its random mask, datasets.masks.name_seed, so noise and mask are independent)."""
    return zlib.crc32(("noise/" + stem).encode("utf-8"))


def parse_noise_sigma(value) -> float | str:
    """test.noise_sigma as a number of 0–255 units (null: 0) or "auto"; anything else is an error."""
    if value is None:
        return 0.0
    if isinstance(value, str) and value.strip().lower() == NOISE_AUTO:
        return NOISE_AUTO
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 255:
        raise HGMError(f"test.noise_sigma={value!r} must be a noise level in 0–255 units (0 ≤ σ < 255, "
                       f"e.g. 10) or auto")
    return float(value)


def noise_level(value, y: torch.Tensor, mask: torch.Tensor) -> float | torch.Tensor:
    """test.noise_sigma on the [0, 1] scale for measurement y: the number/255, or with auto one
    estimate per colour channel from y itself (`estimate_noise_sigma`, a tensor of 3)."""
    sigma = parse_noise_sigma(value)
    return estimate_noise_sigma(y, mask) if sigma == NOISE_AUTO else sigma / 255.0


def add_measurement_noise(x: torch.Tensor, mask: torch.Tensor, sigma255: float, stem: str) -> torch.Tensor:
    """The noisy measurement M ⊙ (x + s·z) of image `stem` (x, mask 3×H×W in [0, 1]; s = σ/255),
    z drawn from the image's own seed (`noise_seed`)."""
    g = torch.Generator().manual_seed(noise_seed(stem))
    z = torch.randn(x.shape, generator=g, dtype=torch.float32).to(x.dtype)
    return (x + (sigma255 / 255.0) * z) * mask


def _haar_diagonal(plane: torch.Tensor, known: torch.Tensor, step: int) -> torch.Tensor:
    """d = (a − b − c + e)/2 over 2×2 blocks of samples `step` apart (the finest diagonal Haar
    wavelet coefficient, whose noise part has the noise's standard deviation), at blocks whose four
    samples are known."""
    h, w = plane.shape
    a, b = plane[:h - step, :w - step], plane[:h - step, step:]
    c, e = plane[step:, :w - step], plane[step:, step:]
    ok = known[:h - step, :w - step] & known[:h - step, step:] & known[step:, :w - step] & known[step:, step:]
    return ((a - b - c + e) / 2)[ok]


def estimate_noise_sigma(y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per colour channel, the standard deviation of white Gaussian noise in the measured samples
    (3, on the [0, 1] scale): the median absolute deviation of the finest diagonal Haar
    coefficients d (Donoho & Johnstone 1994: σ̂ = median|d| / 0.6745) of the known samples.

    A channel whose samples form 2×2 blocks of adjacent known pixels (inpainting) uses those; a
    Bayer channel (no two adjacent samples of one colour in a row) uses its samples two pixels
    apart, i.e. the channel's own lattice (for green, both of its lattices). Image texture adds to
    d, so on a detailed image the estimate errs high, most at low noise."""
    y, mask = y.reshape(3, *y.shape[-2:]).double(), mask.reshape(3, *mask.shape[-2:]) > 0.5
    out = []
    for c in range(3):
        d = _haar_diagonal(y[c], mask[c], 1)
        if d.numel() < MIN_BLOCKS:  # a mosaic: the channel's lattice (samples 2 apart)
            d = _haar_diagonal(y[c], mask[c], 2)
        if d.numel() < MIN_BLOCKS:
            raise HGMError(f"test.noise_sigma=auto: too few measured samples in channel {'RGB'[c]} to estimate "
                           f"the noise ({d.numel()} blocks of 2×2, need {MIN_BLOCKS}); give test.noise_sigma "
                           f"as a number (0–255 units)")
        out.append(float(d.abs().median()) / MAD_TO_SIGMA)
    return torch.tensor(out)
