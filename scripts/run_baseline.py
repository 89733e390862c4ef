#!/usr/bin/env python
"""Restore a folder with a classical method, on exactly the inputs HGM sees.

Degradation, masks (datasets/inputs.py), output layout and metrics.csv
(evaluation/report.py) are those of the restore runner, so tables compare like
with like:

    python scripts/run_baseline.py --method malvar --task demosaic --data $DATA/kodak24 -o out/malvar
    python scripts/run_baseline.py --method menon+nlm --noise_sigma 10 --task demosaic --data $DATA/kodak24 -o out/nlm10
    python scripts/run_baseline.py --method biharmonic --task inpaint --mask masks/text.png \
        --image_size 256 --data $DATA/kodak24 -o out/biharmonic_text
"""
import argparse
import logging
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from classical import BASELINES, NOISY_DEMOSAIC_BASELINES, NOISY_INPAINT_BASELINES, run_baseline
from datasets.errors import HGMError
from datasets.files import FolderLock, check_output_location, prepare_output
from datasets.image_files import save_image
from datasets.inputs import load_inputs
from evaluation.report import image_metrics_of_file, write_comparison, write_metrics
from runners.config import dump_config, load_config, parse_set
from scripts.cli import one_line_errors


@one_line_errors
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--method", required=True,
                   choices=[*BASELINES, *NOISY_DEMOSAIC_BASELINES, *NOISY_INPAINT_BASELINES],
                   help="demosaicking: bilinear, malvar, menon (Menon 2007); inpainting: biharmonic, harmonic, "
                        "telea, ns (OpenCV's Telea and Navier-Stokes: pip install opencv-python-headless); noisy "
                        "demosaicking: menon+nlm, menon+wavelet, menon+bm3d and the reverse orders; noisy "
                        "inpainting: biharmonic+nlm, telea+nlm, ... (holes filled, then denoised)")
    p.add_argument("--noise_sigma", type=float, default=0.0,
                   help="Gaussian noise added to the measurement, 0–255 units (seeded by each image's name, "
                        "as test.noise_sigma of the restore runner)")
    p.add_argument("--task", required=True, choices=["demosaic", "inpaint"])
    p.add_argument("--data", required=True, help="ground-truth images")
    p.add_argument("-o", "--out", required=True)
    p.add_argument("--mask", default="random", help="inpainting mask: random | box | PNG file | folder")
    p.add_argument("--missing_rate", type=float, default=0.7)
    p.add_argument("--image_size", type=int, default=None, help="centre crop")
    p.add_argument("--pattern", default="rggb")
    p.add_argument("--border", type=int, default=10)
    p.add_argument("--overwrite", action="store_true",
                   help="an output folder that holds results is moved aside (renamed, not deleted)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    sets = [f"test.task={args.task}", f"test.data_path={args.data}", f"test.mask={args.mask}",
            f"test.missing_rate={args.missing_rate}", f"test.pattern={args.pattern}", f"test.border={args.border}",
            f"test.noise_sigma={args.noise_sigma}"]
    if args.image_size:
        sets.append(f"test.image_size={args.image_size}")
    try:
        cfg = load_config("anneal.yml", parse_set(sets))
        mask = args.mask if args.mask not in ("random", "box") else None
        check_output_location(args.out, "-o", data={"the data folder --data": args.data}, keep={"the mask": mask})
        items = load_inputs(cfg["test"])
        with FolderLock(args.out, "output folder"):
            prepare_output(args.out, args.overwrite)
            dump_config(cfg, os.path.join(args.out, "config.yml"))
            restore_all(args, items)
    except HGMError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


def restore_all(args: argparse.Namespace, items: list) -> None:
    """Restore and score every input; metrics.csv marks the images an interrupted run did not reach."""
    rows, stems = [], [item.stem for item in items]
    try:
        for stem, gt, y, mask in items:
            save_image(y, os.path.join(args.out, "input", stem + ".png"))
            t0 = time.time()
            result = run_baseline(args.method, y, mask, args.pattern, noise_sigma=args.noise_sigma / 255)
            path = os.path.join(args.out, "restored", stem + ".png")
            save_image(result, path)
            write_comparison(args.out, stem, y, result, gt)
            row = {"image": stem, "nfe": 0, "seconds": round(time.time() - t0, 3), "status": "ok"}
            row.update(image_metrics_of_file(path, gt, args.border))
            rows.append(row)
            logging.info("%s: PSNR %.2f dB", stem, row["psnr"])
    finally:
        write_metrics(args.out, rows, True, pending=stems[len(rows):])


if __name__ == "__main__":
    sys.exit(main())
