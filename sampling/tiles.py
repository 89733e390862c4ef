"""Owns tiled score evaluation: the network applied tile by tile to a large lifted image within
one sampler step, the tiles' scores blended into one score for the whole image.

Unlike patches (sampling/patches.py: every patch sampled on its own and averaged at the end), each
Langevin step here still moves the whole image with one score field, so the sampler, its noise and
its data consistency are those of whole-image restoration; only the network's view is bounded.
Memory then grows with the image only through a few image-sized tensors, and the network's
activations stay those of one tile.

Blending: tile k covers [a_k, a_k + T) on each axis; its weight is 1 inside and falls linearly
to 0 over the part it shares with a neighbour (ramps (j + 1)/(n + 1), j < n, on overlaps of n
samples), and the blended score is Σ_k w_k s_k / Σ_k w_k, which is exactly s wherever the tiles
agree (a score that depends on each pixel's neighbourhood only, within the overlap).
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch

ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def tile_starts(size: int, tile: int, overlap: int, align: int = 2) -> list[int]:
    """Offsets of tiles of `tile` samples covering [0, size), neighbours sharing at least `overlap`
    samples (as evenly spread as `align`, the network's stride, allows); [0] when one tile covers it."""
    if tile >= size:
        return [0]
    n = max(2, math.ceil((size - overlap) / (tile - overlap)))
    starts = [min(size - tile, align * round(k * (size - tile) / (n - 1) / align)) for k in range(n)]
    starts[-1] = size - tile
    return sorted(set(starts))


def _ramps(size: int, starts: list[int], tile: int, dtype: torch.dtype) -> list[torch.Tensor]:
    """The 1-D weight of each tile: 1, ramping to 0 across the samples it shares with a neighbour."""
    out = []
    for k, a in enumerate(starts):
        w = torch.ones(min(tile, size), dtype=dtype)
        if k > 0:
            n = starts[k - 1] + tile - a  # shared with the previous tile
            w[:n] = torch.arange(1, n + 1, dtype=dtype) / (n + 1)
        if k + 1 < len(starts):
            n = a + tile - starts[k + 1]
            w[len(w) - n:] = torch.minimum(w[len(w) - n:], torch.arange(n, 0, -1, dtype=dtype) / (n + 1))
        out.append(w)
    return out


class TiledScore:
    """score(x, labels) of a B×C×H×W lifted image, evaluated in tiles of `tile`×`tile` (lifted
    samples) sharing `overlap` samples, blended with linear ramps. Up to `batch` tiles go through
    the network together (stacked along the batch axis: the network treats every sample on its
    own, so this changes the speed, not the result). `on_tile()` is called once per tile evaluated
    (a progress bar)."""

    def __init__(self, score_fn: ScoreFn, shape: tuple[int, int], tile: int, overlap: int,
                 on_tile: Callable[[], None] | None = None, align: int = 2, batch: int = 1):
        h, w = shape
        overlap = min(overlap, tile // 2)
        self.score_fn, self.tile, self.on_tile = score_fn, tile, on_tile
        self.rows, self.cols = tile_starts(h, tile, overlap, align), tile_starts(w, tile, overlap, align)
        self.wr, self.wc = _ramps(h, self.rows, tile, torch.float32), _ramps(w, self.cols, tile, torch.float32)
        self.places = [(r, c, wr[:, None] * wc[None, :]) for r, wr in zip(self.rows, self.wr)
                       for c, wc in zip(self.cols, self.wc)]
        total = torch.zeros(h, w)
        for r, c, weight in self.places:
            total[r:r + weight.shape[0], c:c + weight.shape[1]] += weight
        self.total = total
        n = len(self.places)
        chunks = -(-n // max(1, batch))  # as few passes as the batch allows, of near-equal sizes
        self.chunks = [self.places[n * k // chunks:n * (k + 1) // chunks] for k in range(chunks)]

    def __len__(self) -> int:
        return len(self.places)

    def __call__(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if len(self) == 1:
            out = self.score_fn(x, labels)
            if self.on_tile is not None:
                self.on_tile()
            return out
        out = torch.zeros_like(x)
        b = x.shape[0]
        for chunk in self.chunks:
            views = [x[..., r:r + wt.shape[0], c:c + wt.shape[1]] for r, c, wt in chunk]
            parts = self.score_fn(torch.cat(views, dim=0).contiguous(), labels.repeat(len(chunk)))
            for k, (r, c, wt) in enumerate(chunk):
                out[..., r:r + wt.shape[0], c:c + wt.shape[1]] += parts[k * b:(k + 1) * b] * wt.to(x.device, x.dtype)
                if self.on_tile is not None:
                    self.on_tile()
        return out / self.total.to(x.device, x.dtype)
