"""Owns the restoration algorithm: a prior loaded from a checkpoint, the sampler settings, and `restore_image`
(one image: initial state, padding or patches, the sampler with data consistency in the lifted space).
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from tqdm import tqdm

from datasets.errors import HGMError
from datasets.operators import MaskedObservation
from datasets.transforms import Transform, transform_from_config
from models.ncsn import build_model
from runners.checkpoint import check_requested, load_checkpoint, prior_config, strip_module_prefix
from runners.patches import from_patches, pad_to_multiple, to_patches
from runners.sampler import UPDATE_RULES, annealed_langevin
from runners.tiles import TiledScore

INITS = ("uniform", "uniform_sym", "measurement", "bilinear", "malvar", "menon", "biharmonic", "telea")
CLASSICAL_INITS = ("bilinear", "malvar", "menon", "biharmonic", "telea")


@dataclass(frozen=True)
class PriorOptions:
    """How a prior runs: EMA weights if the checkpoint has them, bf16 autocast, torch.compile, channels-last."""
    use_ema: bool = True
    bf16: bool = False
    compile: bool = False
    channels_last: bool = False

    @classmethod
    def from_config(cls, tcfg: dict) -> PriorOptions:
        return cls(tcfg["use_ema"], tcfg["bf16"], tcfg["compile"], tcfg["channels_last"])


class Prior:
    """A trained score network with its transform and noise levels."""

    def __init__(self, ckpt: dict, cfg: dict, device: torch.device, options: PriorOptions = PriorOptions(),
                 transform: Transform | None = None):
        self.cfg = cfg
        self.transform = transform or transform_from_config(cfg)
        self.model, self.sigmas = build_model(cfg, self.transform.channels, device)
        self.model.eval()
        weights = ckpt["ema"] if (options.use_ema and "ema" in ckpt) else ckpt["model"]
        self.model.load_state_dict(strip_module_prefix({k: v.float() for k, v in weights.items()}), strict=True)
        self.device, self.bf16, self.channels_last = device, options.bf16, options.channels_last
        self.step = int(ckpt.get("step", -1))
        self.net = self.model
        if options.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        if options.compile:
            self.net = torch.compile(self.model, dynamic=False)

    def score(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            return self.net(x, labels).float()


def load_prior(path: str, device: torch.device, options: PriorOptions = PriorOptions(),
               requested: dict | None = None, base: dict | None = None) -> Prior:
    """The prior at `path`, built from the checkpoint's own config (architecture, transform, noise
    levels). `requested` (flat keys of checkpoint.MODEL_KEYS) are values the user set; one that
    disagrees with the checkpoint is refused, naming both. `base`: the run's config, whose other
    sections the prior's config keeps (default: the schema's)."""
    from runners.config import schema
    ckpt = load_checkpoint(path, map_location=device)
    cfg = prior_config(ckpt, path, base if base is not None else schema())
    check_requested(cfg, requested or {}, path)
    return Prior(ckpt, cfg, device, options)


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

    @classmethod
    def from_config(cls, tcfg: dict, sigmas: torch.Tensor | None = None) -> SamplerSettings:
        """The settings of a test.* section, checked; resolved for `sigmas` when given."""
        keys = [f.name for f in dataclasses.fields(cls) if f.name != "earlier_weight"]
        settings = cls(**{k: tcfg[k] for k in keys}, earlier_weight=tcfg["progressive"]["weight"])
        settings.validate()
        return settings if sigmas is None else settings.for_levels(sigmas)

    def validate(self) -> None:
        """Values the config schema cannot check by type alone."""
        checks = [
            (self.update in UPDATE_RULES, f"test.update={self.update!r} ({' | '.join(UPDATE_RULES)})"),
            (self.init in INITS, f"test.init={self.init!r} ({' | '.join(INITS)})"),
            (self.step_lr is not None or self.step_scale is not None, "test.step_lr and test.step_scale "
             "(one must be set)"),
            (self.step_lr is None or self.step_lr > 0, f"test.step_lr={self.step_lr} (must be > 0)"),
            (self.step_scale is None or self.step_scale > 0, f"test.step_scale={self.step_scale} (must be > 0)"),
            (self.sigma_start is None or self.sigma_start > 0, f"test.sigma_start={self.sigma_start} (must be > 0)"),
            (self.temperature >= 0, f"test.temperature={self.temperature} (must be >= 0)"),
            (self.n_steps_each >= 1, f"test.n_steps_each={self.n_steps_each} (must be >= 1)"),
            (self.start_level is not None or self.sigma_start is not None, "test.start_level and "
             "test.sigma_start (one must be set)"),
            (self.start_level is None or self.start_level >= 0, f"test.start_level={self.start_level} (must be >= 0)"),
            (self.patch_size is None or self.patch_size >= 1,
             f"test.patch_size={self.patch_size} (must be >= 1, or null for whole images)"),
            (not self.patch_size or self.patch_size < 1 or 0 < self.patch_stride <= self.patch_size,
             f"test.patch_stride={self.patch_stride} (1..test.patch_size)"),
        ]
        for ok, what in checks:
            if not ok:
                raise HGMError(f"bad setting {what}")

    def for_levels(self, sigmas: torch.Tensor) -> SamplerSettings:
        """These settings in the paper's form (step_lr, start_level) for a prior with these noise levels."""
        n = len(sigmas)
        step_lr = self.step_lr if self.step_scale is None else self.step_scale * float(sigmas[-1]) ** 2
        start = self.start_level if self.sigma_start is None else nearest_level(sigmas, self.sigma_start)
        if not 0 <= start < n:
            raise HGMError(f"bad setting test.start_level={start} (this prior has {n} noise levels: 0..{n - 1})")
        return dataclasses.replace(self, step_lr=step_lr, start_level=start, step_scale=None, sigma_start=None)

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
        from evaluation.baselines import run_baseline
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


def restore_image(prior: Prior, y: torch.Tensor, mask: torch.Tensor, settings: SamplerSettings,
                  earlier: torch.Tensor | None = None, progress: tqdm | None = None,
                  callback: Callable[[int, torch.Tensor, tuple[int, int] | None], None] | None = None,
                  stats: dict | None = None, noise_sigma: float | torch.Tensor = 0.0,
                  tile_size: int | None = None, tile_overlap: int = 64) -> torch.Tensor:
    """Restore one image (1×3×H×W measurement y, mask 1×3×H×W) with `prior`.

    Sizes the transform or the network cannot take are padded (the padding is
    unknown to the sampler) and cropped back; large images go through
    overlapping patches whose overlaps are averaged. `earlier` is an earlier
    estimate (1×3×H×W) to pull towards (progressive strategy); `progress` a tqdm
    bar; callback(step, x, patches) sees every lifted iterate: of the whole (padded)
    image with patches None, else of patches [first, last) of `patch_layout`'s
    order (`runners.patches.to_patches`); `stats`, a dict, gets "out_of_range": the
    fraction of unmeasured samples of the final iterate more than OUT_OF_RANGE_MARGIN outside
    [0, 1] before clipping (see `schedule_failed`). `noise_sigma`: the measurement's noise level
    on the [0, 1] scale, a number or one per colour channel (3 values). Returns 1×3×H×W in [0, 1]
    whose measured samples equal y exactly when noise_sigma is 0; otherwise every data-consistency
    step, the last included, weighs y against the iterate (`MaskedObservation.weigh`) and the
    measured samples are estimates, not the noisy values. `tile_size`: a whole image (no patches)
    with a side longer than this many pixels has its score evaluated in overlapping tiles of this
    size sharing `tile_overlap` pixels, blended into one score per step (runners/tiles.py), so the
    network's memory is that of one tile; the bar then counts tile evaluations.
    """
    t = prior.transform
    settings = settings.for_levels(prior.sigmas)
    h, w = y.shape[-2:]
    if not settings.patch_size:
        check_size(t, h, w, 2 * t.size_multiple)
    init = initial_image(settings.init, y, mask)
    stack = torch.cat([y, mask, init] + ([earlier] if earlier is not None else []), dim=1)
    tiles, layout = _tiles(stack, settings, 2 * t.size_multiple, t.name)  # the network halves the lifted size once
    ys, ms, inits = tiles[:, :3], tiles[:, 3:6], tiles[:, 6:9]
    earliers = tiles[:, 9:12] if earlier is not None else None
    if layout is None and tiles.shape[-2:] != (h, w):
        # padded samples are unknown to the sampler, whatever the pad copied
        ms = ms.clone()
        ms[..., h:, :] = 0
        ms[..., :, w:] = 0
    ys = ys * ms
    chunk = settings.patch_batch or (ys.shape[0] if prior.device.type == "cuda" else 1)
    score_fn, steps = prior.score, (len(prior.sigmas) - settings.start_level) * settings.n_steps_each
    if layout is None and tile_size and max(h, w) > tile_size:
        small = 2 * t.size_multiple
        ratio = t.forward(torch.zeros(1, 3, small, small)).shape[-1] / small  # lifted samples per pixel
        score_fn = TiledScore(prior.score, (int(ys.shape[-2] * ratio), int(ys.shape[-1] * ratio)),
                              max(2, int(tile_size * ratio) // 2 * 2), int(tile_overlap * ratio),
                              on_tile=None if progress is None else (lambda bar=progress: bar.update(1)))
        if progress is not None:  # one bar step per tile evaluation
            progress.total = len(score_fn) * (steps + int(settings.denoise))
            progress.refresh()
            progress = None  # the tiles move it, not the steps
    elif progress is not None:  # one bar step per sampler step of every chunk
        progress.total = -(-ys.shape[0] // chunk) * steps
        progress.refresh()
    sig = torch.as_tensor(noise_sigma, dtype=ys.dtype, device=ys.device).reshape(-1)
    noisy = bool((sig > 0).any())
    sig = sig.view(1, -1, 1, 1) if sig.numel() == 3 else sig.reshape(())
    outs = []
    for k in range(0, ys.shape[0], chunk):
        yk, op = ys[k:k + chunk], MaskedObservation(ms[k:k + chunk])
        on_step = _step_hook(progress, callback, None if layout is None else (k, k + yk.shape[0]))

        def project(v, op=op, yk=yk):
            return t.forward(op.project(t.inverse(v), yk))

        def weigh(v, eta, op=op, yk=yk):
            return t.forward(op.weigh(t.inverse(v), yk, sig, eta))

        xk = annealed_langevin(score_fn, t.forward(inits[k:k + chunk]), prior.sigmas, settings.step_lr,
                               settings.n_steps_each, update=settings.update, project=project,
                               earlier=None if earliers is None else t.forward(earliers[k:k + chunk]),
                               earlier_weight=settings.earlier_weight if earliers is not None else 1.0,
                               start_level=settings.start_level, denoise=settings.denoise,
                               temperature=settings.temperature, on_step=on_step,
                               consistency=weigh if noisy else None)
        outs.append(t.inverse(xk))
    out = torch.cat(outs, dim=0)
    out = from_patches(out, layout) if layout is not None else out[..., :h, :w]
    if stats is not None:
        stats["out_of_range"] = out_of_range_fraction(out, mask)
    if noisy:  # the sampler's last step weighed the measurement; reinserting it would put the noise back
        return out.clamp(0, 1)
    # clip, then enforce the measurement once more: overlap averaging is exact
    # for identical values, but this makes it a guarantee
    return MaskedObservation(mask).project(out.clamp(0, 1), y)
