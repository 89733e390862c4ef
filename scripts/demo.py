#!/usr/bin/env python
"""The main job on bundled defaults: demosaic and inpaint three sample images with the
recommended presets (configs/demosaic.yml, configs/inpaint.yml and the bundled prior they
name), next to the best classical method for each task (Menon 2007 demosaicking;
biharmonic inpainting of the `masks/text.png` mask).

    python scripts/demo.py                      # about three minutes on 2 CPU cores; writes demo_out/
    python scripts/demo.py --prior my.pth       # the same presets with any other prior

Writes, per task, the restore runner's folder (restored/, input/, metrics.csv, log.txt),
the classical method's folder, a labelled side-by-side picture per image in compare/
(input | classical | HGM | ground truth | HGM's error) and results.md with both tables.
`--size` and `--steps` only shrink the work (smaller crops, fewer steps per noise level);
the files and the code path are the ones above.
"""
import argparse
import os
import sys
import time

import numpy as np
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import main as hgm

hgm.configure_threads_environment()  # before torch loads: the demo restores in this process
from datasets.errors import HGMError
from datasets.files import FolderLock, check_output_location, move_aside
from datasets.image_files import read_image
from evaluation.report import error_map, write_panels
from scripts import make_table, run_baseline

# scikit-image's bundled sample images (public domain / CC0): (function, top, left) of a crop
CROPS = {"astronaut": ("astronaut", 0, 150), "chelsea": ("chelsea", 30, 110), "coffee": ("coffee", 60, 200)}
TEXT_MASK = os.path.join(ROOT, "masks", "text.png")
# task, preset, the classical method beside it
JOBS = [("demosaic", "demosaic.yml", "menon"), ("inpaint", "inpaint.yml", "biharmonic")]


def write_images(folder: str, size: int) -> str:
    import skimage.data
    os.makedirs(folder, exist_ok=True)
    for name, (fn, top, left) in CROPS.items():
        img = getattr(skimage.data, fn)()[top:top + 256, left:left + 256]
        pic = Image.fromarray(np.ascontiguousarray(img))
        if size != 256:
            pic = pic.resize((size, size), Image.BICUBIC)
        pic.save(os.path.join(folder, name + ".png"))
    return folder


def write_mask(path: str, size: int) -> str:
    """masks/text.png at the images' size (nearest neighbour, so it stays a 0/255 mask)."""
    mask = Image.open(TEXT_MASK).convert("L")
    if size != mask.width:
        mask = mask.resize((size, size), Image.NEAREST)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    mask.save(path)
    return path


def compare(task_dir: str, hgm_dir: str, base_dir: str, baseline: str, gt_dir: str) -> None:
    for stem in CROPS:
        gt = read_image(os.path.join(gt_dir, stem + ".png"))
        ours = read_image(os.path.join(hgm_dir, "restored", stem + ".png"))
        panels = [("input", read_image(os.path.join(hgm_dir, "input", stem + ".png"))),
                  (baseline, read_image(os.path.join(base_dir, "restored", stem + ".png"))),
                  ("HGM", ours), ("ground truth", gt), ("HGM error x5", error_map(ours, gt))]
        write_panels(os.path.join(task_dir, "compare", stem + ".png"), panels)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-o", "--out", default="demo_out", help="output folder (an earlier one is moved aside)")
    p.add_argument("--prior", default=None,
                   help="a prior to use instead of the bundled one (any transform, width and noise levels)")
    p.add_argument("--size", type=int, default=256, help="side of the sample images (default 256)")
    p.add_argument("--steps", type=int, default=None, help="steps per noise level (default: the presets')")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    a = p.parse_args(argv)
    if a.prior is not None and not os.path.isfile(a.prior):
        print(f"error: no prior at {a.prior}", file=sys.stderr)
        return 1
    if a.size < 16:
        print(f"error: --size {a.size} is too small (at least 16)", file=sys.stderr)
        return 1
    try:
        check_output_location(a.out, "-o", keep={"the prior": a.prior})
        with FolderLock(a.out, "demo folder"):  # a second demo into this folder is refused while this one runs
            return demo(a)
    except HGMError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


def demo(a: argparse.Namespace) -> int:
    if os.path.isdir(a.out) and os.listdir(a.out):
        print(f"moved the earlier {a.out} to {move_aside(a.out, 'old')}")
    gt = write_images(os.path.join(a.out, "images"), a.size)
    mask = write_mask(os.path.join(a.out, "masks", "text.png"), a.size)
    prior = os.path.relpath(a.prior, ROOT) if a.prior else "the presets' bundled prior"
    report = ["# hgm demo", "", f"Prior: {prior}; images: three {a.size}×{a.size} crops of scikit-image's "
              "sample images; metrics of the final output as written to PNG.", ""]
    for task, preset, baseline in JOBS:
        t0 = time.time()
        task_dir = os.path.join(a.out, task)
        hgm_dir, base_dir = os.path.join(task_dir, "hgm"), os.path.join(task_dir, baseline)
        mask_args = ["--mask", mask] if task == "inpaint" else []
        if run_baseline.main(["--method", baseline, "--task", task, "--data", gt, "-o", base_dir, *mask_args]):
            return 1
        sets = [f"test.data_path={gt}"] + ([f"test.mask={mask}"] if task == "inpaint" else [])
        sets += [f"test.checkpoint={a.prior}"] if a.prior else []
        sets += [f"test.n_steps_each={a.steps}"] if a.steps else []
        rc = hgm.main(["--runner", "restore", "--config", preset, "--test", "-o", hgm_dir,
                       *(["--quiet"] if a.quiet else []), "--set", *sets])
        if rc:
            return rc
        compare(task_dir, hgm_dir, base_dir, baseline, gt)
        report += [f"## {task} ({time.time() - t0:.0f} s, `configs/{preset}`)", "",
                   make_table.table([(baseline, base_dir), ("HGM", hgm_dir)]), "",
                   f"Side by side (input | {baseline} | HGM | ground truth | HGM's error): `{task}/compare/`", ""]
    with open(os.path.join(a.out, "results.md"), "w") as f:
        f.write("\n".join(report))
    print("\n".join(report))
    print(f"\nwritten to {os.path.abspath(a.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
