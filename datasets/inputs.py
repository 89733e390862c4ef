"""Owns the test inputs of a restoration: each image's ground truth, measurement and mask, and earlier estimates.

Everything is read and checked before any sampling, so a bad file fails the
run before it writes anything.
"""
from __future__ import annotations

import os
from typing import NamedTuple

import torch

from datasets.errors import HGMError
from datasets.folder import list_images, read_image
from datasets.masks import bayer_mask, mask_for_image

TASKS = ("demosaic", "inpaint")
ESTIMATE_EXTENSIONS = (".png", ".tif", ".tiff", ".bmp", ".jpg")


class RestoreInput(NamedTuple):
    """One image to restore: its name, its ground truth (None for degraded inputs),
    the measurement y = mask ⊙ x and the mask (3×H×W each)."""
    stem: str
    gt: torch.Tensor | None
    y: torch.Tensor
    mask: torch.Tensor


def centre_crop(x: torch.Tensor, size: int | None) -> torch.Tensor:
    """The central size×size crop of …×H×W (x itself for size None or an image of that size)."""
    h, w = x.shape[-2:]
    if size is None or (h == size and w == size):
        return x
    if h < size or w < size:
        raise HGMError(f"test.image_size={size} is larger than an image of {h}×{w}")
    top, left = (h - size) // 2, (w - size) // 2
    return x[..., top:top + size, left:left + size]


def load_inputs(tcfg: dict) -> list[RestoreInput]:
    """Every image of test.data_path degraded as test.* says, all checked before any sampling."""
    if tcfg["task"] not in TASKS:
        raise HGMError(f"unknown test.task {tcfg['task']!r} ({' | '.join(TASKS)})")
    items = []
    paths = list_images(tcfg["data_path"])
    stems = [os.path.splitext(os.path.relpath(p, tcfg["data_path"]))[0].replace(os.sep, "_") for p in paths]
    for index, (stem, path) in enumerate(zip(stems, paths)):
        try:
            x = read_image(path)
        except Exception as e:
            raise HGMError(f"cannot read image {path}: {e}") from e
        if tcfg["degraded_input"] and tcfg["task"] == "demosaic":
            raw = x[:1]  # a mosaic is one channel; read_image made it grey RGB
            h, w = raw.shape[-2:]
            mask = bayer_mask(tcfg["pattern"], h, w)
            items.append(RestoreInput(stem, None, raw.expand(3, h, w) * mask, mask))
            continue
        x = centre_crop(x, tcfg["image_size"])
        h, w = x.shape[-2:]
        mask = mask_for_image(tcfg, stem, h, w, index)
        gt = None if tcfg["degraded_input"] else x
        items.append(RestoreInput(stem, gt, x * mask, mask))
    return items


def read_earlier_estimate(folder: str, stem: str, h: int, w: int) -> torch.Tensor:
    """The earlier stage's estimate of image `stem` (3×H×W) from `folder` (progressive restoration)."""
    for ext in ESTIMATE_EXTENSIONS:
        p = os.path.join(folder, stem + ext)
        if os.path.isfile(p):
            x = read_image(p)
            if x.shape[-2:] != (h, w):
                raise HGMError(f"earlier estimate {p} is {x.shape[-2]}×{x.shape[-1]}, the image is {h}×{w}")
            return x
    raise HGMError(f"progressive: no earlier estimate named {stem}.png in {folder}")
