#!/usr/bin/env python
"""Plot quality against cost: mean PSNR against NFE and against seconds per image, one line per
label, from the metrics.csv of several restore output folders (matplotlib needed: pip install matplotlib).

    python scripts/plot_curve.py "HGM 12ch=results/nfe/a,results/nfe/b,results/nfe/c" \
        "HGM 6ch=results/nfe/d,results/nfe/e" -o results/nfe/curve.png

Each argument is LABEL=FOLDER[,FOLDER...] (a bare FOLDER is its own label); each folder is one
point, its metrics.csv `mean` row (psnr, nfe, seconds). Points of a label are joined in NFE order.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from datasets.errors import HGMError
from evaluation.report import mean_row
from scripts.cli import one_line_errors


def points(folders: list[str]) -> list[tuple[float, float, float]]:
    """(NFE, seconds, PSNR) of each folder's mean row, sorted by NFE."""
    out = []
    for folder in folders:
        row, _ = mean_row(folder)
        try:
            out.append((float(row["nfe"]), float(row["seconds"]), float(row["psnr"])))
        except (KeyError, TypeError, ValueError) as e:
            raise HGMError(f"{os.path.join(folder, 'metrics.csv')}: the mean row lacks nfe, seconds or psnr") from e
    return sorted(out)


def parse_series(args: list[str]) -> list[tuple[str, list[str]]]:
    series = []
    for a in args:
        label, folders = a.split("=", 1) if "=" in a else (os.path.basename(a.rstrip("/")), a)
        folders = [f for f in folders.split(",") if f]
        if not folders:
            raise HGMError(f"{a!r} names no folder (LABEL=FOLDER[,FOLDER...])")
        series.append((label, folders))
    return series


def plot(series: list[tuple[str, list[str]]], out: str, title: str = "") -> str:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise HGMError("plot_curve.py needs matplotlib, an optional dependency: pip install matplotlib") from e
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for label, folders in series:
        pts = points(folders)
        for ax, k in zip(axes, (0, 1)):
            xs = [p[k] for p in pts]
            ax.plot(xs, [p[2] for p in pts], marker="o", label=label)
    for ax, name in zip(axes, ("network evaluations (NFE)", "seconds per image")):
        ax.set_xlabel(name)
        ax.set_ylabel("PSNR (dB)")
        ax.grid(True, alpha=0.3)
        ax.legend()
    axes[1].set_xscale("log")
    if title:
        fig.suptitle(title)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


@one_line_errors
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("series", nargs="+", help="LABEL=FOLDER[,FOLDER...]: restore output folders (metrics.csv)")
    p.add_argument("-o", "--out", required=True, help="the PNG to write")
    p.add_argument("--title", default="")
    a = p.parse_args(argv)
    print(plot(parse_series(a.series), a.out, a.title))
    return 0


if __name__ == "__main__":
    sys.exit(main())
