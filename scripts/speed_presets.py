#!/usr/bin/env python
"""How fast a preset runs with each numerical setting, and what each costs in PSNR, side by side.

    python scripts/speed_presets.py --config demosaic.yml --data $DATA/cbsd432 --n 4 --crop 256

Restores the same held-out images (those the prior held out from its training folder, as
scripts/tune.py, `held_out_of`; never evaluation images) with the preset in fp32 eager and in each other mode
(bf16 autocast, channels-last, torch.compile, bf16 + compile), the same seed for every mode, so
a PSNR difference is the numerics' alone. Compilation is timed apart (a warm-up run per image
shape); the time per image is that of the run after it. Prints one table and, last,
`fastest_within=<mode> speedup=<x>`: the fastest mode whose PSNR is within --tolerance dB of fp32
on every image.
"""
import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import main as hgm

hgm.configure_threads_environment()  # before torch loads
import torch

from datasets.errors import HGMError
from datasets.image_files import read_image
from datasets.inputs import centre_crop
from datasets.masks import bayer_mask, mask_for_image
from evaluation.metrics import psnr
from models.checkpoint import resolve_checkpoint_path
from runners.config import load_config
from sampling import PriorOptions, SamplerSettings, load_prior, restore_image
from scripts.cli import one_line_errors
from scripts.tune import held_out_of, prior_split

MODES = {"fp32": PriorOptions(), "bf16": PriorOptions(bf16=True),
         "channels_last": PriorOptions(channels_last=True), "compile": PriorOptions(compile=True),
         "bf16+compile": PriorOptions(bf16=True, compile=True)}


def inputs(tcfg: dict, paths: list[str], crop: int) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """(name, ground truth, mask) of each image, 1×3×H×W, masked as the preset's task asks."""
    out = []
    for i, path in enumerate(paths):
        gt = centre_crop(read_image(path), crop)
        stem = os.path.splitext(os.path.basename(path))[0]
        h, w = gt.shape[-2:]
        mask = (bayer_mask(tcfg["pattern"], h, w) if tcfg["task"] == "demosaic"
                else mask_for_image(tcfg, stem, h, w, i))
        out.append((stem, gt[None], mask[None]))
    return out


def run_mode(options: PriorOptions, prior_path: str, settings: SamplerSettings, images: list, seed: int) -> dict:
    """Seconds per image (after a warm-up on each shape) and PSNR per image for one mode."""
    prior = load_prior(prior_path, torch.device("cpu"), options)
    settings = settings.for_levels(prior.sigmas)
    warm, seen = 0.0, set()
    seconds, scores = [], []
    for _, gt, mask in images:
        with torch.inference_mode():
            if gt.shape not in seen:  # compilation (and first-call costs) happen here, timed apart
                seen.add(gt.shape)
                t0 = time.perf_counter()
                restore_image(prior, gt * mask, mask, settings.with_schedule(None, 1))
                warm += time.perf_counter() - t0
            torch.manual_seed(seed)
            t0 = time.perf_counter()
            out = restore_image(prior, gt * mask, mask, settings)
            seconds.append(time.perf_counter() - t0)
        scores.append(float(psnr((out[0] * 255).round() / 255, gt[0])))  # as the written 8-bit PNG
    return {"seconds": sum(seconds) / len(seconds), "psnr": scores, "warm": warm}


@one_line_errors
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="demosaic.yml", help="the preset (its test.* settings and prior)")
    p.add_argument("--prior", default=None, help="default: the preset's test.checkpoint")
    p.add_argument("--data", required=True, help="the folder the prior was trained on (its held-out images are used)")
    p.add_argument("--n", type=int, default=4, help="held-out images")
    p.add_argument("--crop", type=int, default=256, help="centre crop of each image (0: whole)")
    p.add_argument("--modes", default=",".join(MODES), help=f"comma-separated, from {', '.join(MODES)}")
    p.add_argument("--tolerance", type=float, default=0.02, help="largest PSNR change (dB) a mode may cost")
    p.add_argument("--steps", type=int, default=0, help="steps per level instead of the preset's (a quick check)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    modes = [m.strip() for m in a.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown or "fp32" not in modes:
        raise HGMError(f"--modes takes {', '.join(MODES)} and must include fp32 (got {a.modes!r})")
    cfg = load_config(a.config)
    prior_path = resolve_checkpoint_path(a.prior or cfg["test"]["checkpoint"] or "")
    if not os.path.isfile(prior_path):
        raise HGMError(f"no prior at {prior_path!r}: pass --prior")
    paths = held_out_of(prior_split(prior_path), a.data)[:a.n]
    if not paths:
        raise HGMError(f"the prior holds out no images of {a.data}")
    settings = SamplerSettings.from_config(cfg["test"])
    if a.steps:
        settings = settings.with_schedule(None, a.steps)
    images = inputs(cfg["test"], paths, a.crop or None)
    h, w = images[0][1].shape[-2:]
    print(f"{a.config}, prior {os.path.basename(prior_path)}, {len(images)} held-out images ({h}×{w} first), "
          f"{torch.get_num_threads()} threads, CPU capability {torch.backends.cpu.get_cpu_capability()}")
    results = {m: run_mode(MODES[m], prior_path, settings, images, a.seed) for m in modes}
    base = results["fp32"]
    print("| mode | s / image | × vs fp32 | mean PSNR | Δ mean (dB) | largest |Δ| on one image | warm-up s |")
    print("|---|---|---|---|---|---|---|")
    best, best_speed = "fp32", 1.0
    for m in modes:
        r = results[m]
        diffs = [x - y for x, y in zip(r["psnr"], base["psnr"])]
        speed = base["seconds"] / r["seconds"]
        mean = sum(r["psnr"]) / len(r["psnr"])
        worst = max(abs(v) for v in diffs)
        print(f"| {m} | {r['seconds']:.2f} | {speed:.2f} | {mean:.2f} | {sum(diffs) / len(diffs):+.3f} | "
              f"{worst:.3f} | {r['warm']:.0f} |")
        if worst <= a.tolerance and speed > best_speed:
            best, best_speed = m, speed
    print(f"fastest_within={best} speedup={best_speed:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
