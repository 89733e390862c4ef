#!/usr/bin/env python
"""Tiled restoration at growing sizes: peak memory, seconds per megapixel, and the PSNR of tiled
against whole-image restoration where both are run.

    OMP_NUM_THREADS=1 python scripts/benchmark_tiles.py                      # 500², 1000², 2000², 4000×3000
    OMP_NUM_THREADS=1 python scripts/benchmark_tiles.py --sizes 256x256,512x512 --tile 256
    python scripts/benchmark_tiles.py --sizes 4000x3000 --tile auto --set test.n_steps_each=1   # minutes, not hours

Each size runs in its own process (demosaicking with --config, its prior and schedule), so its
peak resident memory (ru_maxrss) is its own. The image is --image (mirrored to the size) or a
synthetic one (smooth colour gradients, edges and fine stripes). Whole-image restoration is also run
up to --whole_max pixels, and the difference of the two PSNRs (against the image) is printed.
--set changes the config (a shorter schedule measures memory and time per evaluation of a large
image in minutes; seconds per megapixel are also printed per network evaluation).
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import replace

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import numpy as np
import torch

from datasets.errors import HGMError
from runners.config import parse_set
from scripts.cli import one_line_errors


def synthetic(h: int, w: int) -> torch.Tensor:
    yy, xx = np.mgrid[:h, :w].astype(np.float64)
    img = np.stack([0.5 + 0.3 * np.sin(xx / 37 + yy / 53), 0.5 + 0.3 * np.cos(yy / 41),
                    0.5 + 0.2 * np.sin((xx - yy) / 29)], 0)
    img += 0.15 * (((xx // 48 + yy // 48) % 2) - 0.5)  # edges
    img += 0.05 * np.sin(xx * 1.3)  # fine stripes
    return torch.from_numpy(np.clip(img, 0, 1)).float()


def image_of_size(path: str | None, h: int, w: int) -> torch.Tensor:
    if path is None:
        return synthetic(h, w)
    from datasets.image_files import read_image
    x = read_image(path).numpy()
    x = np.pad(x, ((0, 0), (0, max(0, h - x.shape[1])), (0, max(0, w - x.shape[2]))), mode="symmetric")
    return torch.from_numpy(np.ascontiguousarray(x[:, :h, :w]))


def child(config: str, image: str | None, h: int, w: int, tile: int | str, overlap: int,
          overrides: dict | None = None) -> dict:
    """One restoration in this process; returns its time, peak memory and PSNR."""
    from datasets.masks import bayer_mask
    from evaluation.metrics import psnr
    from models.checkpoint import resolve_checkpoint_path
    from runners.config import load_config
    from sampling import SamplerSettings, load_prior, restore_image
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    cfg = load_config(config, overrides)
    prior = load_prior(resolve_checkpoint_path(cfg["test"]["checkpoint"]), torch.device("cpu"))
    settings = replace(SamplerSettings.from_config(cfg["test"], prior.sigmas), tile_size=tile, tile_overlap=overlap)
    gt = image_of_size(image, h, w)[None]
    mask = bayer_mask("rggb", h, w)[None]
    torch.manual_seed(0)
    t0 = time.time()
    stats: dict = {}
    with torch.inference_mode():
        out = restore_image(prior, gt * mask, mask, settings, stats=stats)
    seconds = time.time() - t0
    return {"seconds": seconds, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "psnr": psnr(out[0], gt[0]), "nfe": stats["nfe"],
            "tile": settings.with_tiles_for(prior.training_crop).tile_size if tile else 0}


def tile_size(text: str) -> int | str:
    """--tile: a number of pixels, or auto."""
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a number of pixels or auto, got {text!r}") from None


def parse_sizes(text: str) -> list[tuple[int, int]]:
    sizes = []
    for item in text.split(","):
        try:
            w, h = (int(v) for v in item.lower().split("x"))
        except ValueError:
            raise HGMError(f"--sizes takes WxH,WxH,..., got {item!r}") from None
        sizes.append((w, h))
    return sizes


@one_line_errors
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="500x500,1000x1000,2000x2000,4000x3000", help="WxH,WxH,...")
    p.add_argument("--tile", type=tile_size, default=1024, help="test.tile_size (pixels per side, or auto: the "
                   "prior's training crop)")
    p.add_argument("--overlap", type=int, default=64, help="test.tile_overlap")
    p.add_argument("--whole_max", type=int, default=1_000_000, help="also restore whole images up to this many pixels")
    p.add_argument("--config", default="demosaic.yml")
    p.add_argument("--image", default=None, help="an image to mirror to each size (default: a synthetic one)")
    p.add_argument("--set", dest="overrides", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="config values, e.g. test.n_steps_each=1")
    p.add_argument("--child", nargs=3, metavar=("H", "W", "TILE"), help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    overrides = parse_set(a.overrides)
    if a.child:
        h, w, tile = a.child
        print(json.dumps(child(a.config, a.image, int(h), int(w), tile_size(tile), a.overlap, overrides)))
        return 0
    rows = ["| size | megapixels | tiles of | NFE | peak memory (MB) | s / megapixel | s / megapixel / NFE "
            "| PSNR tiled | PSNR whole | tiled − whole |", "|---|---|---|---|---|---|---|---|---|---|"]
    print(rows[0], rows[1], sep="\n", flush=True)
    for w, h in parse_sizes(a.sizes):
        runs = {}
        for name, tile in (("tiled", a.tile), ("whole", 0)):
            if name == "whole" and h * w > a.whole_max:
                continue
            cmd = [sys.executable, os.path.abspath(__file__), "--config", a.config, "--overlap", str(a.overlap),
                   "--child", str(h), str(w), str(tile)] + (["--image", a.image] if a.image else []) + (
                   ["--set", *a.overrides] if a.overrides else [])
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode:
                raise HGMError(f"{w}×{h} {name}: {proc.stderr.strip().splitlines()[-1:]}")
            runs[name] = json.loads(proc.stdout.strip().splitlines()[-1])
        t, mp = runs["tiled"], h * w / 1e6
        whole = runs.get("whole")
        row = (f"| {w}×{h} | {mp:.2f} | {t['tile']} | {t['nfe']} | {t['peak_mb']:.0f} | {t['seconds'] / mp:.1f} | "
               f"{t['seconds'] / mp / t['nfe']:.2f} | {t['psnr']:.2f} | "
               + (f"{whole['psnr']:.2f} | {t['psnr'] - whole['psnr']:+.3f} |" if whole else "– | – |"))
        rows.append(row)
        print(row, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
