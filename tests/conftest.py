"""Shared fixtures: tiny image folders and a runner for main.py as a subprocess.

Nothing here reads ../shared; every test builds its own data in tmp_path.
"""
import logging
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

# One core is busy with other work: keep in-process torch single-threaded too.
torch.set_num_threads(1)

IMAGE_H, IMAGE_W = 40, 48


def write_rgb_images(folder, n=4, size=(IMAGE_H, IMAGE_W), seed=0, ext="png"):
    """Write n random 8-bit RGB images (H×W) to `folder`; returns their uint8 arrays by path."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    out = {}
    for i in range(n):
        arr = rng.integers(0, 256, size=(size[0], size[1], 3), dtype=np.uint8)
        path = os.path.join(str(folder), f"img_{i:02d}.{ext}")
        Image.fromarray(arr).save(path)
        out[path] = arr
    return out


def train_tiny_prior(root, n_images=3, *sets):
    """Train a 3ch prior on tiny.yml for two steps (so it is a real checkpoint, with a checksum) on
    `n_images` random images in ROOT/train; returns (its checkpoint.pth, the training folder)."""
    import main as hgm_main
    write_rgb_images(os.path.join(root, "train"), n=n_images)
    run = os.path.join(root, "run")
    assert hgm_main.main(["--runner", "train_3ch_rgb", "--config", "tiny.yml", "--doc", "rgb", "--run", run,
                          "--set", f"data.path={os.path.join(root, 'train')}", *sets, "training.n_iters=2"]) == 0
    return os.path.join(run, "logs", "rgb", "checkpoint.pth"), os.path.join(root, "train")


@pytest.fixture
def image_folder(tmp_path):
    """A folder with four random 40×48 RGB PNGs."""
    folder = tmp_path / "images"
    write_rgb_images(folder, n=4)
    return str(folder)


@pytest.fixture(scope="session")
def shared_image_folder(tmp_path_factory):
    """Like image_folder, created once per session (tests must not modify it)."""
    folder = tmp_path_factory.mktemp("shared_images")
    write_rgb_images(folder, n=4, seed=1)
    return str(folder)


def subprocess_env():
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = "1"
    env["MKL_NUM_THREADS"] = "1"
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)  # a plain run, never a torchrun rank
    return env


def run_main_process(*args, timeout=180):
    """Run `python main.py ARGS` in the repo root; returns (returncode, stdout, stderr)."""
    proc = subprocess.run([sys.executable, "main.py", *map(str, args)], cwd=REPO, env=subprocess_env(),
                          capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stdout, proc.stderr


@pytest.fixture(scope="session")
def run_main():
    return run_main_process


@pytest.fixture
def hgm_log(caplog):
    """caplog wired straight to the 'hgm' logger (main.py may turn its propagation off)."""
    log = logging.getLogger("hgm")
    log.addHandler(caplog.handler)
    old = log.level
    log.setLevel(logging.DEBUG)
    try:
        yield caplog
    finally:
        log.removeHandler(caplog.handler)
        log.setLevel(old)
