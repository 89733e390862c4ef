"""Owns HGM's liftings of an RGB image to a higher-dimensional tensor (paper, Sec. 3), their names and aliases.

Each transform maps a batch B×3×H×W to B×C×H'×W' and back; `inverse(forward(x))`
is exactly `x` (for channel copy with k a power of two; otherwise to float
rounding). The network's channel count is `transform.channels`. VARIANTS is the
one table from the paper's variants (3ch, 6ch, 12ch) to a transform.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from datasets.errors import HGMError


class Identity:
    """3 channels: the plain NCSN baseline."""
    name = "identity"

    def __init__(self):
        self.channels = 3
        self.size_multiple = 1  # spatial sizes the transform needs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def inverse(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def flip(self, x: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
        """The lifted tensor of the image flipped along `dims` (-1: left–right, -2: up–down)."""
        return x.flip(dims)


class ChannelCopy:
    """RGB -> RGB...RGB (k copies; k=2 gives the paper's 6-channel RGBRGB).

    Noise added in the lifted space differs between copies, so the prior sees
    k noisy "samples" of each pixel; the inverse is the mean of the copies.
    """
    name = "channel_copy"

    def __init__(self, factor: int = 2):
        if factor < 1:
            raise HGMError(f"channel_copy needs data.transform_factor >= 1, got {factor}")
        self.k = int(factor)
        self.channels = 3 * self.k
        self.size_multiple = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.repeat(1, self.k, 1, 1)

    def inverse(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        return x.reshape(b, self.k, 3, h, w).mean(dim=1)

    def flip(self, x: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
        """The lifted tensor of the image flipped along `dims` (the copies flip alike)."""
        return x.flip(dims)


class PixelScale:
    """2×2 space-to-depth ("pool"): H×W×3 -> H/2×W/2×12 (factor f: 3f² channels)."""
    name = "pixel_scale"

    def __init__(self, factor: int = 2):
        if factor < 1:
            raise HGMError(f"pixel_scale needs data.transform_factor >= 1, got {factor}")
        self.f = int(factor)
        self.channels = 3 * self.f ** 2
        self.size_multiple = self.f

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if h % self.f or w % self.f:
            raise HGMError(f"pixel_scale with factor {self.f} needs sizes divisible by {self.f}, got {h}×{w}")
        return F.pixel_unshuffle(x, self.f)

    def inverse(self, x: torch.Tensor) -> torch.Tensor:
        return F.pixel_shuffle(x, self.f)

    def flip(self, x: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
        """The lifted tensor of the image flipped along `dims`: the blocks flip and so do the pixels in each."""
        return self.forward(self.inverse(x).flip(dims))


Transform = Identity | ChannelCopy | PixelScale
TRANSFORMS = {"identity": Identity, "channel_copy": ChannelCopy, "pixel_scale": PixelScale}
# the paper's variants: transform and factor (None: the transform takes no factor)
VARIANTS = {"3ch": ("identity", None), "6ch": ("channel_copy", 2), "12ch": ("pixel_scale", 2)}
ALIASES = {"rgb": "identity", "copy": "channel_copy", "rgbrgb": "channel_copy", "pool": "pixel_scale",
           **{variant: name for variant, (name, _) in VARIANTS.items()}}


def canonical_name(name: str) -> str:
    """The transform's canonical name for a name or an alias (case-insensitive)."""
    key = str(name).lower()
    return ALIASES.get(key, key)


def make_transform(name: str, factor: int = 2) -> Transform:
    key = canonical_name(name)
    if key not in TRANSFORMS:
        raise HGMError(f"unknown transform {name!r}; choose one of {', '.join(TRANSFORMS)} "
                       f"(aliases: {', '.join(ALIASES)})")
    return Identity() if key == "identity" else TRANSFORMS[key](factor)


def transform_from_config(cfg: dict) -> Transform:
    return make_transform(cfg["data"]["transform"], cfg["data"]["transform_factor"])
