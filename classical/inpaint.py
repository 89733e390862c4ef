"""Classical inpainting: scikit-image's biharmonic inpainting, and OpenCV's Telea 2004 and
Navier–Stokes (Bertalmio et al. 2001) when opencv-python-headless is installed."""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from skimage.restoration import inpaint_biharmonic

from classical.shapes import as_batch
from datasets.errors import HGMError


def _inpaint_each(image: torch.Tensor, mask: torch.Tensor,
                  fill: Callable[[torch.Tensor, np.ndarray], torch.Tensor]) -> torch.Tensor:
    """The pixels where mask == 0 filled image by image: fill(3×H×W image, H×W bool missing) -> 3×H×W.
    The mask is per pixel (its first channel is used); mask 3×H×W is broadcast over a batch. Known
    pixels are kept exactly; images with nothing missing are returned as they are."""
    x, single = as_batch(image, "image")
    mk, _ = as_batch(mask, "mask")
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
