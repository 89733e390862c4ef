"""Owns the sampler's settings for one image (the test.* keys of the same names) and their two
forms: the paper's (step_lr, start_level) and one that means the same for any prior
(step_scale, sigma_start)."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch

from datasets.errors import HGMError
from sampling.langevin import UPDATE_RULES, nfe

INITS = ("uniform", "uniform_sym", "measurement", "bilinear", "malvar", "menon", "biharmonic", "harmonic", "telea")
TILE_PASS_SIDE = 1024                     # test.tile_batch null: tiles that make TILE_PASS_SIDE² pixels
TILE_PASS_PIXELS = TILE_PASS_SIDE ** 2    # per network pass, the memory of one tile of the default size
TILES_PER_TRAINING_CROP = 1.0  # test.tile_size auto: tiles of the prior's training crop (times this)
AUTO_TILE_FALLBACK = 1024      # ... or of this many pixels for a prior whose crop size is not recorded
CLASSICAL_INITS = ("bilinear", "malvar", "menon", "biharmonic", "harmonic", "telea")


@dataclass(frozen=True)
class SamplerSettings:
    """How one image is sampled (the test.* keys of the same names; test.progressive.weight is
    earlier_weight). Defaults are those of configs/anneal.yml; `from_config` validates.

    The step size and the first level come in two forms: the paper's (step_lr, start_level),
    whose meaning depends on the prior's noise levels, and one that means the same for any
    prior (step_scale: η_i = step_scale·σ_i²; sigma_start: the level nearest this σ).
    `for_levels` turns the second into the first for a given prior."""
    step_lr: float | None
    n_steps_each: int
    update: str = "noisy_copy"
    init: str = "uniform"
    start_level: int | None = 0
    denoise: bool = False
    temperature: float = 1.0
    earlier_weight: float = 1.0
    patch_size: int | None = None
    patch_stride: int = 256
    pad_mode: str = "circular"
    patch_batch: int | None = None
    step_scale: float | None = None
    sigma_start: float | None = None
    tile_size: int | str | None = None
    tile_overlap: int = 64
    tile_batch: int | None = None
    hole_sigma_start: float | None = None
    hole_distance: int = 4
    hole_n_steps_each: int | None = None
    hole_init: str | None = None
    hole_scale: int = 1
    noise_start_ratio: float | None = None
    noise_step_total: float | None = None
    n_samples: int = 1
    flips: bool = False
    sigma_stop: float | None = None  # not a test.* key: a first stage ends above the level nearest this σ
    step_total: float | None = None  # not a test.* key: noise_step_total once a measurement is noisy

    @classmethod
    def from_config(cls, tcfg: dict, sigmas: torch.Tensor | None = None) -> SamplerSettings:
        """The settings of a test.* section, checked; resolved for `sigmas` when given."""
        keys = [f.name for f in dataclasses.fields(cls) if f.name not in ("earlier_weight", "sigma_stop", "step_total")]
        settings = cls(**{k: tcfg[k] for k in keys}, earlier_weight=tcfg["progressive"]["weight"])
        settings.validate()
        return settings if sigmas is None else settings.for_levels(sigmas)

    def validate(self) -> None:
        """Values the config schema cannot check by type alone."""
        checks = [
            (self.update in UPDATE_RULES, f"test.update={self.update!r} ({' | '.join(UPDATE_RULES)})"),
            (self.init in INITS, f"test.init={self.init!r} ({' | '.join(INITS)})"),
            (self.hole_init is None or self.hole_init in INITS,
             f"test.hole_init={self.hole_init!r} ({' | '.join(INITS)}, or null: test.init)"),
            (self.step_lr is not None or self.step_scale is not None, "test.step_lr and test.step_scale "
             "(one must be set)"),
            (self.step_lr is None or self.step_lr > 0, f"test.step_lr={self.step_lr} (must be > 0)"),
            (self.step_scale is None or self.step_scale > 0, f"test.step_scale={self.step_scale} (must be > 0)"),
            (self.sigma_start is None or self.sigma_start > 0, f"test.sigma_start={self.sigma_start} (must be > 0)"),
            (self.temperature >= 0, f"test.temperature={self.temperature} (must be >= 0)"),
            (self.hole_sigma_start is None or self.hole_sigma_start > 0,
             f"test.hole_sigma_start={self.hole_sigma_start} (must be > 0, or null)"),
            (self.hole_distance >= 1, f"test.hole_distance={self.hole_distance} (must be >= 1)"),
            (self.hole_scale >= 1, f"test.hole_scale={self.hole_scale} (must be >= 1; 1: off)"),
            (self.hole_n_steps_each is None or self.hole_n_steps_each >= 1,
             f"test.hole_n_steps_each={self.hole_n_steps_each} (must be >= 1, or null: n_steps_each)"),
            (self.noise_start_ratio is None or self.noise_start_ratio > 0,
             f"test.noise_start_ratio={self.noise_start_ratio} (must be > 0, or null)"),
            (self.noise_step_total is None or self.noise_step_total > 0,
             f"test.noise_step_total={self.noise_step_total} (must be > 0, or null)"),
            (self.n_samples >= 1, f"test.n_samples={self.n_samples} (must be >= 1)"),
            (self.n_steps_each >= 1, f"test.n_steps_each={self.n_steps_each} (must be >= 1)"),
            (self.start_level is not None or self.sigma_start is not None, "test.start_level and "
             "test.sigma_start (one must be set)"),
            (self.start_level is None or self.start_level >= 0, f"test.start_level={self.start_level} (must be >= 0)"),
            (self.patch_size is None or self.patch_size >= 1,
             f"test.patch_size={self.patch_size} (must be >= 1, or null for whole images)"),
            (not self.patch_size or self.patch_size < 1 or 0 < self.patch_stride <= self.patch_size,
             f"test.patch_stride={self.patch_stride} (1..test.patch_size)"),
            (self.tile_size == "auto" or (not isinstance(self.tile_size, str) and (self.tile_size or 0) >= 0
                                          and self.tile_overlap >= 0),
             f"test.tile_size={self.tile_size!r} and test.tile_overlap={self.tile_overlap} (must be >= 0; "
             "tile_size 0 or null: never tile; auto: from the prior's training crops)"),
            (self.tile_batch is None or self.tile_batch >= 1, f"test.tile_batch={self.tile_batch} (must be >= 1, "
             f"or null: as many tiles as make {TILE_PASS_SIDE}×{TILE_PASS_SIDE} pixels)"),
        ]
        for ok, what in checks:
            if not ok:
                raise HGMError(f"bad setting {what}")

    def with_tiles_for(self, training_crop: int | None) -> SamplerSettings:
        """tile_size "auto" made a number for a prior trained on crops of `training_crop` pixels:
        TILES_PER_TRAINING_CROP times that (the network's instance norms then see statistics like
        those of its training crops), or AUTO_TILE_FALLBACK when the crop size is unknown."""
        if self.tile_size != "auto":
            return self
        size = AUTO_TILE_FALLBACK if not training_crop else round(TILES_PER_TRAINING_CROP * training_crop)
        return dataclasses.replace(self, tile_size=size)

    def tiles_per_pass(self) -> int:
        """How many tiles go through the network together: tile_batch, or as many as make
        TILE_PASS_PIXELS (the memory of one tile of the default size)."""
        if self.tile_batch:
            return self.tile_batch
        return max(1, TILE_PASS_PIXELS // max(1, self.tile_size or 0) ** 2)

    def for_levels(self, sigmas: torch.Tensor) -> SamplerSettings:
        """These settings in the paper's form (step_lr, start_level) for a prior with these noise levels."""
        n = len(sigmas)
        step_lr = self.step_lr if self.step_scale is None else self.step_scale * float(sigmas[-1]) ** 2
        start = self.start_level if self.sigma_start is None else nearest_level(sigmas, self.sigma_start)
        if not 0 <= start < n:
            raise HGMError(f"bad setting test.start_level={start} (this prior has {n} noise levels: 0..{n - 1})")
        if self.step_total is not None:  # the steps of the levels run add up to step_total (in units η_i/σ_i²)
            runs = max(1, self.stop_level(sigmas) - start) * self.n_steps_each
            step_lr = self.step_total / runs * float(sigmas[-1]) ** 2
        return dataclasses.replace(self, step_lr=step_lr, start_level=start, step_scale=None, sigma_start=None,
                                   step_total=None)

    def for_noise(self, noise_sigma: float | torch.Tensor) -> SamplerSettings:
        """These settings for a measurement with this noise ([0, 1] scale; one value or one per
        channel, the largest counts): with noise_start_ratio, sampling starts at the level nearest
        that multiple of the noise, since the sampler must begin above the noise it removes; with
        noise_step_total, the step scale is such that the levels run take that many units
        Σ η_i/σ_i² in all (levels × n_steps_each × step_scale): the more levels the noise asks for,
        the shorter each one."""
        noise = float(torch.as_tensor(noise_sigma).max())
        if noise <= 0:
            return self
        out = self
        if self.noise_start_ratio is not None:
            out = dataclasses.replace(out, sigma_start=self.noise_start_ratio * noise)
        if self.noise_step_total is not None:
            out = dataclasses.replace(out, step_total=self.noise_step_total)
        return out

    def hole_level(self, sigmas: torch.Tensor) -> int | None:
        """The level a coarse-to-fine start begins at (test.hole_sigma_start), or None without one.
        It must lie above the start level: the holes start noisier than the rest."""
        if self.hole_sigma_start is None:
            return None
        level, start = nearest_level(sigmas, self.hole_sigma_start), self.for_levels(sigmas).start_level
        if level >= start:
            raise HGMError(f"bad setting test.hole_sigma_start={self.hole_sigma_start:g}: the holes must start "
                           f"above the rest (this prior's level {level}, σ {float(sigmas[level]):.3g}, is not above "
                           f"the start level {start}, σ {float(sigmas[start]):.3g})")
        return level

    def stop_level(self, sigmas: torch.Tensor) -> int:
        """The level a run ends before: the one nearest sigma_stop, or past the last."""
        return len(sigmas) if self.sigma_stop is None else nearest_level(sigmas, self.sigma_stop)

    def evaluations(self, sigmas: torch.Tensor) -> int:
        """Network evaluations per image (or patch) with a prior of these noise levels (all n_samples)."""
        s = self.for_levels(sigmas)
        one = nfe(self.stop_level(sigmas) - s.start_level, s.n_steps_each, s.denoise)
        if self.hole_sigma_start is not None:
            one += (s.start_level - self.hole_level(sigmas)) * self.hole_steps_each()
        return self.n_samples * one

    def hole_stages(self, sigmas: torch.Tensor) -> tuple[SamplerSettings, SamplerSettings]:
        """A coarse-to-fine start with a second prior (test.hole_prior, made for large noise) as two
        runs, for a main prior with these noise levels: first the holes' insides from hole_sigma_start
        down to the start level, the pixels near the measurement held (`hole_level`), no final
        denoising; then the whole image from the start level, begun at the first run's result.
        Both in the σ form (step_scale, sigma_start), so each prior reads them on its own levels."""
        main = self.for_levels(sigmas)
        start = float(sigmas[main.start_level])
        common = dict(step_lr=None, step_scale=main.step_lr / float(sigmas[-1]) ** 2, start_level=None,
                      sigma_start=start, noise_start_ratio=None, noise_step_total=None, step_total=None)
        return (dataclasses.replace(self, **common, sigma_stop=start, denoise=False,
                                    n_steps_each=self.hole_steps_each()),
                dataclasses.replace(self, **common, hole_sigma_start=None))

    def hole_steps_each(self) -> int:
        """Steps per level while only the holes' insides move (hole_n_steps_each, or n_steps_each)."""
        return self.hole_n_steps_each or self.n_steps_each

    def with_schedule(self, step_lr: float | None, n_steps_each: int | None) -> SamplerSettings:
        """These settings with another step size (the paper's form) and step count (None keeps the current one)."""
        if step_lr:
            return dataclasses.replace(self, step_lr=step_lr, step_scale=None,
                                       n_steps_each=n_steps_each or self.n_steps_each)
        return dataclasses.replace(self, n_steps_each=n_steps_each or self.n_steps_each)


def nearest_level(sigmas: torch.Tensor, sigma: float) -> int:
    """The index of the noise level nearest `sigma` on a log scale (levels are geometric)."""
    logs = torch.log(torch.as_tensor(sigmas, dtype=torch.float64))
    return int(torch.argmin((logs - math.log(sigma)).abs()))


