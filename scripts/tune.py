#!/usr/bin/env python
"""Tune restoration settings on images the prior held out from training
(never on evaluation images): a grid over any `test.*` keys.

    python scripts/tune.py --runner restore --config demosaic.yml --prior pretrained/cpu_12ch_64.pth \
        --set data.path=$DATA/cbsd432 --grid test.step_scale=0.1,0.2,0.4 --grid test.temperature=0.5,1 \
        -o tune_out/demosaic

The held-out files are those the prior's training run held out for its validation loss
(`data.image_size`, `data.val_images` of the prior's own config, seed 0) from the folder
`--set data.path=DIR` names (exported priors keep no path).
Prints a table sorted by mean PSNR and writes it to OUT/tune.md. Only grid points whose every
image was restored are ranked; a rerun redoes the points that did not finish (Ctrl-C, a kill) and
keeps the finished ones. The first Ctrl-C stops the whole tuning.
"""
import argparse
import itertools
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import main as hgm

hgm.configure_threads_environment()  # before torch loads: it restores in this process
from datasets.errors import HGMError
from datasets.files import FolderLock, check_output_location, write_text
from datasets.image_files import read_image, save_image
from datasets.inputs import centre_crop
from datasets.training_data import held_out_paths
from evaluation.report import read_metrics, run_complete
from models.checkpoint import load_checkpoint
from runners.config import load_config, parse_set, schema
from scripts.cli import one_line_errors


@one_line_errors
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runner", required=True)
    p.add_argument("--config", required=True)
    p.add_argument("--prior", required=True, help="checkpoint or exported prior")
    p.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2,...")
    p.add_argument("--set", dest="overrides", nargs="+", action="extend", default=[], metavar="KEY=VALUE")
    p.add_argument("--n", type=int, default=4, help="held-out images to use")
    p.add_argument("--crop", type=int, default=128, help="centre crop of each held-out image")
    p.add_argument("--seed", type=int, default=None, help="the restorations' random seed (default: main.py's)")
    p.add_argument("-o", "--out", required=True)
    a = p.parse_args(argv)
    for g in a.grid:
        if "=" not in g or not g.split("=", 1)[1]:
            raise HGMError(f"--grid takes KEY=V1,V2,..., got {g!r}")
    overrides = parse_set(a.overrides)
    load_config(a.config, overrides)  # a bad config or key fails here, before any image is written
    d = prior_split(a.prior)
    d["path"] = overrides.get("data.path") or d.get("path")
    if not d["path"]:
        raise HGMError("data.path is not set: tuning uses the images the prior held out from its training "
                       "folder; pass --set data.path=DIR (the folder the prior was trained on)")
    check_output_location(a.out, "-o", data={"the data folder data.path": d["path"]}, keep={"the prior": a.prior})
    with FolderLock(a.out, "tuning folder"):  # a second tuning into this -o is refused while this one runs
        return tune(a, d)


def prior_split(prior: str) -> dict:
    """The data section of the prior's training config over the schema's defaults: how its run held
    images out (data.image_size, data.val_images, data.preload, seed 0), and its folder if it kept one."""
    return {**schema()["data"], **load_checkpoint(prior)["config"]["data"]}


def held_out_of(split: dict, folder: str) -> list[str]:
    """The files of `folder` that a run with this `prior_split` held out from training."""
    return held_out_paths(folder, split["image_size"], split["val_images"], split["preload"])


def score(out: str, n: int) -> tuple[float, float, str] | str:
    """(mean PSNR, mean SSIM, NFE) of a grid point whose n images were all restored, else why not."""
    rows = read_metrics(out)
    mean = rows[-1] if rows and rows[-1]["image"] == "mean" else {}
    if mean.get("status") != f"{n} of {n} ok":
        failed = [r["image"] for r in rows if r["image"] != "mean" and r.get("status") != "ok"]
        return f"failed ({n - len(failed)} of {n} ok)"
    return float(mean["psnr"]), float(mean["ssim"]), mean["nfe"]


def tune(a: argparse.Namespace, d: dict) -> int:
    """Run the grid on the held-out crops of `d` (the prior's data section, with the folder)."""
    paths = held_out_of(d, d["path"])[:a.n]
    images = os.path.join(a.out, "images")
    for path in paths:
        stem = os.path.splitext(os.path.basename(path))[0]
        save_image(centre_crop(read_image(path), a.crop), os.path.join(images, stem + ".png"))
    keys, values = [], []
    for g in a.grid:
        k, v = g.split("=", 1)
        keys.append(k)
        values.append(v.split(","))
    results = []
    for combo in itertools.product(*values):
        name = "_".join(f"{k.split('.')[-1]}={v}" for k, v in zip(keys, combo)) or "default"
        out = os.path.join(a.out, name)
        sets = [f"{k}={v}" for k, v in zip(keys, combo)] + a.overrides
        if not run_complete(out):  # a rerun keeps finished points and redoes unfinished ones
            seed = [] if a.seed is None else ["--seed", str(a.seed)]
            rc = hgm.main(["--runner", a.runner, "--config", a.config, "--doc", "tune", "--test", "-o", out, *seed,
                           "--overwrite", "--set", f"test.data_path={images}", f"test.checkpoint={a.prior}", *sets])
            if rc == 130:  # Ctrl-C: stop here (the point's metrics.csv says it did not finish)
                raise KeyboardInterrupt(name)
            if not os.path.isfile(os.path.join(out, "metrics.csv")):
                results.append((name, float("nan"), float("nan"), "failed"))
                continue
        s = score(out, len(paths))
        results.append((name, *s) if isinstance(s, tuple) else (name, float("nan"), float("nan"), s))
    results.sort(key=lambda r: -r[1] if r[1] == r[1] else float("inf"))
    names = ", ".join(os.path.basename(p) for p in paths)
    lines = [f"Tuning on {len(paths)} held-out {a.crop}×{a.crop} crops ({names}) — {a.runner}, {a.config}, "
             f"prior {a.prior}", "", "| setting | PSNR (dB) | SSIM | NFE |", "|---|---|---|---|"]
    lines += [f"| {n} | {ps:.2f} | {ss:.4f} | {nfe} |" if ps == ps else f"| {n} | – | – | {nfe} |"
              for n, ps, ss, nfe in results]
    text = "\n".join(lines)
    write_text(os.path.join(a.out, "tune.md"), text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
