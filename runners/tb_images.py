"""Owns the TensorBoard pictures of a training run: at each snapshot, validation crops denoised at a few
noise levels (one Tweedie step x + σ² s(x)) and a short annealed sample from noise.

Everything random here runs on a forked RNG, so logging pictures never changes the training run.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from datasets.transforms import Transform
from evaluation.report import image_grid
from sampling.langevin import SamplerDiverged, annealed_langevin
from sampling.settings import SamplerSettings

log = logging.getLogger("hgm")

DENOISE_LEVELS = 3  # noise levels shown: the first, a middle and the last
PICTURE_STEP_SCALE = 0.2  # the samples' step η = 0.2·σ² (NCSN's step_lr 2e-5 at σ_L 0.01), safe for any prior


def level_indices(n_levels: int, k: int = DENOISE_LEVELS) -> list[int]:
    """k level indices spread from the largest noise (0) to the smallest (n_levels - 1)."""
    if n_levels <= k:
        return list(range(n_levels))
    return sorted({round(j * (n_levels - 1) / (k - 1)) for j in range(k)})


@torch.no_grad()
def denoise_grid(model: torch.nn.Module, x: torch.Tensor, sigmas: torch.Tensor, transform: Transform,
                 generator: torch.Generator) -> torch.Tensor:
    """Rows: clean crops, then per level (noisy, denoised); columns: the crops. x is lifted B×C×h×w."""
    rows = [transform.inverse(x)]
    for i in level_indices(len(sigmas)):
        sigma = float(sigmas[i])
        noisy = x + sigma * torch.randn(x.shape, generator=generator).to(x.device)
        labels = torch.full((x.shape[0],), i, dtype=torch.long, device=x.device)
        denoised = noisy + sigma ** 2 * model(noisy, labels).float()
        rows += [transform.inverse(noisy), transform.inverse(denoised)]
    tiles = torch.cat([r.float().clamp(0, 1).cpu() for r in rows], dim=0)
    return image_grid(tiles, nrow=x.shape[0], padding=2, pad_value=1.0)


@torch.no_grad()
def sample_grid(model: torch.nn.Module, shape: tuple, sigmas: torch.Tensor, transform: Transform,
                n_steps_each: int) -> torch.Tensor:
    """A short annealed Langevin sample from U(0, 1) (langevin update, η = PICTURE_STEP_SCALE·σ²,
    final Tweedie step)."""
    b, _, h, w = shape
    x = transform.forward(torch.rand(b, 3, h, w, device=sigmas.device))
    settings = SamplerSettings(step_lr=PICTURE_STEP_SCALE * float(sigmas[-1]) ** 2, n_steps_each=n_steps_each,
                               update="langevin", denoise=True)
    x = annealed_langevin(lambda v, labels: model(v, labels).float(), x, sigmas, settings)
    return image_grid(transform.inverse(x).float().clamp(0, 1).cpu(), nrow=b, padding=2, pad_value=1.0)


@dataclass(frozen=True)
class SnapshotPictures:
    """What a training run shows in TensorBoard at each snapshot (training.tb_images crops of
    data.image_size pixels; training.tb_sample_steps Langevin steps per level for the samples)."""
    n_images: int
    image_size: int
    sample_steps: int

    @classmethod
    def from_config(cls, cfg: dict) -> SnapshotPictures:
        tr = cfg["training"]
        return cls(tr["tb_images"], cfg["data"]["image_size"], tr["tb_sample_steps"])

    def write(self, writer, model: torch.nn.Module, transform: Transform, sigmas: torch.Tensor,
              val_x: torch.Tensor | None, step: int) -> None:
        """Write `denoise` and `sample` image grids for `step` (the model in eval mode, then restored)."""
        if self.n_images <= 0 or writer is None:
            return
        was_training = model.training
        model.eval()
        device = sigmas.device
        try:
            with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
                g = torch.Generator().manual_seed(step)
                if val_x is not None:
                    writer.add_image("denoise", denoise_grid(model, val_x[:self.n_images].to(device), sigmas,
                                                             transform, g), step)
                torch.manual_seed(step)
                shape = (self.n_images, 3, self.image_size, self.image_size)
                try:
                    writer.add_image("sample", sample_grid(model, shape, sigmas, transform, self.sample_steps), step)
                except SamplerDiverged as e:
                    log.warning("step %d: the TensorBoard sample diverged (%s)", step, e)
        finally:
            model.train(was_training)
