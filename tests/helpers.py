"""Test helpers: untrained tiny priors (no training) and small smooth images."""
import os

import numpy as np
import torch
from PIL import Image

from models.ncsn import CondRefineNetDilated
from runners.config import load_config

CHANNELS = {"identity": 3, "channel_copy": 6, "pixel_scale": 12}


def write_prior(path, transform="pixel_scale", seed=0, sets=None):
    """An untrained tiny.yml prior (a checkpoint dict) at `path`, with `sets` (flat keys) changed; returns the path."""
    cfg = load_config("tiny.yml", {"data.transform": transform, **(sets or {})})
    m = cfg["model"]
    torch.manual_seed(seed)
    model = CondRefineNetDilated(CHANNELS[transform], m["ngf"], m["num_classes"])
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    torch.save({"model": model.state_dict(), "config": cfg, "step": 0}, path)
    return str(path)


def smooth_image(h, w, i=0, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    img = np.stack([np.sin(xx / (3 + i)), np.cos(yy / 4), np.sin((xx + yy) / 5)], -1) * 0.4 + 0.5
    img += rng.normal(0, 0.02, img.shape)
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)


def write_images(folder, names=("im0", "im1"), size=(24, 28)):
    os.makedirs(folder, exist_ok=True)
    for i, name in enumerate(names):
        Image.fromarray(smooth_image(*size, i=i, seed=i)).save(os.path.join(folder, f"{name}.png"))
    return str(folder)
