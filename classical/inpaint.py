"""Classical inpainting: scikit-image's biharmonic inpainting, and OpenCV's Telea 2004 and
Navier–Stokes (Bertalmio et al. 2001) when opencv-python-headless is installed."""
from __future__ import annotations

import functools
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


def _harmonic_fill(img: torch.Tensor, missing: np.ndarray) -> torch.Tensor:
    """The missing pixels solving Laplace's equation (each the mean of its 4 neighbours inside the
    image), the known ones as boundary values: one sparse solve for the three channels."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.linalg import spsolve
    h, w = missing.shape
    index = np.full((h, w), -1, dtype=np.int64)
    index[missing] = np.arange(int(missing.sum()))
    values = img.double().reshape(3, -1).numpy()
    rows, cols, data = [], [], []
    rhs = np.zeros((int(missing.sum()), 3))
    ys, xs = np.nonzero(missing)
    p = index[ys, xs]
    diagonal = np.zeros(len(p))
    for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        ny, nx = ys + dy, xs + dx
        inside = (ny >= 0) & (ny < h) & (nx >= 0) & (nx < w)
        diagonal += inside
        q = np.where(inside, index[ny.clip(0, h - 1), nx.clip(0, w - 1)], -1)
        free = inside & (q >= 0)
        rows.append(p[free])
        cols.append(q[free])
        data.append(-np.ones(int(free.sum())))
        known = inside & (q < 0)
        np.add.at(rhs, p[known], values[:, ny[known] * w + nx[known]].T)
    rows.append(p)
    cols.append(p)
    data.append(diagonal)
    a = coo_matrix((np.concatenate(data), (np.concatenate(rows), np.concatenate(cols))), shape=(len(p), len(p)))
    solved = np.asarray(spsolve(a.tocsc(), rhs)).reshape(len(p), 3)
    out = values.copy()
    out[:, ys * w + xs] = solved.T
    return torch.from_numpy(out.reshape(3, h, w))


def harmonic_inpaint(image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Harmonic (membrane) inpainting of the pixels where mask == 0 (see `_inpaint_each`): the
    smoothest fill whose values never leave the range of the known pixels around it (biharmonic
    inpainting overshoots, and a 64×64 hole between a dark and a light side can come out black)."""
    def fill(img, missing):
        if missing.all():
            raise ValueError("harmonic_inpaint needs at least one known pixel")
        return _harmonic_fill(img, missing)
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


INPAINTERS = {  # by name: the inpainting baselines, alone and as the first half of the noisy pipelines
    "biharmonic": biharmonic_inpaint,
    "harmonic": harmonic_inpaint,
    "telea": functools.partial(opencv_inpaint, method="telea"),
    "ns": functools.partial(opencv_inpaint, method="ns"),
}
