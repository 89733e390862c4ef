"""Classical pipelines for noisy measurements. Demosaicking: Menon 2007 followed by a colour denoiser
(scikit-image's non-local means or wavelet shrinkage, or BM3D from the optional `bm3d` package), or
the reverse order (each Bayer lattice denoised, then Menon): methods named `menon+nlm`, `nlm+menon`,
... Inpainting: the holes filled from the noisy samples, then the whole image denoised:
`biharmonic+nlm`, `telea+wavelet`, ..."""
from __future__ import annotations

import numpy as np
import torch

from classical.demosaic import menon_demosaic
from classical.inpaint import INPAINTERS
from classical.shapes import as_batch
from datasets.errors import HGMError
from datasets.masks import bayer_mask

DENOISERS = ("nlm", "wavelet", "bm3d")
NLM_H = 0.8  # non-local means: filter strength h = NLM_H·σ (scikit-image: h a little below σ in fast mode)


def _bm3d():
    try:
        import bm3d
    except ImportError as e:
        raise HGMError("the bm3d denoiser needs the optional package bm3d (pip install bm3d)") from e
    return bm3d


def _denoise_array(a: np.ndarray, sigma: float, denoiser: str) -> np.ndarray:
    """H×W×3 or H×W float64 array with white noise of standard deviation `sigma` -> denoised."""
    from skimage.restoration import denoise_nl_means, denoise_wavelet
    axis = -1 if a.ndim == 3 else None
    if denoiser == "nlm":
        return denoise_nl_means(a, h=NLM_H * sigma, sigma=sigma, patch_size=5, patch_distance=6, fast_mode=True,
                                channel_axis=axis)
    if denoiser == "wavelet":
        return denoise_wavelet(a, sigma=sigma, mode="soft", method="BayesShrink", rescale_sigma=True,
                               channel_axis=axis, convert2ycbcr=a.ndim == 3)
    if denoiser == "bm3d":
        bm3d = _bm3d()
        return np.asarray(bm3d.bm3d_rgb(a, sigma) if a.ndim == 3 else bm3d.bm3d(a, sigma))
    raise HGMError(f"unknown denoiser {denoiser!r} ({' | '.join(DENOISERS)})")


def denoise_colour(image: torch.Tensor, sigma: float, denoiser: str) -> torch.Tensor:
    """A colour image (3×H×W or B×3×H×W in [0, 1]) denoised by `denoiser` for noise σ ([0, 1] scale)."""
    x, single = as_batch(image, "image")
    out = torch.stack([torch.from_numpy(np.ascontiguousarray(
        _denoise_array(im.detach().cpu().double().permute(1, 2, 0).numpy(), sigma, denoiser))).permute(2, 0, 1)
        for im in x]).to(x.device, x.dtype).clamp(0, 1)
    return out[0] if single else out


def denoise_mosaic(mosaic: torch.Tensor, sigma: float, denoiser: str, pattern: str = "rggb") -> torch.Tensor:
    """A noisy mosaic (3×H×W, the measured samples in their channels) with each of the four Bayer
    lattices (R, G1, G2, B: half-size grey images) denoised by `denoiser`."""
    x, single = as_batch(mosaic, "mosaic")
    out = x.clone()
    for k, c in enumerate(str(pattern).lower()):
        i, j = divmod(k, 2)
        ch = "rgb".index(c)
        for n in range(x.shape[0]):
            plane = x[n, ch, i::2, j::2].detach().cpu().double().numpy()
            den = np.ascontiguousarray(_denoise_array(plane, sigma, denoiser))
            out[n, ch, i::2, j::2] = torch.from_numpy(den).to(x.device, x.dtype)
    m = bayer_mask(pattern, x.shape[-2], x.shape[-1], device=x.device).to(x.dtype)
    out = out.clamp(0, 1) * m
    return out[0] if single else out


def noisy_demosaic(name: str, mosaic: torch.Tensor, sigma: float, pattern: str = "rggb") -> torch.Tensor:
    """`menon+<denoiser>`: Menon 2007, then the colour denoiser; `<denoiser>+menon`: the mosaic's
    lattices denoised, then Menon 2007. σ is the measurement's noise on the [0, 1] scale."""
    first, _, second = name.partition("+")
    if first == "menon" and second in DENOISERS:
        return denoise_colour(menon_demosaic(mosaic, pattern), sigma, second)
    if second == "menon" and first in DENOISERS:
        return menon_demosaic(denoise_mosaic(mosaic, sigma, first, pattern), pattern)
    raise HGMError(f"unknown noisy-demosaicking method {name!r} ({' | '.join(NOISY_DEMOSAIC_BASELINES)})")


NOISY_DEMOSAIC_BASELINES = tuple(f"menon+{d}" for d in DENOISERS) + tuple(f"{d}+menon" for d in DENOISERS)
NOISY_INPAINT_BASELINES = tuple(f"{i}+{d}" for i in INPAINTERS for d in DENOISERS)


def noisy_inpaint(name: str, degraded: torch.Tensor, mask: torch.Tensor, sigma: float) -> torch.Tensor:
    """`<inpainter>+<denoiser>`: the holes filled from the noisy measured samples, then the whole image
    denoised for noise σ ([0, 1] scale). Denoising first would have to skip the holes, which no
    denoiser here can."""
    first, _, second = name.partition("+")
    if first not in INPAINTERS or second not in DENOISERS:
        raise HGMError(f"unknown noisy-inpainting method {name!r} ({' | '.join(NOISY_INPAINT_BASELINES)})")
    return denoise_colour(INPAINTERS[first](degraded, mask), sigma, second)
