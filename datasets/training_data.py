"""Owns the training data: images held in memory (or read lazily), the held-out split that
validation and tuning share, and random crops with flip/rotation augmentation."""
from __future__ import annotations

import logging

import torch

from datasets.errors import HGMError
from datasets.image_files import list_images, read_image, read_images, usable_paths

log = logging.getLogger("hgm")


class RandomCrops(torch.utils.data.Dataset):
    """Random size×size crops with optional 8-fold flip/rotation augmentation.
    An epoch visits every image once (more often if the batch is larger)."""

    def __init__(self, images, size, augment=True, min_len=1):
        self.images, self.size, self.augment = images, size, augment
        self.length = max(len(images), min_len)  # a batch larger than the folder still fills

    def __len__(self):
        return self.length

    def __getitem__(self, i):
        x = self.images[i % len(self.images)]
        h, w = x.shape[-2:]
        top = int(torch.randint(0, h - self.size + 1, ()))
        left = int(torch.randint(0, w - self.size + 1, ()))
        x = x[:, top:top + self.size, left:left + self.size]
        if self.augment:
            k = int(torch.randint(0, 8, ()))
            if k >= 4:
                x = x.flip(-1)
            x = torch.rot90(x, k % 4, dims=(-2, -1))
        return as_float(x).contiguous()


class LazyImages:
    """List-like access that decodes each image on demand (for folders too big to preload).

    A file that cannot be decoded (or is smaller than `min_size`) is skipped with a warning naming
    it, and the next image is returned in its place."""

    def __init__(self, paths, min_size=None):
        self.paths, self.min_size = paths, min_size
        self.skipped: set[str] = set()

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        n = len(self.paths)
        if not -n <= i < n:
            raise IndexError(i)  # also ends iteration
        for k in range(n):
            path = self.paths[(i + k) % n]
            if path in self.skipped:
                continue
            try:
                x = read_image(path)
            except Exception as e:  # PIL raises many kinds for corrupt files
                self.skip(path, f"unreadable: {e}")
                continue
            if self.min_size and min(x.shape[-2:]) < self.min_size:
                self.skip(path, f"{x.shape[-2]}×{x.shape[-1]}, smaller than the {self.min_size}×{self.min_size} crop")
                continue
            return x
        raise HGMError(f"no usable image among {n} files (data.preload=false): {len(self.skipped)} skipped, "
                       f"e.g. {sorted(self.skipped)[0]}")

    def skip(self, path, why):
        self.skipped.add(path)
        log.warning("skipping image %s (%s); %d of %d skipped so far", path, why, len(self.skipped), len(self.paths))


def training_images(folder: str, crop: int, val_images: int = 0, preload: bool = True, seed: int = 0) -> tuple:
    """Split a folder into (train, val) lists of image tensors (or lazy lists).

    Unreadable images and images smaller than the crop are skipped and counted: with
    `preload` when decoding them, without it by their headers (and data found corrupt
    later is skipped when met). The held-out images are chosen by a seeded permutation,
    so the same folder and seed always hold out the same images."""
    paths = list_images(folder)
    if preload:
        items = read_images(paths, min_size=crop)
        images = [x for _, x in items]
        # uint8 storage saves 4× memory for 8-bit images; 16-bit stay float
        images = [to_storage(x) for x in images]
    else:
        paths = usable_paths(paths, min_size=crop)
        val, train_paths, val_paths = lazy_split(paths, crop, val_images, seed)
        return LazyImages(train_paths, crop), val, len(train_paths) + len(val_paths)
    n = len(images)
    val_idx, train_idx = split_indices(n, val_images, seed)
    return [images[i] for i in sorted(train_idx)], [images[i] for i in sorted(val_idx)], n


def lazy_split(paths: list[str], crop: int, val_images: int, seed: int = 0) -> tuple[list, list[str], list[str]]:
    """(held-out images decoded, training paths, held-out paths) without preloading the folder.

    The held-out images are decoded now (they are few, and validation uses them at once). One whose
    data turns out corrupt (or smaller than the crop) is skipped with a warning and the next image of
    the seeded permutation takes its place, so the split stays usable; with no such file it is the split
    `split_indices` gives (and preloading gives)."""
    n = len(paths)
    if val_images >= n:
        raise HGMError(f"data.val_images={val_images} leaves no training image (found {n} usable)")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    val, chosen, bad = [], [], set()
    for i in perm:
        if len(chosen) == val_images:
            break
        try:
            x = read_image(paths[i])
        except Exception as e:  # PIL raises many kinds for corrupt files
            log.warning("skipping image %s (unreadable: %s); another image is held out in its place", paths[i], e)
            bad.add(i)
            continue
        if min(x.shape[-2:]) < crop:
            log.warning("skipping image %s (%d×%d, smaller than the %d×%d crop)", paths[i], *x.shape[-2:], crop, crop)
            bad.add(i)
            continue
        val.append((i, x))
        chosen.append(i)
    train = [i for i in range(n) if i not in bad and i not in chosen]
    if not train:
        raise HGMError(f"data.val_images={val_images} leaves no training image (found {n - len(bad)} usable)")
    val.sort(key=lambda v: v[0])
    return [x for _, x in val], [paths[i] for i in train], [paths[i] for i in sorted(chosen)]


def split_indices(n: int, val_images: int, seed: int = 0) -> tuple[list[int], list[int]]:
    """(held-out, training) indices: a seeded permutation, the same every time."""
    if val_images >= n:
        raise HGMError(f"data.val_images={val_images} leaves no training image (found {n} usable)")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    return perm[:val_images], perm[val_images:]


def held_out_paths(folder: str, crop: int, val_images: int, preload: bool = True, seed: int = 0) -> list[str]:
    """The files `training_images` holds out (same arguments, same answer): where
    step sizes may be tuned without touching evaluation images."""
    paths = list_images(folder)
    if not preload:
        return lazy_split(usable_paths(paths, min_size=crop), crop, val_images, seed)[2]
    paths = [p for p, _ in read_images(paths, min_size=crop)]
    val_idx, _ = split_indices(len(paths), val_images, seed)
    return [paths[i] for i in sorted(val_idx)]


def as_float(x: torch.Tensor) -> torch.Tensor:
    return x.float() / 255.0 if x.dtype == torch.uint8 else x.float()


def to_storage(x: torch.Tensor) -> torch.Tensor:
    q = (x * 255).round()
    if torch.equal(q / 255, x):
        return q.to(torch.uint8)
    return x


