#!/usr/bin/env python
"""Collect the `mean` rows of several output folders into one markdown table.

    python scripts/make_table.py bilinear=out/bilinear malvar=out/malvar hgm_12ch=out/hgm12
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from datasets.errors import HGMError
from evaluation.report import mean_row
from scripts.cli import one_line_errors

COLUMNS = [("psnr", "PSNR (dB)"), ("psnr_border", "PSNR, border 10 (dB)"), ("ssim", "SSIM"),
           ("nfe", "NFE"), ("seconds", "s / image")]


def table(entries: list[tuple[str, str]], columns: list[tuple[str, str]] = COLUMNS) -> str:
    """A markdown table of the mean rows of (name, output folder) entries."""
    head = "| method | images | " + " | ".join(c[1] for c in columns) + " |"
    lines = [head, "|" + "---|" * (len(columns) + 2)]
    for name, folder in entries:
        row, n = mean_row(folder)
        cells = []
        for key, _ in columns:
            v = row.get(key, "")
            try:
                digits = 4 if key.startswith("ssim") else (0 if key == "nfe" else 2)
                v = f"{float(v):.{digits}f}"
            except ValueError:
                pass
            cells.append(v)
        lines.append(f"| {name} | {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


@one_line_errors
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("entries", nargs="+", help="NAME=FOLDER")
    args = p.parse_args(argv)
    entries = [e.split("=", 1) if "=" in e else (os.path.basename(e.rstrip("/")), e) for e in args.entries]
    try:
        print(table(entries))
    except HGMError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
