"""hgm's Python API for notebooks and other programs: load a prior, restore an image, score it.

    import hgm_api
    prior = hgm_api.load_prior("cpu_12ch_64")                    # a bundled prior, or a checkpoint path
    out = hgm_api.demosaic(prior, image, pattern="rggb")         # HxWx3 (mosaicked here) or an HxW raw mosaic
    out = hgm_api.inpaint(prior, image, mask)                    # mask HxW: 1/True known, 0/False missing
    hgm_api.metrics(out, ground_truth)                           # {"psnr": dB on 0-255, "ssim": colour SSIM}

Images are NumPy arrays or torch tensors: H×W×3 or 3×H×W (an H×W mosaic, a batch N×...), uint8
(0..255), uint16 (0..65535) or float in [0, 1]; other ranges (0..255 floats, 12-bit data in uint16)
need value_range=(black, white) and are refused without it (datasets/arrays.py states the contract).
Results come back in the same kind: container, dtype, range and layout. Everything runs
under torch.inference_mode. Import it from the clone's root (or put the clone on PYTHONPATH): it
uses the clone's own packages (`datasets`, `models`, `sampling`, `classical`, `runners`), which are not
installed anywhere.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import sys
from dataclasses import dataclass

import torch

ROOT = os.path.dirname(os.path.abspath(__file__))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def _check_own_packages() -> None:
    """The clone's `datasets`/`models` must not be shadowed by installed packages of those names."""
    import datasets
    import models
    for mod in (datasets, models):
        where = os.path.dirname(os.path.abspath(getattr(mod, "__file__", "") or ""))
        if os.path.dirname(where) != ROOT:
            raise ImportError(f"hgm_api: `import {mod.__name__}` found {where}, not the clone's folder "
                              f"{os.path.join(ROOT, mod.__name__)}; start Python in {ROOT} or put it first "
                              f"on sys.path")


_check_own_packages()

from datasets.arrays import from_unit, to_mask, to_unit
from datasets.errors import HGMError
from datasets.masks import bayer_mask
from datasets.noise import noise_level
from evaluation.metrics import psnr as _psnr
from evaluation.metrics import ssim as _ssim
from models.checkpoint import resolve_checkpoint_path
from runners.config import load_config
from sampling import Prior, PriorOptions, SamplerSettings, restore_image
from sampling import load_prior as _load_prior
from sampling.prior import resolve_bf16

__all__ = ["BUNDLED", "HGMError", "LoadedPrior", "demosaic", "inpaint", "load_prior", "metrics", "restore"]

PRETRAINED = os.path.join(ROOT, "pretrained")
BUNDLED = ("cpu_12ch_64", "cpu_6ch", "cpu_3ch")
# the presets every prior restores with (they take the model and noise levels from the prior)
PRESETS = {"demosaic": "demosaic.yml", "inpaint": "inpaint.yml"}


@dataclass
class LoadedPrior:
    """A prior ready to restore with: the network, its config, and the presets its tasks use."""
    prior: Prior
    config: dict
    name: str
    presets: dict  # task -> config file whose test.* settings are the defaults

    @property
    def channels(self) -> int:
        return self.prior.transform.channels


def load_prior(name_or_path: str = "cpu_12ch_64", device: str | torch.device = "cpu",
               bf16: bool | str = "auto") -> LoadedPrior:
    """A bundled prior by name (cpu_12ch_64, the recommended one; cpu_6ch, cpu_3ch) or any
    checkpoint or exported prior by path. Whichever way it is named, it restores with the
    recommended presets (configs/demosaic.yml, configs/inpaint.yml). `bf16`: autocast, or "auto"
    (as the presets: where the device computes in bf16 natively)."""
    bundled = name_or_path in BUNDLED
    path = os.path.join(PRETRAINED, name_or_path + ".pth") if bundled else name_or_path
    if not os.path.isfile(resolve_checkpoint_path(path)):
        raise HGMError(f"no prior {name_or_path!r}: neither a bundled name ({', '.join(BUNDLED)}) nor a file")
    device = torch.device(device)
    prior = _load_prior(path, device, PriorOptions(use_ema=True, bf16=resolve_bf16(bf16, device)))
    return LoadedPrior(prior, prior.cfg, os.path.splitext(os.path.basename(path))[0], dict(PRESETS))


def _test_config(p: LoadedPrior, task: str, config: str | None, sets: dict) -> dict:
    return load_config(config or p.presets[task], {f"test.{k}": v for k, v in sets.items()})["test"]


def _settings(p: LoadedPrior, task: str, config: str | None, sets: dict) -> SamplerSettings:
    return SamplerSettings.from_config(_test_config(p, task, config, sets), p.prior.sigmas)


@functools.lru_cache(maxsize=4)
def _hole_prior(path: str, device: torch.device, bf16: bool) -> Prior:
    return _load_prior(path, device, PriorOptions(use_ema=True, bf16=bf16))


def restore(p: LoadedPrior, image, task: str, *, mask=None, pattern: str = "rggb", config: str | None = None,
            seed: int = 0, value_range=None, **sets):
    """Restore `image` for `task` ('demosaic' or 'inpaint') with prior `p`; returns the same kind.

    `image`: see the module's input contract (uint8, uint16, float in [0, 1], or any range given as
    value_range=(black, white); H×W×3, 3×H×W, an H×W mosaic, or a batch N×...). demosaic: a colour
    image is mosaicked with `pattern` here (a simulation); a one-channel image is taken as the raw
    mosaic. inpaint: `mask` is H×W (or H×W×3, or N×H×W for a batch), nonzero/True where a value is
    known; it must leave something missing. `config` names a config whose test.* settings to use
    (default: the prior's preset); keyword arguments override single test.* keys (e.g.
    n_steps_each=10, step_lr=1e-5; noise_sigma=10 or "auto" for a noisy measurement, 0–255 units, whose
    measured samples are then estimates). Noiseless, the result equals the input on every measured sample. `seed`
    makes the sampler's noise repeatable (each image of a batch gets the same seed).
    """
    x, kind = to_unit(image, value_range)
    n, c, h, w = x.shape
    if task == "demosaic":
        m = bayer_mask(pattern, h, w)[None].expand(n, 3, h, w)
        y = x.expand(n, 3, h, w) * m  # a raw mosaic gives back a colour image
    elif task == "inpaint":
        if mask is None:
            raise HGMError("inpaint needs a mask (H×W, 1/True where the value is known)")
        if c != 3:
            raise HGMError("inpaint needs a colour image (H×W×3 or 3×H×W)")
        m = to_mask(mask, n, h, w)[:, None].expand(n, 3, h, w)
        y = x * m
    else:
        raise HGMError(f"unknown task {task!r} (demosaic | inpaint)")
    tcfg = _test_config(p, task, config, {"task": task, **sets})
    settings = SamplerSettings.from_config(tcfg, p.prior.sigmas)
    dev = p.prior.device
    # a preset's prior for the first levels of a coarse-to-fine start, read once per path
    hole_prior = _hole_prior(tcfg["hole_prior"], dev, p.prior.bf16) if tcfg["hole_prior"] else None
    outs = []
    for i in range(n):
        noise = noise_level(tcfg["noise_sigma"], y[i], m[i])
        with torch.random.fork_rng(devices=[dev.index or 0] if dev.type == "cuda" else []), torch.inference_mode():
            torch.manual_seed(seed)
            outs.append(restore_image(p.prior, y[i:i + 1].to(dev), m[i:i + 1].to(dev), settings,
                                      noise_sigma=noise, hole_prior=hole_prior).float().cpu())
    return from_unit(torch.cat(outs).clone(), kind)  # a clone: an ordinary tensor, not an inference one


def demosaic(p: LoadedPrior, image, pattern: str = "rggb", **kwargs):
    """restore(p, image, 'demosaic', pattern=pattern, ...)."""
    return restore(p, image, "demosaic", pattern=pattern, **kwargs)


def inpaint(p: LoadedPrior, image, mask, **kwargs):
    """restore(p, image, 'inpaint', mask=mask, ...)."""
    return restore(p, image, "inpaint", mask=mask, **kwargs)


def metrics(restored, ground_truth, border: int = 0, value_range=None) -> dict[str, float]:
    """PSNR (dB, 0–255 scale, all three channels) and colour SSIM (data range 1) of `restored`
    against `ground_truth` (one image each, under the input contract; `value_range` applies to both),
    optionally without a border. The CLI scores the 8-bit PNG as written; pass uint8 arrays for the
    same numbers."""
    a, _ = to_unit(restored, value_range, "restored image")
    b, _ = to_unit(ground_truth, value_range, "ground truth")
    if a.shape[0] != 1 or b.shape[0] != 1:
        raise HGMError(f"metrics scores one image at a time, got a batch of {max(a.shape[0], b.shape[0])}")
    a, b = a[0], b[0]
    if a.shape != b.shape:
        raise HGMError(f"shapes differ: {tuple(a.shape)} and {tuple(b.shape)}")
    return {"psnr": float(_psnr(a, b, border=border)), "ssim": float(_ssim(a, b, border=border))}


def settings_of(p: LoadedPrior, task: str, config: str | None = None, **sets) -> SamplerSettings:
    """The sampler settings `restore` would use (to inspect NFE, step size, ...)."""
    return dataclasses.replace(_settings(p, task, config, {"task": task, **sets}))
