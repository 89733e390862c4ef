"""Owns the meaning of a caller's image array (the Python API's input contract): its value range,
layout and batch, checked and converted explicitly, and the conversion of a result back to the same kind.

Values: uint8 is 0..255 and uint16 0..65535 (scaled by their range); float is [0, 1]. Anything else
(0..255 floats, 12-bit data in uint16, signed integers, a black level) needs `value_range=(black, white)`
(or `white` alone); a float image outside [0, 1] without it is refused, never guessed. NaN and
infinite values are refused.

Layout: H×W (a raw mosaic), H×W×C or C×H×W with C 3 (colour) or 1 (a mosaic), and any of these with
a leading batch dimension N. When both ends could be channels (3×H×3), NumPy arrays are read H×W×C
and tensors C×H×W, their usual conventions. Four channels (RGBA) are refused: drop the alpha.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from datasets.errors import HGMError

CHANNELS = (1, 3)
FLOAT_TOLERANCE = 1e-3  # float values this far (relative) outside the range are rounding, not another range


@dataclass(frozen=True)
class ImageKind:
    """What a caller passed, so that a result goes back the same way."""
    tensor: bool  # a torch tensor (else a NumPy array)
    dtype: object  # its dtype (NumPy's or torch's)
    layout: str  # "hwc", "chw" or "hw" (a mosaic without a channel axis)
    batch: bool  # it had a leading batch dimension
    black: float
    white: float


def _range_of(dtype, name: str, value_range, what: str) -> tuple[float, float]:
    """(black, white) of a dtype, or the caller's value_range."""
    if name == "bool":
        raise HGMError(f"the {what} is a bool array: that is a mask, not an image")
    if value_range is not None:
        lo, hi = (0.0, float(value_range)) if np.isscalar(value_range) else map(float, value_range)
        if not hi > lo:
            raise HGMError(f"value_range={value_range!r}: white must be above black")
        return lo, hi
    if name == "uint8":
        return 0.0, 255.0
    if name == "uint16":
        return 0.0, 65535.0
    if name.startswith(("float", "bfloat", "half", "double")):
        return 0.0, 1.0
    raise HGMError(f"the {what} is {name}: give its range, value_range=(black, white) (e.g. (0, 4095) for "
                   f"12-bit data); only uint8, uint16 and float images have a known range")


def _layout(shape: tuple, is_tensor: bool, what: str) -> tuple[str, bool]:
    """(layout, batch) of an image shape."""
    nd = len(shape)
    batch = nd == 4
    s = shape[1:] if batch else shape
    if len(s) == 2:
        return "hw", False
    if len(s) != 3:
        raise HGMError(f"the {what} has shape {tuple(shape)}; expected H×W, H×W×3, 3×H×W or a batch of those "
                       f"(N×H×W×3, N×3×H×W; a batch of mosaics is N×1×H×W)")
    first, last = s[0] in CHANNELS, s[-1] in CHANNELS
    if first and last:
        layout = "chw" if is_tensor else "hwc"
    elif first or last:
        layout = "chw" if first else "hwc"
    elif 4 in (s[0], s[-1]) or 2 in (s[0], s[-1]):
        c = s[0] if s[0] in (2, 4) else s[-1]
        raise HGMError(f"the {what} has {c} channels (shape {tuple(shape)}); give 3 (RGB: drop the alpha "
                       f"channel, e.g. image[..., :3]) or 1 (a mosaic)")
    else:
        raise HGMError(f"the {what} has shape {tuple(shape)}: no axis of 1 or 3 channels; expected H×W×3 or "
                       f"3×H×W (or a batch of those)")
    return layout, batch


def to_unit(image, value_range=None, what: str = "image") -> tuple[torch.Tensor, ImageKind]:
    """`image` as N×C×H×W float32 in [0, 1] (C 1 or 3), and its kind (see the module's contract)."""
    is_tensor = isinstance(image, torch.Tensor)
    if is_tensor:
        values = image.detach().cpu()
        dtype, name = values.dtype, str(values.dtype).replace("torch.", "")
    else:
        arr = np.asarray(image)
        if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
            raise HGMError(f"the {what} is not a numeric array (got {type(image).__name__} of {arr.dtype})")
        dtype, name = arr.dtype, arr.dtype.name
        values = torch.from_numpy(np.ascontiguousarray(arr).astype(np.float64))
    layout, batch = _layout(tuple(values.shape), is_tensor, what)
    black, white = _range_of(dtype, name, value_range, what)
    v = values.double()
    if v.numel() and not bool(torch.isfinite(v).all()):
        raise HGMError(f"the {what} holds NaN or infinite values")
    if v.numel():
        vmin, vmax = float(v.min()), float(v.max())
        slack = FLOAT_TOLERANCE * (white - black) if (name.startswith(("float", "bfloat", "half", "double"))) else 0
        if vmin < black - slack or vmax > white + slack:
            hint = ("a float image must be in [0, 1]: pass value_range=(0, 255) for 0..255 values, or scale it"
                    if value_range is None else "give the range the data is in")
            raise HGMError(f"the {what}'s values span {vmin:g}..{vmax:g}, outside [{black:g}, {white:g}] "
                           f"({name}); {hint}")
        if name == "uint16" and value_range is None and 0 < vmax < 4096:
            warnings.warn(f"the {what} is uint16 with values up to {vmax:g}: read as 0..65535 (a very dark "
                          f"image); for 12-bit data pass value_range=(0, 4095)", stacklevel=3)
    x = ((v - black) / (white - black)).clamp(0, 1).float()
    if layout == "hw":
        x = x[None]
    elif layout == "hwc":
        x = x.movedim(-1, -3)
    if not batch:
        x = x[None]
    return x.contiguous(), ImageKind(is_tensor, dtype, layout, batch, black, white)


def from_unit(x: torch.Tensor, kind: ImageKind):
    """N×3×H×W in [0, 1] back to the caller's kind: container, dtype, range, layout (a mosaic gives
    a colour image: H×W×3 for arrays, 3×H×W for tensors) and batch."""
    v = kind.black + x.detach().cpu().double().clamp(0, 1) * (kind.white - kind.black)
    if kind.layout == "hwc" or (kind.layout == "hw" and not kind.tensor):
        v = v.movedim(-3, -1)
    if not kind.batch:
        v = v[0]
    integer = (not kind.dtype.is_floating_point) if kind.tensor else np.issubdtype(kind.dtype, np.integer)
    if integer:
        v = v.round()
    if kind.tensor:
        return v.to(kind.dtype).contiguous()
    return v.numpy().astype(kind.dtype)


def to_mask(mask, n: int, h: int, w: int) -> torch.Tensor:
    """An inpainting mask (H×W, H×W×1/3, 1/3×H×W, or one per image: N×H×W; bool, 0/1 or 0/255;
    nonzero = known) as N×H×W float 0/1. A mask that marks no pixel missing, or none known, is refused."""
    m = mask.detach().cpu() if isinstance(mask, torch.Tensor) else torch.from_numpy(np.asarray(mask).copy())
    m = m.double()
    if m.dim() == 3 and m.shape[-2:] != (h, w) and m.shape[-1] in CHANNELS and m.shape[:2] == (h, w):
        m = m[..., 0]
    elif m.dim() == 3 and m.shape[0] in CHANNELS and m.shape[0] != n and m.shape[-2:] == (h, w):
        m = m[0]
    if m.dim() == 2 and tuple(m.shape) == (h, w):
        m = m[None].expand(n, h, w)
    if tuple(m.shape) != (n, h, w):
        raise HGMError(f"the mask is {tuple(m.shape)}, the image {h}×{w}" + (f" (a batch of {n})" if n > 1 else ""))
    known = (m > 0.5).float()
    for i in range(n):
        if bool(known[i].all()):
            raise HGMError("the mask marks no pixel missing (every value known): there is nothing to inpaint")
        if not bool(known[i].any()):
            raise HGMError("the mask marks every pixel missing (all 0): nothing is measured")
    return known
