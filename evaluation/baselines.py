"""Owns the classical restoration baselines HGM is compared against.

Demosaicking: bilinear interpolation and Malvar–He–Cutler (ICASSP 2004)
gradient-corrected linear interpolation, for every Bayer pattern.
Inpainting: scikit-image's biharmonic inpainting.
Noisy demosaicking: Menon 2007 followed by a colour denoiser (scikit-image's non-local
means or wavelet shrinkage, or BM3D from the optional `bm3d` package), or the reverse
order (each Bayer channel's lattice denoised, then Menon): methods named `menon+nlm`,
`nlm+menon`, ... (`run_baseline(..., noise_sigma=σ)`).

All take torch tensors 3×H×W or B×3×H×W in [0, 1] and return the same shape,
clipped to [0, 1], with every measured sample unchanged.
"""
from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from skimage.restoration import inpaint_biharmonic

from datasets.errors import HGMError
from datasets.masks import PATTERNS, bayer_mask


def _as_batch(x, what="image"):
    """B×3×H×W view plus whether the input had no batch dimension."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{what} must be a torch tensor, got {type(x).__name__}")
    if x.dim() == 3:
        x, single = x.unsqueeze(0), True
    elif x.dim() == 4:
        single = False
    else:
        raise ValueError(f"{what} must be 3×H×W or B×3×H×W, got shape {tuple(x.shape)}")
    if x.shape[1] != 3:
        raise ValueError(f"{what} must have 3 channels, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        x = x.float()
    return x, single


def _check_size(h, w, pad, name):
    # reflect padding needs the image to be larger than the pad on each side
    if h <= pad or w <= pad:
        raise ValueError(f"{name} needs images larger than {pad}×{pad} pixels, got {h}×{w}")


# ---------------------------------------------------------------- bilinear

_K_RB = torch.tensor([[1., 2., 1.], [2., 4., 2.], [1., 2., 1.]]) / 4
_K_G = torch.tensor([[0., 1., 0.], [1., 4., 1.], [0., 1., 0.]]) / 4


def bilinear_demosaic(mosaic: torch.Tensor, pattern: str = "rggb") -> torch.Tensor:
    """Bilinear demosaicking as normalised convolution (weighted mean of the
    measured neighbours); reflect padding keeps the Bayer parity at borders."""
    x, single = _as_batch(mosaic, "mosaic")
    b, _, h, w = x.shape
    _check_size(h, w, 1, "bilinear_demosaic")
    m = bayer_mask(pattern, h, w, device=x.device).to(x.dtype).expand(b, 3, h, w)
    k = torch.stack([_K_RB, _K_G, _K_RB]).unsqueeze(1).to(device=x.device, dtype=x.dtype)
    num = F.conv2d(F.pad(x * m, (1, 1, 1, 1), mode="reflect"), k, groups=3)
    den = F.conv2d(F.pad(m, (1, 1, 1, 1), mode="reflect"), k, groups=3)
    out = torch.where(m > 0.5, x, num / den).clamp(0, 1)
    return out[0] if single else out


# ---------------------------------------------------------------- Malvar–He–Cutler

# The paper's filters (coefficients ×8). Each is a bilinear estimate plus a
# zero-sum correction from the channel measured at the centre, so linear
# gradients are reproduced exactly.
_G_AT_RB = [[0, 0, -1, 0, 0],
            [0, 0, 2, 0, 0],
            [-1, 2, 4, 2, -1],
            [0, 0, 2, 0, 0],
            [0, 0, -1, 0, 0]]
# R (or B) at a green site whose row holds R (or B): neighbours left/right
_ROW = [[0, 0, 0.5, 0, 0],
        [0, -1, 0, -1, 0],
        [-1, 4, 5, 4, -1],
        [0, -1, 0, -1, 0],
        [0, 0, 0.5, 0, 0]]
# R at B and B at R: neighbours on the diagonals
_DIAG = [[0, 0, -1.5, 0, 0],
         [0, 2, 0, 2, 0],
         [-1.5, 0, 6, 0, -1.5],
         [0, 2, 0, 2, 0],
         [0, 0, -1.5, 0, 0]]
_MHC = torch.stack([torch.tensor(_G_AT_RB), torch.tensor(_ROW),
                    torch.tensor(_ROW).t(), torch.tensor(_DIAG)]).unsqueeze(1) / 8
# index into [cfa, G_AT_RB, ROW, COL, DIAG] responses
_IDENTITY, _G_RB, _ROWF, _COLF, _DIAGF = range(5)


def _malvar_roles(pattern):
    """For each 2×2 tile position, which response each channel takes (3×2×2)."""
    pattern = str(pattern).lower()
    if pattern not in PATTERNS:
        raise HGMError(f"unknown Bayer pattern {pattern!r}; choose one of {', '.join(PATTERNS)}")
    r_row = pattern.index("r") // 2
    b_row = pattern.index("b") // 2
    roles = torch.zeros(3, 2, 2, dtype=torch.long)
    for k, c in enumerate(pattern):
        i, j = divmod(k, 2)
        if c == "r":
            roles[:, i, j] = torch.tensor([_IDENTITY, _G_RB, _DIAGF])
        elif c == "b":
            roles[:, i, j] = torch.tensor([_DIAGF, _G_RB, _IDENTITY])
        else:
            roles[0, i, j] = _ROWF if i == r_row else _COLF
            roles[1, i, j] = _IDENTITY
            roles[2, i, j] = _ROWF if i == b_row else _COLF
    return roles


def malvar_demosaic(mosaic: torch.Tensor, pattern: str = "rggb") -> torch.Tensor:
    """Malvar–He–Cutler 2004 demosaicking: the four 5×5 gradient-corrected
    filters run on the single-plane CFA; each pixel/channel picks its filter by
    its position in the 2×2 tile. Reflect padding (2 px) keeps the tile parity."""
    x, single = _as_batch(mosaic, "mosaic")
    b, _, h, w = x.shape
    _check_size(h, w, 2, "malvar_demosaic")
    m = bayer_mask(pattern, h, w, device=x.device).to(x.dtype)
    cfa = (x * m).sum(1, keepdim=True)
    k = _MHC.to(device=x.device, dtype=x.dtype)
    resp = torch.cat([cfa, F.conv2d(F.pad(cfa, (2, 2, 2, 2), mode="reflect"), k)], 1)
    idx = _malvar_roles(pattern).to(x.device).repeat(1, (h + 1) // 2, (w + 1) // 2)[:, :h, :w]
    out = torch.gather(resp, 1, idx.expand(b, 3, h, w)).clamp(0, 1)
    return out[0] if single else out


# ---------------------------------------------------------------- Menon 2007 (DDFAPD)

def _conv1d(x, k, dim):
    """1-D correlation of B×1×H×W planes along H (dim=2) or W (dim=3), mirrored borders
    (a b c | b a: reflect without repeating the edge sample). Symmetric kernels only."""
    n = len(k) // 2
    w = torch.tensor(k, dtype=x.dtype, device=x.device)
    if dim == 3:
        return F.conv2d(F.pad(x, (n, n, 0, 0), mode="reflect"), w.view(1, 1, 1, -1))
    return F.conv2d(F.pad(x, (0, 0, n, n), mode="reflect"), w.view(1, 1, -1, 1))


_H0 = [0.0, 0.5, 0.0, 0.5, 0.0]        # green: mean of the two greens along the direction
_H1 = [-0.25, 0.0, 0.5, 0.0, -0.25]    # plus the Laplacian of the centre channel
_KB = [0.5, 0.0, 0.5]                  # mean of the two neighbours
_FIR = [1 / 3, 1 / 3, 1 / 3]
# The a-posteriori classifier: sums of chrominance gradients over a 5×5 window,
# weighted towards the centre row (for the horizontal decision; transposed for vertical).
_CLASSIFIER = torch.tensor([[0., 0., 1., 0., 1.],
                            [0., 0., 0., 1., 0.],
                            [0., 0., 3., 0., 3.],
                            [0., 0., 0., 1., 0.],
                            [0., 0., 1., 0., 1.]])


def menon_demosaic(mosaic: torch.Tensor, pattern: str = "rggb", refine: bool = True) -> torch.Tensor:
    """Menon, Andriani & Calvagno 2007, "Demosaicing with directional filtering and a
    posteriori decision" (DDFAPD): green interpolated horizontally and vertically, the
    direction chosen per pixel by the smaller sum of chrominance gradients, then red and
    blue from colour differences along that direction, then (refine) the paper's
    refining step. Batched torch; the same conventions as the `colour-demosaicing`
    package's implementation (mirrored borders, zero-padded classifier)."""
    x, single = _as_batch(mosaic, "mosaic")
    b, _, h, w = x.shape
    _check_size(h, w, 2, "menon_demosaic")
    m = bayer_mask(pattern, h, w, device=x.device).to(x.dtype).unsqueeze(0)
    rm, gm, bm = (m[:, c:c + 1] > 0.5 for c in range(3))
    cfa = (x * m).sum(1, keepdim=True)
    R, G, B = (cfa * m[:, c:c + 1] for c in range(3))
    hz = lambda t, k: _conv1d(t, k, 3)  # noqa: E731
    vt = lambda t, k: _conv1d(t, k, 2)  # noqa: E731

    g_h = torch.where(gm, G, hz(cfa, _H0) + hz(cfa, _H1))
    g_v = torch.where(gm, G, vt(cfa, _H0) + vt(cfa, _H1))
    zero = torch.zeros_like(cfa)
    c_h = torch.where(rm, R - g_h, torch.where(bm, B - g_h, zero))
    c_v = torch.where(rm, R - g_v, torch.where(bm, B - g_v, zero))
    # |C(i, j) - C(i, j+2)| (and i+2), mirrored at the far border
    d_h = (c_h - F.pad(c_h, (0, 2, 0, 0), mode="reflect")[..., :, 2:]).abs()
    d_v = (c_v - F.pad(c_v, (0, 0, 0, 2), mode="reflect")[..., 2:, :]).abs()
    k = _CLASSIFIER.to(device=x.device, dtype=x.dtype)
    # a true convolution (kernel flipped), zero padding
    s_h = F.conv2d(F.pad(d_h, (2, 2, 2, 2)), k.flip(0, 1).view(1, 1, 5, 5))
    s_v = F.conv2d(F.pad(d_v, (2, 2, 2, 2)), k.t().flip(0, 1).reshape(1, 1, 5, 5))
    horiz = s_v >= s_h
    G = torch.where(horiz, g_h, g_v)

    r_rows = rm.any(-1, keepdim=True).expand_as(rm)
    b_rows = bm.any(-1, keepdim=True).expand_as(bm)
    R = torch.where(gm & r_rows, G + hz(R, _KB) - hz(G, _KB), R)
    R = torch.where(gm & b_rows, G + vt(R, _KB) - vt(G, _KB), R)
    B = torch.where(gm & b_rows, G + hz(B, _KB) - hz(G, _KB), B)
    B = torch.where(gm & r_rows, G + vt(B, _KB) - vt(G, _KB), B)
    R = torch.where(bm, torch.where(horiz, B + hz(R, _KB) - hz(B, _KB), B + vt(R, _KB) - vt(B, _KB)), R)
    B = torch.where(rm, torch.where(horiz, R + hz(B, _KB) - hz(R, _KB), R + vt(B, _KB) - vt(R, _KB)), B)

    if refine:
        along = lambda t, k: torch.where(horiz, hz(t, k), vt(t, k))  # noqa: E731
        # green at red/blue sites from the smoothed colour difference along the chosen direction
        rg_m = torch.where(rm, along(R - G, _FIR), zero)
        bg_m = torch.where(bm, along(B - G, _FIR), zero)
        G = torch.where(rm, R - rg_m, G)
        G = torch.where(bm, B - bg_m, G)
        # red and blue at green sites from the colour difference of the two measured neighbours
        r_cols = rm.any(-2, keepdim=True).expand_as(rm)
        b_cols = bm.any(-2, keepdim=True).expand_as(bm)
        rg, bg = R - G, B - G
        rg_m = torch.where(gm & b_rows, vt(rg, _KB), rg_m)
        R = torch.where(gm & b_rows, G + rg_m, R)
        rg_m = torch.where(gm & b_cols, hz(rg, _KB), rg_m)
        R = torch.where(gm & b_cols, G + rg_m, R)
        bg_m = torch.where(gm & r_rows, vt(bg, _KB), bg_m)
        B = torch.where(gm & r_rows, G + bg_m, B)
        bg_m = torch.where(gm & r_cols, hz(bg, _KB), bg_m)
        B = torch.where(gm & r_cols, G + bg_m, B)
        # red at blue sites and blue at red sites from the smoothed red-blue difference
        rb = along(R - B, _FIR)
        R = torch.where(bm, B + rb, R)
        B = torch.where(rm, R - rb, B)

    out = torch.cat([R, G, B], 1)
    out = torch.where(m.expand_as(out) > 0.5, x, out).clamp(0, 1)
    return out[0] if single else out


# ---------------------------------------------------------------- inpainting

def _inpaint_each(image: torch.Tensor, mask: torch.Tensor,
                  fill: Callable[[torch.Tensor, np.ndarray], torch.Tensor]) -> torch.Tensor:
    """The pixels where mask == 0 filled image by image: fill(3×H×W image, H×W bool missing) -> 3×H×W.
    The mask is per pixel (its first channel is used); mask 3×H×W is broadcast over a batch. Known
    pixels are kept exactly; images with nothing missing are returned as they are."""
    x, single = _as_batch(image, "image")
    mk, _ = _as_batch(mask, "mask")
    b, _, h, w = x.shape
    if mk.shape[-2:] != (h, w) or mk.shape[0] not in (1, b):
        raise ValueError(f"mask shape {tuple(mask.shape)} does not fit image shape {tuple(image.shape)}")
    known = (mk[:, :1] > 0.5).expand(b, 3, h, w)
    out = x.clone()
    for n in range(b):
        missing = (~known[n, 0]).cpu().numpy()
        if missing.any():
            out[n] = fill(x[n].detach().cpu(), missing).to(x.device, x.dtype)
    out = torch.where(known, x, out).clamp(0, 1)
    return out[0] if single else out


def biharmonic_inpaint(image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Biharmonic inpainting (scikit-image) of the pixels where mask == 0 (see `_inpaint_each`)."""
    def fill(img, missing):
        if missing.all():
            raise ValueError("biharmonic_inpaint needs at least one known pixel")
        filled = inpaint_biharmonic(img.double().permute(1, 2, 0).numpy(), missing, channel_axis=-1)
        return torch.from_numpy(np.ascontiguousarray(filled)).permute(2, 0, 1)
    return _inpaint_each(image, mask, fill)


def opencv_inpaint(image: torch.Tensor, mask: torch.Tensor, method: str = "telea", radius: int = 3) -> torch.Tensor:
    """OpenCV's inpainting of the pixels where mask == 0 (see `_inpaint_each`): Telea 2004 (fast
    marching) or Bertalmio et al. 2001 (Navier-Stokes), on the 8-bit image, `radius` pixels around
    each missing one. Needs the optional package opencv-python-headless (imported only here)."""
    try:
        import cv2
    except ImportError as e:
        raise HGMError(f"the {method} baseline needs OpenCV: pip install opencv-python-headless") from e
    flag = {"telea": cv2.INPAINT_TELEA, "ns": cv2.INPAINT_NS}[method]

    def fill(img, missing):
        img8 = (img.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
        filled = cv2.inpaint(np.ascontiguousarray(img8), missing.astype(np.uint8), radius, flag)
        return torch.from_numpy(filled).permute(2, 0, 1).float() / 255
    return _inpaint_each(image, mask, fill)


# ---------------------------------------------------------------- noisy demosaicking

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
    x, single = _as_batch(image, "image")
    out = torch.stack([torch.from_numpy(np.ascontiguousarray(
        _denoise_array(im.detach().cpu().double().permute(1, 2, 0).numpy(), sigma, denoiser))).permute(2, 0, 1)
        for im in x]).to(x.device, x.dtype).clamp(0, 1)
    return out[0] if single else out


def denoise_mosaic(mosaic: torch.Tensor, sigma: float, denoiser: str, pattern: str = "rggb") -> torch.Tensor:
    """A noisy mosaic (3×H×W, the measured samples in their channels) with each of the four Bayer
    lattices (R, G1, G2, B: half-size grey images) denoised by `denoiser`."""
    x, single = _as_batch(mosaic, "mosaic")
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


# ---------------------------------------------------------------- registry

def bayer_pattern_of(mask: torch.Tensor) -> str:
    """Name of the Bayer pattern a 3×H×W (or B×3×H×W) mask realises."""
    m, _ = _as_batch(mask, "mask")
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
    "biharmonic": biharmonic_inpaint,
    "telea": functools.partial(opencv_inpaint, method="telea"),
    "ns": functools.partial(opencv_inpaint, method="ns"),
}
DEMOSAIC_BASELINES = ("bilinear", "malvar", "menon")


def run_baseline(name: str, degraded: torch.Tensor, mask: torch.Tensor | None, pattern: str = "rggb",
                 noise_sigma: float = 0.0) -> torch.Tensor:
    """Run baseline `name` on a degraded image.

    Demosaicking baselines take their Bayer pattern from `mask` when it is
    given (else from `pattern`); the inpainting methods (biharmonic, telea, ns) need `mask`. The
    noisy-demosaicking methods (NOISY_DEMOSAIC_BASELINES) take the noise level `noise_sigma` on the
    [0, 1] scale.
    """
    if name in NOISY_DEMOSAIC_BASELINES:
        if mask is not None:
            pattern = bayer_pattern_of(mask)
        return noisy_demosaic(name, degraded, noise_sigma, pattern)
    if name not in BASELINES:
        names = (*BASELINES, *NOISY_DEMOSAIC_BASELINES)
        raise HGMError(f"unknown baseline {name!r}; choose one of {', '.join(names)}")
    if name in DEMOSAIC_BASELINES:
        if mask is not None:
            pattern = bayer_pattern_of(mask)
        return BASELINES[name](degraded, pattern)
    if mask is None:
        raise HGMError(f"baseline {name!r} needs a mask of the known pixels")
    return BASELINES[name](degraded, mask)
