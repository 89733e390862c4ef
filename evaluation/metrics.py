"""Owns the image-quality metrics, computed the way papers report them.

PSNR is taken on the 0–255 scale over all three channels together (CPSNR for
demosaicking); SSIM is scikit-image's colour SSIM. Both accept torch tensors
(3×H×W, or 1×3×H×W) and numpy arrays (H×W×3), so restored tensors and images
read from disk can be compared directly.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from skimage.metrics import structural_similarity


def _to_hwc(x):
    """float64 H×W×C numpy view of a tensor (C×H×W / 1×C×H×W) or an H×W×C array."""
    if isinstance(x, torch.Tensor):
        t = x.detach().cpu().double()
        if t.dim() == 4:
            if t.shape[0] != 1:
                raise ValueError(f"metrics take one image at a time, got a batch of shape {tuple(x.shape)}")
            t = t[0]
        if t.dim() != 3:
            raise ValueError(f"expected a C×H×W tensor, got shape {tuple(x.shape)}")
        return t.permute(1, 2, 0).numpy()
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 3:
        raise ValueError(f"expected an H×W×C array, got shape {a.shape}")
    return a


def _shape(x):
    return tuple(x.shape) if hasattr(x, "shape") else np.shape(x)


def _pair(x, ref, border):
    """Both images as H×W×C float64, same shape, `border` pixels cut from each side."""
    a, b = _to_hwc(x), _to_hwc(ref)
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch: image {_shape(x)} vs reference {_shape(ref)}")
    border = int(border)
    if border < 0:
        raise ValueError(f"border must be >= 0, got {border}")
    if border:
        h, w = a.shape[:2]
        if 2 * border >= min(h, w):
            raise ValueError(f"border {border} leaves nothing of a {h}×{w} image")
        a = a[border:-border, border:-border]
        b = b[border:-border, border:-border]
    return a, b


def psnr(x: torch.Tensor | np.ndarray, ref: torch.Tensor | np.ndarray, border: int = 0) -> float:
    """PSNR in dB on the 0–255 scale, MSE over all pixels and channels (CPSNR)."""
    a, b = _pair(x, ref, border)
    mse = float(np.mean(((a - b) * 255.0) ** 2))
    if mse == 0:
        return float("inf")
    return 10.0 * math.log10(255.0 ** 2 / mse)


def ssim(x: torch.Tensor | np.ndarray, ref: torch.Tensor | np.ndarray, border: int = 0) -> float:
    """Colour SSIM (scikit-image, channel_axis=-1, data_range=1) with its 7×7 window, or the
    largest odd window that fits an image smaller than 7 pixels; NaN for an image under 3 pixels."""
    a, b = _pair(x, ref, border)
    win = min(7, *a.shape[:2])
    win -= 1 - win % 2  # odd
    if win < 3:
        return float("nan")
    return float(structural_similarity(a, b, channel_axis=-1, data_range=1.0, win_size=win))
