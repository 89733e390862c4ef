"""Pins restoration's behaviour: fixed priors, images and seed give the metrics.csv
values and restored pixels recorded in tests/data/restore_regression.{json,npz}.

The priors are not trained: each is a CondRefineNetDilated built right after
torch.manual_seed(k) and saved as a checkpoint dict, so the reference does not
depend on training. Three runs through main.py cover demosaicking (12ch, odd
sizes, a classical start at a later level, the final denoising step),
inpainting (6ch, patches, the langevin update) and progressive inpainting
(12ch after a 3ch stage, with a PSNR trace).

Restored PNGs must match bit for bit and metrics to 1e-6 (metrics.csv rounds
to four decimals). The reference was made on one CPU thread (conftest sets
it); on another machine or PyTorch build float results may differ in the last
bits and flip a pixel's rounding: regenerate it there with

    OMP_NUM_THREADS=1 python tests/test_restore_regression.py

(only when a behaviour change is intended, and say so in the commit).
"""
import csv
import json
import os
import sys

import numpy as np
import torch
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
if REPO not in sys.path:
    sys.path.insert(0, REPO)

import main as hgm_main
from models.ncsn import CondRefineNetDilated
from runners.config import load_config

REFERENCE = os.path.join(HERE, "data", "restore_regression")
PRIORS = {"rgb": ("identity", 3, 11), "copy": ("channel_copy", 6, 12), "pool": ("pixel_scale", 12, 13)}
RUNS = {
    "demosaic_12ch": ["--runner", "Test_12ch_demoscaicking_pool", "--doc", "pool",
                      "--set", "test.init=malvar", "test.start_level=3", "test.denoise=true", "test.n_steps_each=2",
                      "test.step_lr=1e-5", "test.border=3"],
    "inpaint_6ch": ["--runner", "Test_6ch_inpainting_rgbrgb_256", "--doc", "copy",
                    "--set", "test.patch_size=16", "test.patch_stride=12", "test.update=langevin",
                    "test.missing_rate=0.5", "test.n_steps_each=2", "test.step_lr=1e-5", "test.border=3"],
    "inpaint_12ch_p": ["--runner", "Test_12ch_inpainting_pool_p", "--doc", "pool",
                       "--set", "test.progressive.prev_doc=rgb", "test.trace_freq=5", "test.n_steps_each=1",
                       "test.step_lr=1e-5", "test.border=3"],
}


def write_images(folder):
    """Two smooth colour images with noise, of odd and even size."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate([(21, 27), (24, 28)]):
        yy, xx = np.mgrid[:h, :w]
        img = np.stack([np.sin(xx / (3 + i)), np.cos(yy / 4), np.sin((xx + yy) / 5)], -1) * 0.4 + 0.5
        img += rng.normal(0, 0.03, img.shape)
        Image.fromarray((np.clip(img, 0, 1) * 255).round().astype(np.uint8)).save(os.path.join(folder, f"im{i}.png"))
    return folder


def write_priors(run):
    """Untrained tiny priors, one per transform, at <run>/logs/<doc>/checkpoint.pth."""
    for doc, (transform, channels, seed) in PRIORS.items():
        cfg = load_config("tiny.yml", {"data.transform": transform})
        m = cfg["model"]
        torch.manual_seed(seed)
        model = CondRefineNetDilated(channels, m["ngf"], m["num_classes"])
        os.makedirs(os.path.join(run, "logs", doc))
        torch.save({"model": model.state_dict(), "config": cfg, "step": 0},
                   os.path.join(run, "logs", doc, "checkpoint.pth"))


def produce(root):
    """Run the three restorations under `root`; returns ({run: metrics rows}, {run/image: pixels})."""
    torch.set_num_threads(1)
    data, run = write_images(os.path.join(root, "images")), os.path.join(root, "run")
    write_priors(run)
    metrics, pixels = {}, {}
    for name, argv in RUNS.items():
        out = os.path.join(root, "out", name)
        i = argv.index("--set")
        rc = hgm_main.main([*argv[:i], "--config", "tiny.yml", "--run", run, "--test", "-o", out, "--seed", "1234",
                            "--set", f"test.data_path={data}", *argv[i + 1:]])
        assert rc == 0, name
        with open(os.path.join(out, "metrics.csv")) as f:
            rows = list(csv.DictReader(f))
        metrics[name] = [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # time is not behaviour
        for stem in ("im0", "im1"):
            pixels[f"{name}/{stem}"] = np.asarray(Image.open(os.path.join(out, "restored", stem + ".png")))
    return metrics, pixels


def same_value(a, b):
    try:
        return abs(float(a) - float(b)) <= 1e-6
    except ValueError:
        return a == b


def test_restoration_reproduces_the_recorded_outputs(tmp_path):
    with open(REFERENCE + ".json") as f:
        want_metrics = json.load(f)
    want_pixels = np.load(REFERENCE + ".npz")
    metrics, pixels = produce(str(tmp_path))
    assert sorted(pixels) == sorted(want_pixels.files)
    for key, arr in pixels.items():
        diff = np.abs(arr.astype(int) - want_pixels[key].astype(int))
        assert diff.max() == 0, f"{key}: {int((diff > 0).sum())} samples differ, by up to {diff.max()}"
    assert metrics.keys() == want_metrics.keys()
    for name, rows in metrics.items():
        want = want_metrics[name]
        assert [sorted(r) for r in rows] == [sorted(r) for r in want], name
        for got_row, want_row in zip(rows, want):
            bad = {k: (got_row[k], want_row[k]) for k in want_row if not same_value(got_row[k], want_row[k])}
            assert not bad, f"{name} {want_row['image']}: {bad}"


if __name__ == "__main__":  # regenerate the reference (see the module docstring)
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        m, p = produce(tmp)
    with open(REFERENCE + ".json", "w") as f:
        json.dump(m, f, indent=1)
        f.write("\n")
    np.savez_compressed(REFERENCE + ".npz", **p)
    print(f"wrote {REFERENCE}.json and .npz ({len(p)} images)")
