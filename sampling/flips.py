"""Owns the score read on the image's flips in turn (`test.flips`).

The bundled priors were trained on every orientation of their crops (8-fold augmentation), so the
score of a flipped image, flipped back, estimates the same score as the image's own; the network's
errors differ between the orientations. Reading each network evaluation on the next of the four flips
(none, left–right, up–down, both) spreads those errors over the steps, where the sampler averages
them, at no extra evaluation. Transposes are left out: they change a non-square image's shape.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

FLIPS: tuple[tuple[int, ...], ...] = ((), (-1,), (-2,), (-2, -1))


class FlippedScore:
    """score(x, labels) of a lifted image, each call on the next flip of the image in FLIPS, flipped
    back; `transform` says how a flip of the image acts on its lifted tensor."""

    def __init__(self, score_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], transform):
        self.score_fn, self.transform, self.calls = score_fn, transform, 0

    def __len__(self) -> int:  # the tiles of a TiledScore (progress bars count them)
        return len(self.score_fn) if hasattr(self.score_fn, "__len__") else 1

    def __call__(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        dims = FLIPS[self.calls % len(FLIPS)]
        self.calls += 1
        if not dims:
            return self.score_fn(x, labels)
        flip = self.transform.flip
        return flip(self.score_fn(flip(x, dims), labels), dims)
