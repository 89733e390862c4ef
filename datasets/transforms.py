"""HGM's liftings of an RGB image to a higher-dimensional tensor (paper, Sec. 3).

Each transform maps a batch B×3×H×W to B×C×H'×W' and back; `inverse(forward(x))`
is exactly `x` (for channel copy with k a power of two; otherwise to float rounding). The network's channel count is `transform.channels`.
"""
import torch.nn.functional as F

from runners.errors import HGMError


class Identity:
    """3 channels: the plain NCSN baseline."""
    name = "identity"

    def __init__(self, factor=1):
        self.channels = 3
        self.size_multiple = 1  # spatial sizes the transform needs

    def forward(self, x):
        return x

    def inverse(self, x):
        return x


class ChannelCopy:
    """RGB -> RGB...RGB (k copies; k=2 gives the paper's 6-channel RGBRGB).

    Noise added in the lifted space differs between copies, so the prior sees
    k noisy "samples" of each pixel; the inverse is the mean of the copies.
    """
    name = "channel_copy"

    def __init__(self, factor=2):
        if factor < 1:
            raise HGMError(f"channel_copy needs data.transform_factor >= 1, got {factor}")
        self.k = int(factor)
        self.channels = 3 * self.k
        self.size_multiple = 1

    def forward(self, x):
        return x.repeat(1, self.k, 1, 1)

    def inverse(self, x):
        b, _, h, w = x.shape
        return x.reshape(b, self.k, 3, h, w).mean(dim=1)


class PixelScale:
    """2×2 space-to-depth ("pool"): H×W×3 -> H/2×W/2×12 (factor f: 3f² channels)."""
    name = "pixel_scale"

    def __init__(self, factor=2):
        if factor < 1:
            raise HGMError(f"pixel_scale needs data.transform_factor >= 1, got {factor}")
        self.f = int(factor)
        self.channels = 3 * self.f ** 2
        self.size_multiple = self.f

    def forward(self, x):
        h, w = x.shape[-2:]
        if h % self.f or w % self.f:
            raise HGMError(f"pixel_scale with factor {self.f} needs sizes divisible by {self.f}, got {h}×{w}")
        return F.pixel_unshuffle(x, self.f)

    def inverse(self, x):
        return F.pixel_shuffle(x, self.f)


TRANSFORMS = {"identity": Identity, "channel_copy": ChannelCopy, "pixel_scale": PixelScale}
ALIASES = {"rgb": "identity", "3ch": "identity", "copy": "channel_copy", "rgbrgb": "channel_copy",
           "6ch": "channel_copy", "pool": "pixel_scale", "12ch": "pixel_scale"}


def make_transform(name, factor=2):
    key = ALIASES.get(str(name).lower(), str(name).lower())
    if key not in TRANSFORMS:
        raise HGMError(f"unknown transform {name!r}; choose one of {', '.join(TRANSFORMS)} "
                       f"(aliases: {', '.join(ALIASES)})")
    return TRANSFORMS[key](factor)


def transform_from_config(cfg):
    return make_transform(cfg["data"]["transform"], cfg["data"]["transform_factor"])
