"""Owns the image geometry of restoration: whole images as overlapping patches and back (overlaps
averaged), plus the padding that makes any size fit a transform and the network."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from datasets.errors import HGMError


def pad_to_multiple(x: torch.Tensor, multiple: int, mode: str = "reflect") -> tuple[torch.Tensor, tuple[int, int]]:
    """Pad the bottom/right of B×C×H×W so H and W divide by `multiple`; returns (x, (h, w))."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        x = _pad(x, (0, pw, 0, ph), mode)
    return x, (h, w)


def _pad(x, pad, mode):
    mode = {"wrap": "circular"}.get(mode, mode)
    if mode not in ("reflect", "circular", "replicate", "constant"):
        raise HGMError(f"unknown pad mode {mode!r} (circular | reflect)")
    if mode in ("reflect", "circular"):
        # reflect needs the pad to be smaller than the size, circular no larger (it would wrap
        # around more than once): fall back to replicate
        h, w = x.shape[-2:]
        too_big = (lambda a, n: a >= n) if mode == "reflect" else (lambda a, n: a > n)
        if too_big(pad[1], w) or too_big(pad[3], h) or too_big(pad[0], w) or too_big(pad[2], h):
            mode = "replicate"
    return F.pad(x, pad, mode=mode)


def patch_grid(size: int, patch: int, stride: int) -> tuple[list[int], int]:
    """Start offsets covering [0, padded) with patches of `patch` every `stride`; returns (starts, padded)."""
    if patch >= size:
        return [0], patch
    n = math.ceil((size - patch) / stride) + 1
    return [k * stride for k in range(n)], (n - 1) * stride + patch


def to_patches(x: torch.Tensor, patch: int, stride: int, mode: str = "circular") -> tuple[torch.Tensor, tuple]:
    """B×C×H×W -> (N·B)×C×patch×patch, with what `from_patches` needs to undo it."""
    if stride <= 0 or stride > patch:
        raise HGMError(f"patch stride {stride} must be in 1..patch size {patch}")
    h, w = x.shape[-2:]
    rows, hp = patch_grid(h, patch, stride)
    cols, wp = patch_grid(w, patch, stride)
    xp = _pad(x, (0, wp - w, 0, hp - h), mode) if (hp > h or wp > w) else x
    tiles = [xp[..., r:r + patch, c:c + patch] for r in rows for c in cols]
    return torch.cat(tiles, dim=0), (x.shape[0], h, w, hp, wp, rows, cols, patch)


def from_patches(tiles: torch.Tensor, layout: tuple) -> torch.Tensor:
    """Stitch patches back, averaging overlaps, and crop the padding off."""
    b, h, w, hp, wp, rows, cols, patch = layout
    c = tiles.shape[1]
    out = tiles.new_zeros(b, c, hp, wp)
    weight = tiles.new_zeros(1, 1, hp, wp)
    k = 0
    for r in rows:
        for cc in cols:
            out[..., r:r + patch, cc:cc + patch] += tiles[k * b:(k + 1) * b]
            weight[..., r:r + patch, cc:cc + patch] += 1
            k += 1
    return (out / weight)[..., :h, :w]
