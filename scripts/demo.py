#!/usr/bin/env python
"""The main job on bundled defaults: demosaic and inpaint three bundled images
with the recommended presets (configs/demosaic.yml, configs/inpaint.yml: the
bundled 12-channel prior), next to the best classical method for each task
(Menon 2007 demosaicking; biharmonic inpainting of the `masks/text.png` mask).

    python scripts/demo.py            # writes demo_out/ (an earlier one is moved aside)

Writes, per task, the restore runner's folder (restored/, input/, metrics.csv),
a side-by-side image per picture in compare/ (input | classical | HGM | ground
truth) and results.md with the tables.
"""
import argparse
import os
import sys
import time

import numpy as np
import torch
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import main as hgm  # noqa: E402
from datasets.errors import HGMError  # noqa: E402
from datasets.files import FolderLock, check_output_location, move_aside  # noqa: E402
from datasets.folder import read_image, save_image  # noqa: E402
from scripts import make_table, run_baseline  # noqa: E402

# scikit-image's bundled sample images (public domain / CC0), cropped to 256×256
CROPS = {"astronaut": ("astronaut", 0, 150), "chelsea": ("chelsea", 30, 110), "coffee": ("coffee", 60, 200)}
PRIOR = os.path.join(ROOT, "pretrained", "cpu_12ch.pth")


def write_images(folder, size=256):
    import skimage.data
    os.makedirs(folder, exist_ok=True)
    for name, (fn, top, left) in CROPS.items():
        img = getattr(skimage.data, fn)()[top:top + size, left:left + size]
        Image.fromarray(np.ascontiguousarray(img)).save(os.path.join(folder, name + ".png"))
    return folder


def compare(out_dir, columns, gt_dir):
    os.makedirs(os.path.join(out_dir, "compare"), exist_ok=True)
    for stem in CROPS:
        tiles = [read_image(os.path.join(c, stem + ".png")) for c in columns] + \
                [read_image(os.path.join(gt_dir, stem + ".png"))]
        gap = torch.ones(3, tiles[0].shape[1], 4)
        row = torch.cat([t for tile in tiles for t in (tile, gap)][:-1], dim=2)
        save_image(row, os.path.join(out_dir, "compare", stem + ".png"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-o", "--out", default="demo_out")
    p.add_argument("--prior", default=PRIOR, help="a 12-channel (pixel_scale) prior")
    a = p.parse_args(argv)
    if not os.path.isfile(a.prior):
        print(f"error: no prior at {a.prior}", file=sys.stderr)
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
    gt = write_images(os.path.join(a.out, "images"))
    report = ["# hgm demo", "", f"Prior: `{os.path.relpath(a.prior, ROOT)}`; images: three 256×256 crops of "
              "scikit-image's sample images; metrics of the final output as written to PNG.", ""]
    text_mask = os.path.join(ROOT, "masks", "text.png")
    # the recommended presets (they name the bundled prior), next to the best classical method for each task
    jobs = [("demosaic", "demosaic.yml", "menon", [], []),
            ("inpaint", "inpaint.yml", "biharmonic", ["--mask", text_mask], [f"test.mask={text_mask}"])]
    for task, config, baseline, extra, sets in jobs:
        t0 = time.time()
        hgm_dir, base_dir = os.path.join(a.out, task, "hgm_12ch"), os.path.join(a.out, task, baseline)
        if run_baseline.main(["--method", baseline, "--task", task, "--data", gt, "-o", base_dir, *extra]):
            return 1
        rc = hgm.main(["--runner", "restore", "--config", config, "--doc", "demo", "--test", "-o", hgm_dir,
                       "--set", f"test.data_path={gt}", f"test.checkpoint={a.prior}", *sets])
        if rc:
            return rc
        compare(os.path.join(a.out, task), [os.path.join(hgm_dir, "input"), os.path.join(base_dir, "restored"),
                                            os.path.join(hgm_dir, "restored")], gt)
        report += [f"## {task} ({time.time() - t0:.0f} s)", "",
                   make_table.table([(baseline, base_dir), ("HGM 12ch", hgm_dir)]), "",
                   f"Side by side (input | {baseline} | HGM | ground truth): `{task}/compare/`", ""]
    with open(os.path.join(a.out, "results.md"), "w") as f:
        f.write("\n".join(report))
    print("\n".join(report))
    print(f"\nwritten to {os.path.abspath(a.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
