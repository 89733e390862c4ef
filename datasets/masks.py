"""Owns the masks of the two tasks: Bayer patterns, random and box holes, mask files, and the mask of each test image.

A mask is 3×H×W with 1 where a colour sample is measured.
"""
from __future__ import annotations

import logging
import os
import zlib

import numpy as np
import torch
from PIL import Image

from datasets.errors import HGMError
from datasets.image_files import checked_header

PATTERNS = ("rggb", "bggr", "grbg", "gbrg")
_CHANNEL = {"r": 0, "g": 1, "b": 2}
MASK_EXTENSIONS = (".png", ".bmp", ".tif", ".tiff")
MASK_CONVENTIONS = ("known_white", "fill_white")
INVERTED_MISSING = 0.5  # a mask file marking more than this missing ...
INVERTED_KNOWN_AREA = 64  # ... with its known pixels in areas this large on average (not scattered samples) is suspect
log = logging.getLogger("hgm")


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


def check_mask_options(convention: str, threshold: float | None) -> None:
    if convention not in MASK_CONVENTIONS:
        raise HGMError(f"test.mask_convention={convention!r} must be known_white (white = known, black = missing) "
                       f"or fill_white (white = the hole to fill)")
    if threshold is not None and not 0 < threshold < 1:
        raise HGMError(f"test.mask_threshold={threshold} must be in (0, 1) (values >= threshold·max are white), "
                       f"or null for exact black-and-white masks")


def warn_if_inverted(path: str, known: torch.Tensor, convention: str) -> None:
    """Warn when a mask file marks most of the image missing (> INVERTED_MISSING) in large areas:
    its inverse would be an ordinary hole, so it was likely painted the other way round. Scattered
    known samples (a random-sampling mask such as masks/random80.png) are not warned about."""
    missing = 1 - float(known.float().mean())
    if missing <= INVERTED_MISSING:
        return
    from scipy import ndimage
    _, parts = ndimage.label(known.numpy())
    if parts and float(known.sum()) / parts >= INVERTED_KNOWN_AREA:
        other = "fill_white" if convention == "known_white" else "known_white"
        white = "known" if convention == "known_white" else "the hole to fill"
        log.warning("mask %s marks %.0f%% of the image missing, in large areas: is it inverted? "
                    "(test.mask_convention=%s: white = %s; a mask painted the other way needs "
                    "test.mask_convention=%s)", path, 100 * missing, convention, white, other)


def read_mask_file(path: str, h: int, w: int, convention: str = "known_white",
                   threshold: float | None = None) -> torch.Tensor:
    """A mask image that must be H×W: black and white, white (1 or 255, 65535 for 16 bits) known
    and black (0) missing, or with convention fill_white the other way round. With `threshold`
    in (0, 1) any values are allowed and those >= threshold·max count as white (anti-aliased
    masks); without it any value other than black and white, channels that differ, or no known
    sample is an error naming the mask. With transparency, transparent is missing and opaque
    known. A mask with nothing missing is an error; one that looks inverted is warned about."""
    check_mask_options(convention, threshold)
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
    if threshold is not None:
        top = 1 if scale == 1 or not np.issubdtype(arr.dtype, np.integer) else np.iinfo(arr.dtype).max
        white = arr[..., 0] >= threshold * top
    elif scale is None:
        shown = ", ".join(f"{v:g}" for v in values[:8]) + (", …" if len(values) > 8 else "")
        raise HGMError(f"mask {path} holds the values {shown}; a mask holds 0 (black) and 255 or 1 (white) only "
                       f"(for an anti-aliased mask set test.mask_threshold, e.g. 0.5)")
    else:
        white = arr[..., 0] == scale
    known = torch.from_numpy(white if convention == "known_white" else ~white)
    if not known.any():
        colour = "black" if convention == "known_white" else "white"
        raise HGMError(f"mask {path} marks every pixel missing (all {colour}); nothing is measured")
    if known.all():
        raise HGMError(f"mask {path} marks no pixel missing (all known); there is nothing to inpaint: "
                       f"black (or transparent) marks what is missing"
                       + (" (test.mask_convention=fill_white: white)" if convention == "fill_white" else ""))
    warn_if_inverted(path, known, convention)
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
    options = {"convention": tcfg.get("mask_convention", "known_white"), "threshold": tcfg.get("mask_threshold")}
    if os.path.isdir(spec):
        for ext in MASK_EXTENSIONS:
            p = os.path.join(spec, stem + ext)
            if os.path.isfile(p):
                return read_mask_file(p, h, w, **options)
        raise HGMError(f"no mask named {stem}.png in {spec}")
    if os.path.isfile(spec):
        return read_mask_file(spec, h, w, **options)
    raise HGMError(f"test.mask={spec!r} is neither random, box, a mask file nor a folder")
