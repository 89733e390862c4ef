"""Owns the restoration of one image with a prior (HGM, Alg. 1): the initial state, padding,
patches or tiles, and the annealed sampler with data consistency in the lifted space.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
import torch.nn.functional as F
from tqdm import tqdm

from datasets.errors import HGMError
from datasets.transforms import Transform
from sampling.consistency import MaskedObservation, in_lifted_space, is_noisy
from sampling.flips import FlippedScore
from sampling.langevin import HeldStart, annealed_langevin
from sampling.patches import from_patches, pad_to_multiple, to_patches
from sampling.prior import Prior
from sampling.settings import CLASSICAL_INITS, INITS, SamplerSettings
from sampling.tiles import TiledScore


def initial_image(kind: str, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The sampler's starting point, on the whole image (1×3×H×W).

    uniform is the paper's U(0,1) (uniform_sym: U(-1,1)); measurement keeps the
    known values; bilinear/malvar/menon (demosaicking) and biharmonic (inpainting)
    start from a classical estimate, which with test.start_level > 0 lets the
    sampler skip the highest noise levels (fewer evaluations)."""
    if kind == "uniform":
        return torch.rand_like(y)
    if kind == "uniform_sym":
        return torch.rand_like(y) * 2 - 1
    if kind == "measurement":
        return torch.where(mask > 0.5, y, torch.rand_like(y))
    if kind in CLASSICAL_INITS:
        from classical import run_baseline
        return run_baseline(kind, y[0].cpu(), mask[0].cpu())[None].to(y.device, y.dtype)
    raise HGMError(f"unknown test.init {kind!r} ({' | '.join(INITS)})")


def _tiles(stack: torch.Tensor, settings: SamplerSettings, multiple: int, name: str) -> tuple[torch.Tensor, tuple]:
    """The image stack as patches (with their layout) or padded to `multiple` (layout None)."""
    patch = settings.patch_size
    if not patch or max(stack.shape[-2:]) <= patch:  # an image that fits one patch is processed whole
        return pad_to_multiple(stack, multiple, settings.pad_mode)[0], None
    if patch % multiple:
        raise HGMError(f"test.patch_size={patch} must be divisible by {multiple} for {name}")
    return to_patches(stack, patch, settings.patch_stride, settings.pad_mode)


def near_measurement(mask: torch.Tensor, distance: int) -> torch.Tensor:
    """B×1×H×W: 1 at pixels within `distance` (chessboard) of a measured pixel (any channel measured)."""
    measured = mask.amax(dim=1, keepdim=True)
    return torch.nn.functional.max_pool2d(measured, 2 * distance + 1, stride=1, padding=distance)


def has_holes(mask: torch.Tensor, distance: int) -> bool:
    """Whether any pixel lies farther than `distance` from every measured pixel (random masks,
    mosaics and thin strokes have none: a coarse-to-fine start would hold every pixel)."""
    return bool((near_measurement(mask, distance) < 0.5).any())


def held_consistency(mask: torch.Tensor, y: torch.Tensor, init: torch.Tensor, distance: int, transform: Transform,
                     noise_sigma: float | torch.Tensor):
    """Data consistency for the first levels of a coarse-to-fine start: the measurement kept as
    usual, and the unmeasured pixels near it held at the classical start `init`, so only the
    insides of holes (farther than `distance` from every measured pixel) anneal from high noise."""
    near = near_measurement(mask, distance).expand_as(mask)
    held_mask = torch.maximum(mask, near)
    held_y = torch.where(mask > 0.5, y, init) * held_mask
    return in_lifted_space(MaskedObservation(held_mask), held_y, transform, noise_sigma)


OUT_OF_RANGE_MARGIN = 0.1
FAILED_FRACTION = 0.05  # more unmeasured samples than this far outside [0, 1]: the schedule failed


def schedule_failed(stats: dict) -> bool:
    """Whether restore_image's `stats` say the sampler did not converge to an image (a trained prior
    with a working schedule ends with almost every sample inside [0, 1]; step_lr too large does not)."""
    return stats.get("out_of_range", 0.0) > FAILED_FRACTION


def out_of_range_fraction(out: torch.Tensor, mask: torch.Tensor) -> float:
    """How far the unknown samples strayed from [0, 1] before clipping (a failed schedule strays far)."""
    unknown = out[(mask < 0.5).expand_as(out)]
    far = ((unknown < -OUT_OF_RANGE_MARGIN) | (unknown > 1 + OUT_OF_RANGE_MARGIN)).float()
    return float(far.mean()) if unknown.numel() else 0.0


def check_size(t: Transform, h: int, w: int, multiple: int) -> None:
    """Refuse an image too small for the network: padded to `multiple`, its lifted size must be at least 4×4."""
    padded = [-(-n // multiple) * multiple for n in (h, w)]
    lifted = t.forward(torch.zeros(1, 3, *padded)).shape[-2:]
    if min(lifted) < 4:
        need = 4 * padded[0] // lifted[0] - multiple + 1
        raise HGMError(f"an image of {h}×{w} is too small to restore with the {t.name} transform "
                       f"(at least {need}×{need} pixels)")


def _step_hook(progress: tqdm | None, callback: Callable | None, part: tuple[int, int] | None) -> Callable | None:
    """The sampler's on_step for one chunk: the caller's callback (told which patches) and the bar."""
    if progress is None and callback is None:
        return None

    def on_step(step: int, x: torch.Tensor) -> None:
        if callback is not None:
            callback(step, x, part)
        if progress is not None:
            progress.update(1)
    return on_step


def tiled_score(prior: Prior, settings: SamplerSettings, padded: tuple[int, int],
                progress: tqdm | None) -> TiledScore:
    """The prior's score on an image of `padded` pixels, evaluated in overlapping tiles of
    settings.tile_size pixels sharing settings.tile_overlap (in lifted samples: the transform's
    ratio), settings.tiles_per_pass() at a time; `progress` moves once per tile evaluation."""
    small = prior.size_multiple
    ratio = prior.transform.forward(torch.zeros(1, 3, small, small)).shape[-1] / small  # lifted samples per pixel
    return TiledScore(prior.score, (int(padded[0] * ratio), int(padded[1] * ratio)),
                      max(2, int(settings.tile_size * ratio) // 2 * 2), int(settings.tile_overlap * ratio),
                      on_tile=None if progress is None else (lambda bar=progress: bar.update(1)),
                      batch=settings.tiles_per_pass())


def check_hole_prior(settings: SamplerSettings, hole_prior: Prior | None) -> None:
    """A hole prior samples the levels from hole_sigma_start on: without that σ it has nothing to do."""
    if hole_prior is not None and settings.hole_sigma_start is None:
        raise HGMError("test.hole_prior needs test.hole_sigma_start (the σ the hole prior starts at)")


def evaluations(prior: Prior, settings: SamplerSettings, hole_prior: Prior | None = None) -> int:
    """Network evaluations per image (or patch) of `restore_image` with these priors (noise-free start);
    an error if the hole prior cannot be used with these settings. With hole_scale > 1 those of the
    reduced image (each on 1/hole_scale² of the pixels) are counted as evaluations like the others."""
    check_hole_prior(settings, hole_prior)
    if settings.hole_scale > 1:
        return (evaluations(prior, dataclasses.replace(settings, hole_scale=1), hole_prior)
                + without_holes(settings).evaluations(prior.sigmas))
    if hole_prior is None:
        return settings.evaluations(prior.sigmas)
    coarse, fine = settings.hole_stages(prior.sigmas)
    return coarse.evaluations(hole_prior.sigmas) + fine.evaluations(prior.sigmas)


def without_holes(settings: SamplerSettings) -> SamplerSettings:
    """These settings with nothing done for holes (no hole stage, hole start or reduced run): those of a
    mask without holes, and of the full-resolution run after a reduced one (the main prior alone from the
    start level)."""
    return dataclasses.replace(settings, hole_sigma_start=None, hole_init=None, hole_scale=1)


def for_mask(settings: SamplerSettings, hole_prior: Prior | None,
             mask: torch.Tensor) -> tuple[SamplerSettings, Prior | None]:
    """The settings and hole prior for this mask: without holes farther than hole_distance from the
    measurement there is nothing to start early (no hole stage, no hole prior); with them the image
    starts from hole_init when one is set."""
    if settings.hole_sigma_start is None and settings.hole_init is None and settings.hole_scale == 1:
        return settings, hole_prior
    if not has_holes(mask, settings.hole_distance):
        return without_holes(settings), None
    if settings.hole_init is not None:
        settings = dataclasses.replace(settings, init=settings.hole_init, hole_init=None)
    return settings, hole_prior


def reduced(y: torch.Tensor, mask: torch.Tensor, scale: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The measurement and mask at 1/scale of the resolution: a pixel of the reduced image is measured
    (per channel) where all of its scale×scale pixels are, with their mean as its value (partial blocks
    at an edge average the pixels they have)."""
    small_mask = -F.max_pool2d(-mask, scale, ceil_mode=True)
    return F.avg_pool2d(y * mask, scale, ceil_mode=True) * small_mask, small_mask


def reduced_start(prior: Prior, y: torch.Tensor, mask: torch.Tensor, settings: SamplerSettings,
                  progress: tqdm | None, stats: dict, noise_sigma: float | torch.Tensor,
                  hole_prior: Prior | None) -> torch.Tensor | None:
    """hole_scale: the image restored at 1/hole_scale of its resolution with these settings (its holes
    by the hole prior), enlarged (bilinear) into the unmeasured pixels, as the start of the run at full
    resolution. At a lower resolution the hole is smaller next to what the network sees, so the structure
    around it reaches farther in. None (no reduced run) for an image too small to reduce, or whose
    reduced image would have no measured pixel."""
    scale = settings.hole_scale
    h, w = y.shape[-2:]
    small_y, small_mask = reduced(y, mask, scale)
    if not small_mask.any():
        return None
    if not settings.patch_size:
        try:
            check_size(prior.transform, *small_y.shape[-2:], prior.size_multiple)
        except HGMError:
            return None
    small = restore_image(prior, small_y, small_mask, dataclasses.replace(settings, hole_scale=1),
                          progress=progress, stats=stats, noise_sigma=noise_sigma / scale, hole_prior=hole_prior)
    big = F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)
    return torch.where(mask > 0.5, y, big)


def final_image(out: torch.Tensor, y: torch.Tensor, mask: torch.Tensor,
                noise_sigma: float | torch.Tensor) -> torch.Tensor:
    """The restored image as returned: clipped to [0, 1] and, for a noiseless measurement, equal to it
    on every measured sample (patch overlaps and the mean of samples are exact for identical values,
    but this makes it a guarantee). A noisy measurement is not put back: the sampler's last step
    weighed it, and reinserting it would put the noise back."""
    out = out.clamp(0, 1)
    return out if is_noisy(noise_sigma) else MaskedObservation(mask).project(out, y)


def mean_of_samples(prior: Prior, y: torch.Tensor, mask: torch.Tensor, settings: SamplerSettings,
                    earlier: torch.Tensor | None, progress: tqdm | None, callback: Callable | None,
                    stats: dict | None, noise_sigma: float | torch.Tensor, hole_prior: Prior | None,
                    init: torch.Tensor | None) -> torch.Tensor:
    """The mean of settings.n_samples restorations of one image, each with its own noise (`restore_image`'s
    arguments): an estimate of the posterior mean, the estimate that minimises the expected squared error,
    where one sample carries the posterior's whole spread in what the measurement leaves open. A classical
    start is computed once; the callback sees each sample's steps in turn. `stats`: the evaluations of
    all samples, and the largest out-of-range fraction of any."""
    one = dataclasses.replace(settings, n_samples=1)
    if init is None and one.init in CLASSICAL_INITS and one.hole_scale == 1:  # a reduced start is sampled each time
        init = initial_image(one.init, y, mask)
    total, nfe, strays = torch.zeros_like(y), 0, 0.0
    for _ in range(settings.n_samples):
        part: dict = {}
        total += restore_image(prior, y, mask, one, earlier, progress, callback, part, noise_sigma, hole_prior, init)
        nfe, strays = nfe + part["nfe"], max(strays, part["out_of_range"])
    if stats is not None:
        stats.update(nfe=nfe, out_of_range=strays)
    return final_image(total / settings.n_samples, y, mask, noise_sigma)


def restore_image(prior: Prior, y: torch.Tensor, mask: torch.Tensor, settings: SamplerSettings,
                  earlier: torch.Tensor | None = None, progress: tqdm | None = None,
                  callback: Callable[[int, torch.Tensor, tuple[int, int] | None], None] | None = None,
                  stats: dict | None = None, noise_sigma: float | torch.Tensor = 0.0,
                  hole_prior: Prior | None = None, init: torch.Tensor | None = None) -> torch.Tensor:
    """Restore one image (1×3×H×W measurement y, mask 1×3×H×W) with `prior`.

    Sizes the transform or the network cannot take are padded (the padding is
    unknown to the sampler) and cropped back; large images go through
    overlapping patches whose overlaps are averaged. `earlier` is an earlier
    estimate (1×3×H×W) to pull towards (progressive strategy); `progress` a tqdm
    bar; callback(step, x, patches) sees every lifted iterate: of the whole (padded)
    image with patches None, else of patches [first, last) of `patch_layout`'s
    order (`sampling.patches.to_patches`); `stats`, a dict, gets "out_of_range": the
    fraction of unmeasured samples of the final iterate more than OUT_OF_RANGE_MARGIN outside
    [0, 1] before clipping (see `schedule_failed`), and "nfe": the network evaluations it took
    (per image; patches and tiles each take that many). `noise_sigma`: the measurement's noise level
    on the [0, 1] scale, a number or one per colour channel (3 values). Returns 1×3×H×W in [0, 1]
    whose measured samples equal y exactly when noise_sigma is 0; otherwise every data-consistency
    step, the last included, weighs y against the iterate (`MaskedObservation.weigh`) and the
    measured samples are estimates, not the noisy values. `settings.tile_size`: a whole image (no patches)
    with a side longer than this many pixels has its score evaluated in overlapping tiles of this
    size sharing `settings.tile_overlap` pixels, blended into one score per step (sampling/tiles.py), so the
    network's memory is that of one tile; the bar then counts tile evaluations.
    `settings.noise_start_ratio`: with a noisy measurement, the first level follows its noise
    (`SamplerSettings.for_noise`). `settings.hole_sigma_start`: a coarse-to-fine start
    (`held_consistency`): sampling begins at that level, the pixels near the measurement held at the
    initial estimate until the start level; a mask without such holes (`has_holes`) starts at the start
    level as without the option. `hole_prior`: those first levels are sampled with this
    prior instead (one trained for large noise; `SamplerSettings.hole_stages`), its result the start
    of `prior`'s levels. `settings.hole_init`: the classical start of an image with such holes (`for_mask`).
    `settings.hole_scale` > 1: an image with such holes is restored at 1/hole_scale of its resolution first
    (`reduced_start`), and the main prior alone restores it from the start level, begun there.
    `init`: the initial estimate (1×3×H×W) instead of `settings.init`'s (not with hole_scale > 1).
    `settings.n_samples` > 1: the mean of that many restorations (`mean_of_samples`).
    """
    settings = settings.for_noise(noise_sigma)
    check_hole_prior(settings, hole_prior)
    settings, hole_prior = for_mask(settings, hole_prior, mask)
    if settings.n_samples > 1:
        return mean_of_samples(prior, y, mask, settings, earlier, progress, callback, stats, noise_sigma,
                               hole_prior, init)
    if settings.hole_scale > 1:
        reduced_stats: dict = {}
        start = reduced_start(prior, y, mask, settings, progress, reduced_stats, noise_sigma, hole_prior)
        if start is not None:
            out = restore_image(prior, y, mask, without_holes(settings), earlier, progress, callback, stats,
                                noise_sigma, init=start)
            if stats is not None:
                stats["nfe"] += reduced_stats["nfe"]
            return out
        settings = dataclasses.replace(settings, hole_scale=1)
    if hole_prior is not None:
        coarse, fine = settings.hole_stages(prior.sigmas)
        first: dict = {}
        init = restore_image(hole_prior, y, mask, coarse, progress=progress, stats=first, noise_sigma=noise_sigma,
                             init=init)
        out = restore_image(prior, y, mask, fine, earlier, progress, callback, stats, noise_sigma, init=init)
        if stats is not None:
            stats["nfe"] += first["nfe"]
        return out
    t = prior.transform
    evaluations = settings.evaluations(prior.sigmas)
    hole_level = settings.hole_level(prior.sigmas)
    settings = settings.for_levels(prior.sigmas).with_tiles_for(prior.training_crop)
    release = settings.start_level
    if hole_level is not None:  # coarse-to-fine: the holes' insides from hole_level, the rest held until release
        settings = dataclasses.replace(settings, start_level=hole_level)
    h, w = y.shape[-2:]
    if not settings.patch_size:
        check_size(t, h, w, prior.size_multiple)
    stop = settings.stop_level(prior.sigmas)
    init = initial_image(settings.init, y, mask) if init is None else init
    stack = torch.cat([y, mask, init] + ([earlier] if earlier is not None else []), dim=1)
    tiles, layout = _tiles(stack, settings, prior.size_multiple, t.name)
    ys, ms, inits = tiles[:, :3], tiles[:, 3:6], tiles[:, 6:9]
    earliers = tiles[:, 9:12] if earlier is not None else None
    if layout is None and tiles.shape[-2:] != (h, w):
        # padded samples are unknown to the sampler, whatever the pad copied
        ms = ms.clone()
        ms[..., h:, :] = 0
        ms[..., :, w:] = 0
    ys = ys * ms
    chunk = settings.patch_batch or (ys.shape[0] if prior.device.type == "cuda" else 1)
    steps = evaluations - int(settings.denoise)  # sampler steps per chunk (n_samples is 1 here)
    if layout is None and settings.tile_size and max(h, w) > settings.tile_size:
        score_fn = tiled_score(prior, settings, ys.shape[-2:], progress)
        total, step_bar = len(score_fn) * (steps + int(settings.denoise)), None  # the tiles move the bar
    else:
        score_fn, total, step_bar = prior.score, -(-ys.shape[0] // chunk) * steps, progress
    if settings.flips:
        score_fn = FlippedScore(score_fn, t)
    if progress is not None:  # an earlier stage may have moved the bar
        progress.total = progress.n + total
        progress.refresh()
    outs = []
    for k in range(0, ys.shape[0], chunk):
        yk, mk = ys[k:k + chunk], ms[k:k + chunk]
        on_step = _step_hook(step_bar, callback, None if layout is None else (k, k + yk.shape[0]))
        consistency = in_lifted_space(MaskedObservation(mk), yk, t, noise_sigma)
        held = None if hole_level is None else HeldStart(
            release, held_consistency(mk, yk, inits[k:k + chunk], settings.hole_distance, t, noise_sigma),
            settings.hole_steps_each())
        earlier_k = None if earliers is None else t.forward(earliers[k:k + chunk])
        xk = annealed_langevin(score_fn, t.forward(inits[k:k + chunk]), prior.sigmas, settings,
                               consistency=consistency, earlier=earlier_k, held=held, stop_level=stop,
                               on_step=on_step)
        outs.append(t.inverse(xk))
    out = torch.cat(outs, dim=0)
    out = from_patches(out, layout) if layout is not None else out[..., :h, :w]
    if stats is not None:
        stats["out_of_range"] = out_of_range_fraction(out, mask)
        stats["nfe"] = evaluations
    return final_image(out, y, mask, noise_sigma)
