"""Owns a restoration's output folder and its tables: the one writer and the one reader of metrics.csv
(and trace.csv), and the metrics of a restored file as written.

metrics.csv has one row per image (`image`, the metrics, `nfe`, `seconds`,
`status`) and, when any image succeeded, a last row `mean` over the ok ones. While a run is going
on, and after one was interrupted, the images not restored have rows NOT_RESTORED and the mean row
begins INCOMPLETE; `run_complete` tells finished runs from the others.
"""
from __future__ import annotations

import csv
import io
import logging
import math
import os

import torch

from datasets.errors import HGMError
from datasets.files import write_text
from datasets.image_files import read_image, save_image
from evaluation.metrics import psnr, ssim

log = logging.getLogger("hgm")

METRIC_FIELDS = ["image", "psnr", "ssim", "psnr_border", "ssim_border", "nfe", "seconds", "status"]
COST_FIELDS = ["image", "nfe", "seconds", "status"]
ORACLE_FIELD = "oracle_best_psnr_over_steps"
COMPARE_FOLDER = "compare"
NOT_RESTORED = "not restored (the run did not finish)"  # the status of an image an unfinished run did not reach
INCOMPLETE = "incomplete"  # how the mean row of an unfinished run begins
ERROR_GAIN = 5  # the error map shows |restored - ground truth| (mean over channels) times this


def _number(v: float) -> float | None:
    return None if math.isnan(v) else v  # empty in metrics.csv


def image_metrics_of_file(path: str, gt: torch.Tensor, border: int) -> dict[str, float | None]:
    """Metrics of the PNG as written (re-read from disk), full and without a border. SSIM of an
    image smaller than its 7×7 window uses a smaller window, and is None (empty) under 3×3."""
    restored = read_image(path)
    m = {"psnr": psnr(restored, gt), "ssim": _number(ssim(restored, gt))}
    if border and min(gt.shape[-2:]) - 2 * border >= 7:  # SSIM's 7×7 window must fit
        m["psnr_border"] = psnr(restored, gt, border=border)
        m["ssim_border"] = ssim(restored, gt, border=border)
    return m


def _add_oracle(out: str, rows: list[dict], traces: list[tuple[str, int, float]]) -> None:
    """Best PSNR over the sampler's steps per image (an oracle column) and trace.csv."""
    oracle: dict[str, float] = {}
    for stem, _, p in traces:
        oracle[stem] = max(oracle.get(stem, float("-inf")), p)
    for r in rows:
        if r["image"] in oracle:
            r[ORACLE_FIELD] = round(oracle[r["image"]], 4)
    lines = io.StringIO()
    w = csv.writer(lines)
    w.writerow(["image", "step", "psnr"])
    w.writerows((s, k, round(p, 4)) for s, k, p in traces)
    write_text(os.path.join(out, "trace.csv"), lines.getvalue())


def write_metrics(out: str, rows: list[dict], has_gt: bool, traces: list[tuple[str, int, float]] = (),
                  pending: list[str] = (), quiet: bool = False) -> None:
    """Write OUT/metrics.csv (rows, then the mean of the ok rows) and, with traces, OUT/trace.csv.

    `pending` names the images the run has not restored (yet): each gets a row with status NOT_RESTORED
    and the mean row says the run is incomplete, so an interrupted run never reads as a finished one
    (`run_complete`). The file is replaced whole: a run killed at any moment leaves the last version."""
    fields = METRIC_FIELDS if has_gt else COST_FIELDS
    ok = [r for r in rows if r.get("status") == "ok"]
    if traces:
        fields = fields + [ORACLE_FIELD]
        _add_oracle(out, rows, traces)
    text = io.StringIO()
    w = csv.DictWriter(text, fieldnames=fields, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()})
    for stem in pending:
        w.writerow({"image": stem, "status": NOT_RESTORED})
    n = len(rows) + len(pending)
    if ok or pending:
        status = f"{len(ok)} of {n} ok"
        if pending:
            status = f"{INCOMPLETE}: {status}, {len(pending)} not restored"
        mean = {"image": "mean", "status": status}
        for k in fields[1:]:
            vals = [r[k] for r in ok if isinstance(r.get(k), (int, float))]
            if vals and k != "status":
                mean[k] = round(sum(vals) / len(vals), 4)
        w.writerow(mean)
    write_text(os.path.join(out, "metrics.csv"), text.getvalue())
    if has_gt and ok and not quiet:
        m = sum(r["psnr"] for r in ok) / len(ok)
        ssims = [r["ssim"] for r in ok if r.get("ssim") is not None]
        log.info("mean over %d image(s): PSNR %.2f dB, SSIM %s -> %s", len(ok), m,
                 f"{sum(ssims) / len(ssims):.4f}" if ssims else "-", os.path.join(out, "metrics.csv"))


def read_metrics(folder: str) -> list[dict[str, str]]:
    """The rows of FOLDER/metrics.csv as strings, the `mean` row (if any) last."""
    path = os.path.join(folder, "metrics.csv")
    if not os.path.isfile(path):
        raise HGMError(f"no metrics.csv in {folder}")
    with open(path) as f:
        return list(csv.DictReader(f))


def run_complete(folder: str) -> bool:
    """Whether FOLDER holds a finished run: a metrics.csv with a row for every image and none left
    NOT_RESTORED (an interrupted or killed run is not finished; its images may have failed, though)."""
    try:
        return _complete(read_metrics(folder))
    except HGMError:
        return False


def _complete(rows: list[dict[str, str]]) -> bool:
    return bool(rows) and not any(r.get("status") == NOT_RESTORED or str(r.get("status", "")).startswith(INCOMPLETE)
                                  for r in rows)


def mean_row(folder: str) -> tuple[dict[str, str], int]:
    """(the `mean` row of FOLDER/metrics.csv, the number of images it lists); an unfinished run is an error."""
    rows = read_metrics(folder)
    path = os.path.join(folder, "metrics.csv")
    if not _complete(rows):
        left = sum(r.get("status") == NOT_RESTORED for r in rows)
        raise HGMError(f"{path} is of a run that did not finish ({left} of {len(rows) - 1} image(s) not "
                       f"restored); run it again")
    if not rows or rows[-1]["image"] != "mean":
        raise HGMError(f"{path} has no mean row (did every image fail?)")
    return rows[-1], len(rows) - 1


def recorded_cost(folder: str, stem: str) -> tuple[int, float] | None:
    """(NFE, seconds) that FOLDER/metrics.csv records for image `stem`; None if it records none."""
    if not os.path.isfile(os.path.join(folder, "metrics.csv")):
        return None
    for row in read_metrics(folder):
        if row["image"] == stem and row.get("nfe"):
            return int(float(row["nfe"])), float(row["seconds"] or 0)
    return None


def _label_strip(text: str, width: int, height: int = 14) -> torch.Tensor:
    """3×height×width: `text` in white on black, PIL's default font (cut off where it does not fit)."""
    import numpy as np
    from PIL import Image, ImageDraw
    im = Image.new("RGB", (width, height))
    ImageDraw.Draw(im).text((2, 1), text, fill=(255, 255, 255))
    return torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1).float() / 255


def image_grid(tiles, nrow: int, padding: int = 2, pad_value: float = 1.0) -> torch.Tensor:
    """3×H'×W': equal-sized C×H×W images (C 1 or 3) in rows of `nrow`, `padding` pixels of `pad_value`
    around each (the layout of torchvision's make_grid, without importing torchvision: its import
    costs a restoration run about 2 s of start-up)."""
    tiles = [t.detach().float().cpu() for t in tiles]
    h, w = tiles[0].shape[-2:]
    cols = min(nrow, len(tiles))
    rows = -(-len(tiles) // cols)
    grid = torch.full((3, rows * (h + padding) + padding, cols * (w + padding) + padding), float(pad_value))
    for k, tile in enumerate(tiles):
        y, x = (k // cols) * (h + padding) + padding, (k % cols) * (w + padding) + padding
        grid[:, y:y + h, x:x + w] = tile.expand(3, h, w)
    return grid


def write_panels(path: str, panels: list[tuple[str, torch.Tensor]], min_width: int = 128) -> str:
    """Labelled 3×H×W images side by side in one PNG at `path`. Images narrower than `min_width`
    are enlarged (nearest neighbour) so the labels fit. Returns the path."""
    scale = max(1, -(-min_width // panels[0][1].shape[-1]))
    tiles = []
    for label, img in panels:
        img = img.detach().float().cpu().clamp(0, 1)
        if scale > 1:
            img = img.repeat_interleave(scale, -2).repeat_interleave(scale, -1)
        tiles.append(torch.cat([_label_strip(label, img.shape[-1]), img.expand(3, -1, -1)], dim=-2))
    save_image(image_grid(tiles, nrow=len(tiles), padding=4, pad_value=1.0), path)
    return path


def error_map(restored: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """|restored − ground truth|, mean over channels, times ERROR_GAIN, as a grey 3×H×W image."""
    return (restored - gt).abs().mean(0, keepdim=True).mul(ERROR_GAIN).clamp(0, 1).expand(3, -1, -1)


def write_comparison(out: str, stem: str, degraded: torch.Tensor, restored: torch.Tensor,
                     gt: torch.Tensor | None = None, min_width: int = 128) -> str:
    """OUT/compare/<stem>.png: labelled panels input | restored | ground truth | error map
    (input | restored without a ground truth). Returns the path."""
    panels = [("input", degraded), ("restored", restored)]
    if gt is not None:
        panels += [("ground truth", gt), (f"error x{ERROR_GAIN}", error_map(restored, gt))]
    return write_panels(os.path.join(out, COMPARE_FOLDER, stem + ".png"), panels, min_width)
