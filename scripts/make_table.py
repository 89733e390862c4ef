#!/usr/bin/env python
"""Collect the `mean` rows of several output folders into one markdown table.

    python scripts/make_table.py bilinear=out/bilinear malvar=out/malvar hgm_12ch=out/hgm12
"""
import argparse
import csv
import os
import sys

COLUMNS = [("psnr", "PSNR (dB)"), ("psnr_border", "PSNR, border 10 (dB)"), ("ssim", "SSIM"),
           ("nfe", "NFE"), ("seconds", "s / image")]


def mean_row(folder):
    path = os.path.join(folder, "metrics.csv")
    with open(path) as f:
        rows = list(csv.DictReader(f))
    if not rows or rows[-1]["image"] != "mean":
        raise SystemExit(f"{path} has no mean row (did every image fail?)")
    return rows[-1], len(rows) - 1


def table(entries, columns=COLUMNS):
    head = "| method | images | " + " | ".join(c[1] for c in columns) + " |"
    lines = [head, "|" + "---|" * (len(columns) + 2)]
    for name, folder in entries:
        row, n = mean_row(folder)
        cells = []
        for key, _ in columns:
            v = row.get(key, "")
            try:
                v = f"{float(v):.4f}" if key.startswith("ssim") else (f"{float(v):.2f}" if key != "nfe" else f"{float(v):.0f}")
            except ValueError:
                pass
            cells.append(v)
        lines.append(f"| {name} | {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("entries", nargs="+", help="NAME=FOLDER")
    args = p.parse_args(argv)
    entries = [e.split("=", 1) if "=" in e else (os.path.basename(e.rstrip("/")), e) for e in args.entries]
    print(table(entries))
    return 0


if __name__ == "__main__":
    sys.exit(main())
