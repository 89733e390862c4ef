"""Owns the TensorBoard pictures of a training run: at each snapshot, validation crops denoised at a few
noise levels (one Tweedie step x + σ² s(x)) and a short annealed sample from noise.

Everything random here runs on a forked RNG, so logging pictures never changes the training run.
"""
from __future__ import annotations

import logging

import torch

from datasets.transforms import Transform
from runners.sampler import SamplerDiverged, annealed_langevin

log = logging.getLogger("hgm")

DENOISE_LEVELS = 3  # noise levels shown: the first, a middle and the last


def level_indices(n_levels: int, k: int = DENOISE_LEVELS) -> list[int]:
    """k level indices spread from the largest noise (0) to the smallest (n_levels - 1)."""
    if n_levels <= k:
        return list(range(n_levels))
    return sorted({round(j * (n_levels - 1) / (k - 1)) for j in range(k)})


@torch.no_grad()
def denoise_grid(model: torch.nn.Module, x: torch.Tensor, sigmas: torch.Tensor, transform: Transform,
                 generator: torch.Generator) -> torch.Tensor:
    """Rows: clean crops, then per level (noisy, denoised); columns: the crops. x is lifted B×C×h×w."""
    from torchvision.utils import make_grid
    rows = [transform.inverse(x)]
    for i in level_indices(len(sigmas)):
        sigma = float(sigmas[i])
        noisy = x + sigma * torch.randn(x.shape, generator=generator).to(x.device)
        labels = torch.full((x.shape[0],), i, dtype=torch.long, device=x.device)
        denoised = noisy + sigma ** 2 * model(noisy, labels).float()
        rows += [transform.inverse(noisy), transform.inverse(denoised)]
    tiles = torch.cat([r.float().clamp(0, 1).cpu() for r in rows], dim=0)
    return make_grid(tiles, nrow=x.shape[0], padding=2, pad_value=1.0)


@torch.no_grad()
def sample_grid(model: torch.nn.Module, shape: tuple, sigmas: torch.Tensor, transform: Transform, step_lr: float,
                n_steps_each: int, device: torch.device) -> torch.Tensor:
    """A short annealed Langevin sample from U(0, 1) (langevin update, final Tweedie step)."""
    from torchvision.utils import make_grid
    b, _, h, w = shape
    x = transform.forward(torch.rand(b, 3, h, w, device=device))
    x = annealed_langevin(lambda v, labels: model(v, labels).float(), x, sigmas, step_lr, n_steps_each,
                          update="langevin", denoise=True)
    return make_grid(transform.inverse(x).float().clamp(0, 1).cpu(), nrow=b, padding=2, pad_value=1.0)


def log_snapshot_images(writer, model: torch.nn.Module, val_x: torch.Tensor | None, sigmas: torch.Tensor,
                        transform: Transform, step: int, n_images: int, step_lr: float, n_steps_each: int,
                        device: torch.device, image_size: int) -> None:
    """Write `denoise` and `sample` image grids for `step` (the model in eval mode, then restored)."""
    if n_images <= 0 or writer is None:
        return
    was_training = model.training
    model.eval()
    devices = [device.index or 0] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            g = torch.Generator().manual_seed(step)
            if val_x is not None:
                writer.add_image("denoise", denoise_grid(model, val_x[:n_images].to(device), sigmas, transform, g),
                                 step)
            torch.manual_seed(step)
            lifted = (n_images, 3, image_size, image_size)
            try:
                writer.add_image("sample", sample_grid(model, lifted, sigmas, transform, step_lr, n_steps_each,
                                                       device), step)
            except SamplerDiverged as e:
                log.warning("step %d: the TensorBoard sample diverged (%s)", step, e)
    finally:
        model.train(was_training)
