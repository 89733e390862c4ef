"""The classical restoration methods: the baselines HGM is compared against, and the starting
points of its sampler (test.init: menon, biharmonic, ...).

- demosaic.py: bilinear, Malvar–He–Cutler 2004, Menon 2007
- inpaint.py: biharmonic (scikit-image), harmonic, Telea and Navier–Stokes (OpenCV, optional)
- denoise.py: pipelines for noisy measurements (Menon or an inpainter with non-local means, wavelets or BM3D)

All take torch tensors 3×H×W or B×3×H×W in [0, 1] and return the same shape, clipped to [0, 1],
with every measured sample unchanged (noisy pipelines: estimates). `run_baseline` runs one by name.
"""
from __future__ import annotations

import torch

from classical.demosaic import bilinear_demosaic, malvar_demosaic, menon_demosaic
from classical.denoise import (
    DENOISERS,
    NOISY_DEMOSAIC_BASELINES,
    NOISY_INPAINT_BASELINES,
    denoise_colour,
    denoise_mosaic,
    noisy_demosaic,
    noisy_inpaint,
)
from classical.inpaint import INPAINTERS, biharmonic_inpaint, harmonic_inpaint, opencv_inpaint
from classical.shapes import as_batch
from datasets.errors import HGMError
from datasets.masks import PATTERNS, bayer_mask

__all__ = ["BASELINES", "DEMOSAIC_BASELINES", "DENOISERS", "NOISY_DEMOSAIC_BASELINES", "NOISY_INPAINT_BASELINES",
           "bayer_pattern_of", "biharmonic_inpaint", "bilinear_demosaic", "denoise_colour", "denoise_mosaic",
           "harmonic_inpaint", "malvar_demosaic", "menon_demosaic", "noisy_demosaic", "noisy_inpaint", "opencv_inpaint",
           "run_baseline"]


def bayer_pattern_of(mask: torch.Tensor) -> str:
    """Name of the Bayer pattern a 3×H×W (or B×3×H×W) mask realises."""
    m, _ = as_batch(mask, "mask")
    m = m[0]
    h, w = m.shape[-2:]
    if h < 2 or w < 2:
        raise HGMError(f"a {h}×{w} mask is too small to hold a Bayer pattern")
    name = ""
    for i, j in ((0, 0), (0, 1), (1, 0), (1, 1)):
        on = (m[:, i, j] > 0.5).nonzero().flatten().tolist()
        if len(on) != 1:
            raise HGMError("mask is not a Bayer pattern (each pixel must measure exactly one channel)")
        name += "rgb"[on[0]]
    if name not in PATTERNS or not torch.equal(m > 0.5, bayer_mask(name, h, w, device=m.device) > 0.5):
        raise HGMError("mask is not a Bayer pattern (rggb, bggr, grbg or gbrg)")
    return name


BASELINES = {
    "bilinear": bilinear_demosaic,
    "malvar": malvar_demosaic,
    "menon": menon_demosaic,
    **INPAINTERS,
}
DEMOSAIC_BASELINES = ("bilinear", "malvar", "menon")


def run_baseline(name: str, degraded: torch.Tensor, mask: torch.Tensor | None, pattern: str = "rggb",
                 noise_sigma: float = 0.0) -> torch.Tensor:
    """Run baseline `name` on a degraded image.

    Demosaicking baselines take their Bayer pattern from `mask` when it is
    given (else from `pattern`); the inpainting methods (biharmonic, harmonic, telea, ns) need `mask`. The
    noisy pipelines (NOISY_DEMOSAIC_BASELINES, NOISY_INPAINT_BASELINES) take the noise level
    `noise_sigma` on the [0, 1] scale.
    """
    if name in NOISY_DEMOSAIC_BASELINES:
        if mask is not None:
            pattern = bayer_pattern_of(mask)
        return noisy_demosaic(name, degraded, noise_sigma, pattern)
    if name in NOISY_INPAINT_BASELINES:
        if mask is None:
            raise HGMError(f"baseline {name!r} needs a mask of the known pixels")
        return noisy_inpaint(name, degraded, mask, noise_sigma)
    if name not in BASELINES:
        names = (*BASELINES, *NOISY_DEMOSAIC_BASELINES, *NOISY_INPAINT_BASELINES)
        raise HGMError(f"unknown baseline {name!r}; choose one of {', '.join(names)}")
    if name in DEMOSAIC_BASELINES:
        if mask is not None:
            pattern = bayer_pattern_of(mask)
        return BASELINES[name](degraded, pattern)
    if mask is None:
        raise HGMError(f"baseline {name!r} needs a mask of the known pixels")
    return BASELINES[name](degraded, mask)
