"""Owns the masks of the two tasks: Bayer patterns, random and box holes, mask files, and the mask of each test image.

A mask is 3×H×W with 1 where a colour sample is measured.
"""
from __future__ import annotations

import os
import zlib

import numpy as np
import torch
from PIL import Image

from datasets.errors import HGMError
from datasets.folder import checked_header

PATTERNS = ("rggb", "bggr", "grbg", "gbrg")
_CHANNEL = {"r": 0, "g": 1, "b": 2}
MASK_EXTENSIONS = (".png", ".bmp", ".tif", ".tiff")


def bayer_mask(pattern: str, h: int, w: int, device: torch.device | str | None = None) -> torch.Tensor:
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


def random_mask(h: int, w: int, missing_rate: float, generator: torch.Generator | None = None,
                device: torch.device | str | None = None) -> torch.Tensor:
    """Pixels missing at random (all three channels of a pixel together)."""
    if not 0 <= missing_rate < 1:
        raise HGMError(f"missing rate must be in [0, 1), got {missing_rate}")
    keep = (torch.rand(h, w, generator=generator) >= missing_rate).float()
    return keep.expand(3, h, w).clone().to(device)


def box_mask(h: int, w: int, size: int, device: torch.device | str | None = None) -> torch.Tensor:
    """A centred size×size hole."""
    if size >= min(h, w):
        raise HGMError(f"box of {size} pixels does not fit a {h}×{w} image")
    m = torch.ones(3, h, w, device=device)
    top, left = (h - size) // 2, (w - size) // 2
    m[:, top:top + size, left:left + size] = 0
    return m


def _alpha_as_mask(path: str, arr: np.ndarray) -> np.ndarray:
    """H×W×C with alpha last -> H×W×1 or H×W×(C-1). Opaque everywhere: the colours are the mask, alpha
    is dropped. Otherwise the alpha is the mask (transparent = missing, opaque = known), and the
    colours of the opaque pixels must all be one value (else they would mark other holes: refused)."""
    alpha, colour = arr[..., -1], arr[..., :-1]
    opaque = 1 if arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer) else np.iinfo(arr.dtype).max
    if (alpha == opaque).all():
        return colour
    kept = colour[alpha != 0]
    if kept.size and not (kept == kept.flat[0]).all():
        raise HGMError(f"mask {path} marks pixels both by transparency and by colour; use one: a transparent "
                       f"hole in a single-colour image, or an opaque black-and-white image")
    return alpha[..., None]


def _mask_values(path: str) -> np.ndarray:
    """The raw sample values of a mask file, H×W×C (an alpha channel is the mask or dropped: _alpha_as_mask)."""
    checked_header(path)  # over the pixel limit: refused before anything is decoded
    arr = None
    if path.lower().endswith((".tif", ".tiff")):
        import tifffile
        try:
            arr = np.asarray(tifffile.imread(path))
        except (ValueError, TypeError, tifffile.TiffFileError):
            arr = None  # let Pillow try
    if arr is None:
        with Image.open(path) as img:
            if img.mode in ("P", "PA"):
                img = img.convert("RGBA")
            arr = np.asarray(img)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim == 3 and arr.shape[-1] in (2, 4):
        arr = _alpha_as_mask(path, arr)
    if arr.ndim != 3 or arr.shape[-1] not in (1, 3):
        raise HGMError(f"mask {path}: unsupported layout {arr.shape}")
    return arr


def read_mask_file(path: str, h: int, w: int) -> torch.Tensor:
    """A mask image that must be H×W: 0 missing, and 1 or 255 (65535 for 16 bits) known, or, with
    transparency, transparent missing and opaque known; any other value, channels that differ, no
    known sample or no missing one is an error naming the mask."""
    try:
        arr = _mask_values(path)
    except HGMError:
        raise
    except Exception as e:
        raise HGMError(f"cannot read mask {path}: {e}") from e
    if arr.shape[:2] != (h, w):
        raise HGMError(f"mask {path} is {arr.shape[0]}×{arr.shape[1]} but the image is {h}×{w}")
    if arr.shape[-1] == 3 and not (arr == arr[..., :1]).all():
        raise HGMError(f"mask {path} is a colour image whose channels differ; a mask marks whole pixels: "
                       f"use a grey (or black-and-white) image")
    values = np.unique(arr[..., 0])
    allowed = [{0, 1}, {0, 255}, {0, 65535}] if np.issubdtype(arr.dtype, np.integer) else [{0.0, 1.0}]
    scale = next((max(a) for a in allowed if set(values.tolist()) <= a), None)
    if scale is None:
        shown = ", ".join(f"{v:g}" for v in values[:8]) + (", …" if len(values) > 8 else "")
        raise HGMError(f"mask {path} holds the values {shown}; a mask holds 0 (missing) and 255 or 1 (known) only")
    known = torch.from_numpy(arr[..., 0] == scale)
    if not known.any():
        raise HGMError(f"mask {path} marks every pixel missing (all 0); nothing is measured")
    if known.all():
        raise HGMError(f"mask {path} marks no pixel missing (all known); there is nothing to inpaint: "
                       f"0 (or transparent) marks what is missing")
    return known.float().expand(3, h, w).clone()


def name_seed(stem: str) -> int:
    """A stable seed from an image's name (CRC-32 of its UTF-8 bytes): its random mask does not
    change when other files are added to or removed from the folder."""
    return zlib.crc32(stem.encode("utf-8"))


def mask_for_image(tcfg: dict, stem: str, h: int, w: int, index: int | None = None) -> torch.Tensor:
    """The mask of the test image named `stem` under the test.* settings (`index`, its position in
    the folder, is accepted for compatibility and unused: random masks are seeded by the name)."""
    if tcfg["task"] == "demosaic":
        return bayer_mask(tcfg["pattern"], h, w)
    spec = str(tcfg["mask"])
    if spec == "random":
        g = torch.Generator().manual_seed(name_seed(stem))  # the same mask for the same image every run
        return random_mask(h, w, tcfg["missing_rate"], generator=g)
    if spec == "box":
        return box_mask(h, w, tcfg["box_size"])
    if os.path.isdir(spec):
        for ext in MASK_EXTENSIONS:
            p = os.path.join(spec, stem + ext)
            if os.path.isfile(p):
                return read_mask_file(p, h, w)
        raise HGMError(f"no mask named {stem}.png in {spec}")
    if os.path.isfile(spec):
        return read_mask_file(spec, h, w)
    raise HGMError(f"test.mask={spec!r} is neither random, box, a mask file nor a folder")
