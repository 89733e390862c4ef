"""The classical methods' shared input handling: 3×H×W or B×3×H×W float tensors."""
from __future__ import annotations

import torch


def as_batch(x, what="image"):
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


def check_size(h, w, pad, name):
    # reflect padding needs the image to be larger than the pad on each side
    if h <= pad or w <= pad:
        raise ValueError(f"{name} needs images larger than {pad}×{pad} pixels, got {h}×{w}")
