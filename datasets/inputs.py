"""Owns the test inputs of a restoration: each image's ground truth, measurement and mask, and earlier estimates.

Everything is read and checked before any sampling, so a bad file fails the
run before it writes anything.
"""
from __future__ import annotations

import logging
import os
from typing import NamedTuple

import torch

from datasets.errors import HGMError
from datasets.image_files import list_images, read_image
from datasets.masks import bayer_mask, mask_for_image
from datasets.noise import NOISE_AUTO, add_measurement_noise, parse_noise_sigma

TASKS = ("demosaic", "inpaint")
ESTIMATE_EXTENSIONS = (".png", ".tif", ".tiff", ".bmp", ".jpg")
log = logging.getLogger("hgm")


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


def output_folders(root: str) -> list[str]:
    """hgm output folders under `root` (a config.yml next to an input/ or restored/ folder)."""
    found = []
    for folder, dirs, files in os.walk(root):
        if "config.yml" in files and ("input" in dirs or "restored" in dirs):
            found.append(folder)
            dirs[:] = []  # nothing inside it is data
    return found


def input_paths(data_path: str) -> tuple[list[str], list[str]]:
    """(image paths, their names): each name is the path under `data_path` without its extension,
    with "/" between folders (sub/x.png -> sub/x). Earlier hgm output folders under `data_path`
    are skipped with a warning; two files that would get the same name are refused."""
    paths = list_images(data_path)
    root = os.path.normpath(data_path)
    skipped = [os.path.join(f, "") for f in output_folders(data_path) if os.path.normpath(f) != root]
    if skipped:
        kept = [p for p in paths if not p.startswith(tuple(skipped))]
        log.warning("test.data_path: skipped %d file(s) in %d earlier hgm output folder(s) (%s); they are not data",
                    len(paths) - len(kept), len(skipped), ", ".join(f.rstrip(os.sep) for f in skipped))
        if not kept:
            raise HGMError(f"image folder {data_path!r} holds no images outside hgm output folders")
        paths = kept
    stems = [os.path.splitext(os.path.relpath(p, data_path))[0].replace(os.sep, "/") for p in paths]
    seen: dict[str, str] = {}
    for stem, path in zip(stems, paths):
        other = seen.setdefault(stem.casefold(), path)
        if other != path:
            raise HGMError(f"{other} and {path} would both be written as restored/{stem}.png; "
                           f"rename one of them (or move it to another folder)")
    return paths, stems


def read_input(path: str) -> torch.Tensor:
    try:
        return read_image(path)
    except Exception as e:
        raise HGMError(f"cannot read image {path}: {e}") from e


def read_mosaic(path: str) -> torch.Tensor:
    """A Bayer mosaic stored as a one-channel image (or three equal channels) -> 1×H×W."""
    x = read_input(path)  # a one-channel image comes back as three equal channels
    if not (torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])):
        raise HGMError(f"{path} is a colour image, not a Bayer mosaic: with test.degraded_input=true, "
                       f"demosaicking reads one-channel mosaics (or three equal channels)")
    return x[:1]


def load_inputs(tcfg: dict) -> list[RestoreInput]:
    """Every image of test.data_path degraded as test.* says, all checked before any sampling.
    With ground truth and test.noise_sigma > 0 the measurement is noisy: datasets.noise.add_measurement_noise
    (Gaussian, seeded by the image's name); degraded inputs are taken as given."""
    if tcfg["task"] not in TASKS:
        raise HGMError(f"unknown test.task {tcfg['task']!r} ({' | '.join(TASKS)})")
    noise = parse_noise_sigma(tcfg.get("noise_sigma"))
    if noise == NOISE_AUTO and not tcfg["degraded_input"]:
        raise HGMError("test.noise_sigma=auto estimates the noise of degraded inputs (test.degraded_input=true); "
                       "to evaluate on ground truth give the noise to add as a number (0–255 units, e.g. 10)")
    if tcfg["degraded_input"] and tcfg["task"] == "inpaint" and str(tcfg["mask"]) in ("random", "box"):
        raise HGMError(f"test.degraded_input=true with test.mask={tcfg['mask']}: the mask of already degraded "
                       f"images must be given; set test.mask to its file or to a folder of masks named like "
                       f"the images")
    items = []
    paths, stems = input_paths(tcfg["data_path"])
    for index, (stem, path) in enumerate(zip(stems, paths)):
        if tcfg["degraded_input"] and tcfg["task"] == "demosaic":
            raw = read_mosaic(path)
            h, w = raw.shape[-2:]
            mask = bayer_mask(tcfg["pattern"], h, w)
            items.append(RestoreInput(stem, None, raw.expand(3, h, w) * mask, mask))
            continue
        x = centre_crop(read_input(path), tcfg["image_size"])
        h, w = x.shape[-2:]
        mask = mask_for_image(tcfg, stem, h, w, index)
        if tcfg["task"] == "inpaint":
            log.info("%s: mask %s, %.1f%% of the pixels known", stem, tcfg["mask"], 100 * float(mask[0].mean()))
        gt = None if tcfg["degraded_input"] else x
        y = add_measurement_noise(x, mask, noise, stem) if gt is not None and noise else x * mask
        items.append(RestoreInput(stem, gt, y, mask))
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
