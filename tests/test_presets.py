"""The recommended presets (configs/demosaic.yml, configs/inpaint.yml) run as the README
says, from any folder, on images of any size, with the bundled prior they name."""
import csv
import math
import os

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import REPO, run_main_process
from runners.checkpoint import resolve_checkpoint_path
from runners.config import load_config


def smooth_images(folder, sizes):
    """Natural-ish test images: one smooth luminance field shared by the channels, plus a tint."""
    os.makedirs(folder, exist_ok=True)
    for n, (h, w) in enumerate(sizes):
        i, j = np.mgrid[0:h, 0:w] / 16.0
        lum = 0.5 + 0.2 * np.sin(1.3 * i + 0.7 * j + n) + 0.1 * np.cos(0.9 * j - 0.4 * i)
        img = np.stack([0.9 * lum + 0.05, lum, 0.8 * lum + 0.1], -1)
        Image.fromarray(np.round(img * 255).astype(np.uint8)).save(os.path.join(folder, f"img{n}_{h}x{w}.png"))
    return folder


def read_rows(out):
    with open(os.path.join(out, "metrics.csv")) as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("name", ["demosaic.yml", "inpaint.yml"])
def test_presets_name_a_bundled_prior_that_exists(name):
    cfg = load_config(name)
    assert cfg["test"]["checkpoint"].startswith("pretrained/")
    assert os.path.isfile(os.path.join(REPO, cfg["test"]["checkpoint"]))


def test_bundled_paths_resolve_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_checkpoint_path("pretrained/cpu_12ch.pth") == os.path.join(REPO, "pretrained", "cpu_12ch.pth")
    assert resolve_checkpoint_path("pretrained/none.pth") == "pretrained/none.pth"  # the error names the path given
    (tmp_path / "pretrained").mkdir()
    (tmp_path / "pretrained" / "cpu_12ch.pth").write_bytes(b"x")
    assert resolve_checkpoint_path("pretrained/cpu_12ch.pth") == "pretrained/cpu_12ch.pth"  # the user's own first


def test_demosaic_preset_from_another_folder_on_small_images(tmp_path):
    data = smooth_images(str(tmp_path / "imgs"), [(37, 45), (9, 13), (64, 48)])
    out = str(tmp_path / "out")
    rc, _, err = run_main_process("--runner", "restore", "--config", "demosaic.yml", "--doc", "any", "--test",
                                  "-o", out, "--set", f"test.data_path={data}", "--device", "cpu", timeout=900)
    assert rc == 0, err
    rows = read_rows(out)
    assert [r["status"] for r in rows[:-1]] == ["ok"] * 3
    for r in rows[:-1]:
        h, w = (int(v) for v in r["image"].rsplit("_", 1)[1].split("x"))
        restored = np.asarray(Image.open(os.path.join(out, "restored", r["image"] + ".png")))
        assert restored.shape == (h, w, 3)
        assert int(r["nfe"]) == 31
        assert math.isfinite(float(r["psnr"])) and float(r["psnr"]) > 30, r  # smooth images are easy


def test_inpaint_preset_with_a_mask_file(tmp_path):
    data = smooth_images(str(tmp_path / "imgs"), [(40, 56)])
    mask = np.full((40, 56), 255, np.uint8)
    mask[12:28, 20:36] = 0
    Image.fromarray(mask).save(tmp_path / "hole.png")
    out = str(tmp_path / "out")
    rc, _, err = run_main_process("--runner", "restore", "--config", "inpaint.yml", "--test", "-o", out,
                                  "--set", f"test.data_path={data}", f"test.mask={tmp_path / 'hole.png'}",
                                  "--device", "cpu", timeout=900)
    assert rc == 0, err
    stem = read_rows(out)[0]["image"]
    x = torch.from_numpy(np.asarray(Image.open(os.path.join(out, "restored", stem + ".png"))).copy())
    gt = torch.from_numpy(np.asarray(Image.open(os.path.join(data, stem + ".png"))).copy())
    known = torch.from_numpy(mask > 0)
    assert torch.equal(x[known], gt[known])  # measured pixels exactly as measured
    assert float(read_rows(out)[0]["psnr"]) > 25
