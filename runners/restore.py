"""Owns a restoration run: one runner for every transform × task × progressive option.

Everything that can be wrong is checked before any sampling. Then, for each
image: degrade it (or read an already degraded input), restore it with
`sampling.restore_image` (after an earlier stage when progressive),
write the PNG, and report the metrics of the PNG as written.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import torch
from tqdm import tqdm

from datasets.errors import HGMError
from datasets.files import DiskFull, FolderLock, check_output_location, prepare_output
from datasets.image_files import save_image
from datasets.inputs import RestoreInput, load_inputs, read_earlier_estimate
from datasets.noise import NOISE_AUTO, noise_level, parse_noise_sigma
from evaluation.metrics import psnr
from evaluation.report import (
    NOT_RESTORED,
    image_metrics_of_file,
    recorded_cost,
    write_comparison,
    write_metrics,
)
from models.checkpoint import MODEL_KEYS, adopt_model_keys
from runners.config import dump_config, flatten
from runners.progress import bars_disabled, level_bar
from sampling import Prior, PriorOptions, SamplerDiverged, SamplerSettings, load_prior, restore_image
from sampling.compiled import compile_key, compiled_before, remember_compiled
from sampling.patches import to_patches
from sampling.restore_image import evaluations, has_holes, schedule_failed

log = logging.getLogger("hgm")

# test.compile: auto compiles when the images of the commonest shape need at least this many
# megapixel-evaluations (images × megapixels × NFE). Measured on 2 CPU cores (scripts/speed_presets.py,
# docs/results.md, Speed): compilation takes about 80–130 s per shape (with tiles, per shape of a pass of
# tiles: one per image size) and then saves about a fifth to a half of the time, so it repays itself after
# 50–150 megapixel-evaluations (the demo: 6; Kodak24 demosaicking: 186). Where this machine has compiled the
# same network for the same shape before (sampling/compiled.py), inductor's cache makes it about 5 s, repaid
# after COMPILE_PAYS_FROM_WARM.
COMPILE_PAYS_FROM = 150
COMPILE_PAYS_FROM_WARM = 8


def compile_pays(shapes: list[tuple[int, int]], n_eval: int, warm: bool = False) -> bool:
    """Whether torch.compile repays its compilation on a run of images of these (H, W) shapes; `warm`:
    this machine has compiled the network for the commonest shape before."""
    if not shapes:
        return False
    (h, w), count = Counter(shapes).most_common(1)[0]
    return count * h * w / 1e6 * n_eval >= (COMPILE_PAYS_FROM_WARM if warm else COMPILE_PAYS_FROM)


EARLIER_STAGE_FOLDER = "stage1"  # where a progressive run writes the earlier stage's estimates
MOSTLY_CLIPPED = 0.5  # more unmeasured samples than this far outside [0, 1]: the image fails (above 5 %: a warning)


@dataclass
class Restoration:
    """What a run restores with, checked before any output is written."""
    prior: Prior
    settings: SamplerSettings
    items: list[RestoreInput]
    out: str
    earlier_prior: Prior | None = None  # progressive, earlier stage run here
    hole_prior: Prior | None = None  # the first levels of a coarse-to-fine start (test.hole_prior)
    earlier_folder: str | None = None  # progressive, earlier estimates read from here


def check_trained_levels(r: Restoration) -> None:
    """Warn where a prior trained on its largest levels only (training.sigma_min) is run on lower ones."""
    s, sig = r.settings, r.prior.sigmas
    uses = [(r.prior, s.stop_level(sig) - 1, "test.checkpoint")]
    if r.hole_prior is not None:
        uses.append((r.hole_prior, s.hole_stages(sig)[0].stop_level(r.hole_prior.sigmas) - 1, "test.hole_prior"))
    for prior, last, key in uses:
        if prior.untrained_below(last):
            log.warning("%s was trained on its levels with σ ≥ %g only (training.sigma_min), this run takes it "
                        "down to σ %.3g: its scores there are untrained", key, prior.trained_sigma_min,
                        float(prior.sigmas[last]))


def network_view(r: Restoration) -> str:
    """How the network sees an image in this run (part of what its compiled kernels depend on)."""
    s = r.settings
    if s.patch_size:
        return f"patches {s.patch_size}/{s.patch_stride} batch {s.patch_batch}"
    tile = s.with_tiles_for(r.prior.training_crop).tile_size
    return f"tiles {tile}/{s.tile_overlap} batch {s.patch_batch}" if tile else "whole"


def earlier_cost(earlier_folder: str, stem: str) -> tuple[int, float]:
    """(NFE, seconds) the earlier stage spent on `stem`, from the metrics.csv next to its
    restored/ folder, so a progressive result's cost includes both stages."""
    folder = os.path.dirname(os.path.normpath(earlier_folder))
    cost = recorded_cost(folder, stem)
    if cost is None:
        log.warning("progressive: no cost of the earlier stage for %s in %s; NFE and seconds count this stage "
                    "only", stem, os.path.join(folder, "metrics.csv"))
        return 0, 0.0
    return cost


class RestoreRunner:
    """`explicit`: the flat config values the user gave (runners.config.explicit_values); model and
    transform keys among them are checked against the checkpoint, the rest of the model comes from
    it. None: every model key of `cfg` must match the checkpoint."""

    def __init__(self, args: argparse.Namespace, cfg: dict, device: torch.device, explicit: dict | None = None):
        self.args, self.cfg, self.device = args, cfg, device
        self.tcfg = cfg["test"]
        self.explicit = flatten(cfg) if explicit is None else explicit

    def run(self) -> None:
        r = self.setup()
        with FolderLock(r.out, "output folder"):  # a second run on this -o is refused until this one ends
            prepare_output(r.out, getattr(self.args, "overwrite", False))
            comment = getattr(self.args, "comment", "")
            dump_config(self.cfg, os.path.join(r.out, "config.yml"), comment)
            handler = logging.FileHandler(os.path.join(r.out, "log.txt"))
            handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
            log.addHandler(handler)
            if comment:
                log.info("comment: %s", comment)
            try:
                self.restore_all(r)
            finally:
                log.removeHandler(handler)
                handler.close()

    def setup(self) -> Restoration:
        """Settings, priors and inputs, every one checked; writes nothing."""
        args, cfg, tcfg = self.args, self.cfg, self.tcfg
        pcfg = tcfg["progressive"]
        doc = args.doc or os.path.splitext(os.path.basename(tcfg["checkpoint"] or ""))[0]
        if not doc:
            raise HGMError("restoration needs --doc (the prior is <run>/logs/<doc>/checkpoint.pth) "
                           "or test.checkpoint naming the prior")
        out = args.image_folder or os.path.join(args.run, "restore", doc)
        ckpt_path = tcfg["checkpoint"] or os.path.join(args.run, "logs", doc, "checkpoint.pth")
        mask = str(tcfg["mask"]) if tcfg["task"] == "inpaint" and str(tcfg["mask"]) not in ("random", "box") else None
        check_output_location(out, "-o", data={"the data folder test.data_path": tcfg["data_path"]}, keep={
            "the run folder": args.run, "the checkpoint": ckpt_path, "the mask": mask,
            "the earlier estimates": pcfg["prev_folder"], "the hole prior": tcfg["hole_prior"],
            "the earlier stage's run": pcfg["prev_doc"] and os.path.join(args.run, "logs", pcfg["prev_doc"])})
        if tcfg["compile"] not in (True, False, "auto"):
            raise HGMError(f"test.compile={tcfg['compile']!r} must be true, false or auto")
        if tcfg["output_bits"] not in (8, 16):
            raise HGMError(f"test.output_bits={tcfg['output_bits']} must be 8 or 16")
        parse_noise_sigma(tcfg["noise_sigma"])
        SamplerSettings.from_config(tcfg)  # settings errors before the checkpoint is read
        options = PriorOptions.from_config(tcfg, self.device)
        if tcfg["bf16"] == "auto":
            log.info("test.bf16 auto: %s", "bf16 autocast (this device computes in bf16 natively)" if options.bf16
                     else "fp32 (this device has no native bf16 arithmetic)")
        requested = {k: v for k, v in self.explicit.items() if k in MODEL_KEYS}
        prior = load_prior(ckpt_path, self.device, options, requested, cfg)
        adopt_model_keys(cfg, prior.cfg)  # the run's config.yml records the prior it ran with
        r = Restoration(prior, SamplerSettings.from_config(tcfg, prior.sigmas), [], out)
        if tcfg["hole_prior"]:
            r.hole_prior = load_prior(tcfg["hole_prior"], self.device, options)
        n_eval = evaluations(prior, r.settings, r.hole_prior)  # a hole prior that cannot be used: an error now
        if pcfg["enabled"]:
            if bool(pcfg["prev_doc"]) == bool(pcfg["prev_folder"]):
                raise HGMError("progressive restoration needs exactly one of test.progressive.prev_doc "
                               "and test.progressive.prev_folder")
            if pcfg["prev_doc"]:
                path = os.path.join(args.run, "logs", pcfg["prev_doc"], "checkpoint.pth")
                r.earlier_prior = load_prior(path, self.device, options)
            r.earlier_folder = pcfg["prev_folder"]
        elif pcfg["prev_doc"] or pcfg["prev_folder"]:
            log.warning("test.progressive.prev_* is set but progressive.enabled is false: ignored")
        r.items = load_inputs(tcfg)
        check_trained_levels(r)
        if r.settings.flips and not prior.trained_on_flips:
            log.warning("test.flips: this prior was trained without flips (data.augment false); its scores on "
                        "flipped images may be worse than on the image itself (test.flips=false reads it as it is)")
        if tcfg["compile"] == "auto":
            sizes = [tuple(item.y.shape[-2:]) for item in r.items]
            holes = r.hole_prior is not None and any(has_holes(item.mask[None], r.settings.hole_distance)
                                                     for item in r.items)
            priors = [prior, r.hole_prior] if holes else [prior]
            if sizes:
                common, view = Counter(sizes).most_common(1)[0][0], network_view(r)
            warm = bool(sizes) and all(compiled_before(compile_key(p, common, view)) for p in priors)
            if compile_pays(sizes, n_eval, warm):
                for p in priors:
                    p.compile()
                log.info("test.compile auto: compiling the network (%s)",
                         "compiled for this shape on this machine before: its cache makes it seconds" if warm
                         else "the run is long enough to repay it")
        if r.earlier_folder:
            for item in r.items:
                read_earlier_estimate(r.earlier_folder, item.stem, *item.y.shape[-2:])
        return r

    def restore_all(self, r: Restoration) -> None:
        tcfg, s = self.tcfg, r.settings
        noise = parse_noise_sigma(tcfg["noise_sigma"])
        if noise != NOISE_AUTO and noise > 0:  # the start level and evaluations the images will have
            s = s.for_noise(noise / 255).for_levels(r.prior.sigmas)
        n_eval = evaluations(r.prior, s, r.hole_prior)
        tile = s.with_tiles_for(r.prior.training_crop).tile_size  # as restore_image resolves it, per prior
        sig = r.prior.sigmas
        plain = dataclasses.replace(s, hole_sigma_start=None).evaluations(sig)
        if r.hole_prior is None:
            first = None if s.hole_sigma_start is None else s.hole_level(sig)
            holes = "" if first is None else (f", holes farther than {s.hole_distance} px from the measurement "
                                              f"from level {first} (σ {float(sig[first]):.3g}) "
                                              f"× {s.hole_steps_each()} steps")
        else:
            coarse, hs = s.hole_stages(sig)[0], r.hole_prior.sigmas
            first, last = coarse.hole_level(hs), coarse.stop_level(hs) - 1
            holes = (f", holes farther than {s.hole_distance} px from the measurement first with the hole prior "
                     f"(step {r.hole_prior.step}), its levels {first}..{last} "
                     f"(σ {float(hs[first]):.3g} → {float(hs[last]):.3g}) × {s.hole_steps_each()} steps")
        if s.hole_init is not None:
            holes += f", an image with such holes started from {s.hole_init} (the others from {s.init})"
        if s.hole_scale > 1:
            holes += (f", all of that at 1/{s.hole_scale} of the resolution, enlarged as the start of the main prior "
                      f"from level {s.start_level} at full resolution")
        if s.hole_sigma_start is not None:
            holes += f"; a mask without such holes starts at level {s.start_level} ({plain} evaluations)"
        log.info("restoring %d image(s): task %s, transform %s (%d ch), prior step %d, levels %d..%d of %d "
                 "(σ %.3g → %.3g) × %d steps, step η = %.3g·σ² (step_lr %g), temperature %g, update %s, "
                 "%d evaluations per image%s%s%s%s%s%s -> %s", len(r.items), tcfg["task"], r.prior.transform.name,
                 r.prior.transform.channels, r.prior.step, s.start_level, len(sig) - 1, len(sig),
                 float(sig[s.start_level]), float(sig[-1]), s.n_steps_each, s.step_lr / float(sig[-1]) ** 2,
                 s.step_lr, s.temperature, s.update, n_eval,
                 f" (the mean of {s.n_samples} samples)" if s.n_samples > 1 else "",
                 " (progressive)" if tcfg["progressive"]["enabled"] else "",
                 "" if s.noise_start_ratio is None or not noise else
                 f" (the first level nearest {s.noise_start_ratio:g}× the measurement's noise"
                 + ("" if s.noise_step_total is None else f", the step scale making {s.noise_step_total:g} in all")
                 + (", per image)" if noise == NOISE_AUTO else ")"),
                 holes,
                 f", the network's view in tiles of {tile} px sharing {s.tile_overlap}" if tile
                 and not s.patch_size else "",
                 ", each evaluation on the next of the image's four flips" if s.flips else "", r.out)
        has_gt = not tcfg["degraded_input"]
        if has_gt:
            log.info("metrics: PSNR on the 0–255 scale over the three channels, SSIM with data range 1, of each "
                     "restored file as written (%d bits); 16-bit images are compared at full precision",
                     tcfg["output_bits"])
        rows, diverged, failed, traces = [], [], [], []
        stems = [item.stem for item in r.items]
        # metrics.csv is rewritten after every image: whatever stops the run (Ctrl-C, kill -9), it lists
        # every finished image and marks the others NOT_RESTORED, so it never reads as complete
        write_metrics(r.out, rows, has_gt, pending=stems, quiet=True)
        try:
            for item in tqdm(r.items, desc="images", dynamic_ncols=True, disable=len(r.items) < 2 or bars_disabled()):
                try:
                    rows.append(self.restore_and_score(r, item, traces, n_eval, has_gt))
                except DiskFull:
                    raise  # every later image would fail the same way
                except SamplerDiverged as e:
                    log.error("%s: %s; nothing written for it", item.stem, e)
                    diverged.append(item.stem)
                    rows.append({"image": item.stem, "status": f"diverged (step_lr={s.step_lr:g})"})
                except Exception as e:  # this image only: the others are still restored and scored
                    msg = str(e).splitlines()[0] if str(e) else type(e).__name__
                    log.error("%s: failed: %s", item.stem, msg)
                    failed.append(f"{item.stem}: {msg}")
                    rows.append({"image": item.stem, "status": f"error: {msg}"})
                if len(rows) < len(stems):
                    write_metrics(r.out, rows, has_gt, pending=stems[len(rows):], quiet=True)
        finally:
            # the next run of these shapes compiles from inductor's cache
            view, done = network_view(r), {row["image"] for row in rows if row.get("status") == "ok"}
            remember_compiled([compile_key(p, tuple(item.y.shape[-2:]), view) for p in (r.prior, r.hole_prior)
                               if p is not None and p.ran_compiled for item in r.items if item.stem in done])
            left = stems[len(rows):]
            write_metrics(r.out, rows, has_gt, traces, pending=left)
            if left:
                log.warning("stopped after %d of %d image(s): metrics.csv marks the other %d '%s'; this run "
                            "is not complete", len(rows), len(stems), len(left), NOT_RESTORED)
        if failed:
            raise HGMError(f"{len(failed) + len(diverged)} of {len(r.items)} image(s) failed ({'; '.join(failed)}"
                           f"{'; diverged: ' + ', '.join(diverged) if diverged else ''}); the others are in {r.out}")
        if diverged:
            raise HGMError(f"{len(diverged)} of {len(r.items)} image(s) diverged ({', '.join(diverged)}); "
                           f"lower test.step_lr (now {s.step_lr:g}); the others are in {r.out}")

    def restore_and_score(self, r: Restoration, item: RestoreInput, traces: list, n_eval: int, has_gt: bool) -> dict:
        """Restore one image, write it, and return its metrics.csv row."""
        save_image(item.y, os.path.join(r.out, "input", item.stem + ".png"))
        t0 = time.time()
        stats: dict = {}
        result, (earlier_nfe, earlier_seconds) = self.restore_one(r, item, traces, stats)
        if schedule_failed(stats):
            far = 100 * stats["out_of_range"]
            what = (f"{far:.0f}% of the unmeasured samples ended far outside [0, 1] before clipping: the sampling "
                    f"schedule failed (test.step_lr={r.settings.step_lr:g} too large, or too few steps?)")
            if stats["out_of_range"] > MOSTLY_CLIPPED:  # clipped noise, not a restoration: the image fails
                raise HGMError(what)
            log.warning("%s: %s and this result is not a restoration", item.stem, what)
        seconds = time.time() - t0 + earlier_seconds
        path = os.path.join(r.out, "restored", item.stem + ".png")
        save_image(result, path, bits=self.tcfg["output_bits"])
        write_comparison(r.out, item.stem, item.y, result, item.gt)
        row = {"image": item.stem, "nfe": stats.get("nfe", n_eval) + earlier_nfe, "seconds": round(seconds, 2),
               "status": "ok"}
        if has_gt:
            row.update(image_metrics_of_file(path, item.gt, self.tcfg["border"]))
            ssim = "-" if row["ssim"] is None else f"{row['ssim']:.4f}"
            log.info("%s: PSNR %.2f dB, SSIM %s (%.1f s)", item.stem, row["psnr"], ssim, seconds)
        else:
            log.info("%s: restored (%.1f s)", item.stem, seconds)
        return row

    def noise_level(self, item: RestoreInput) -> float | torch.Tensor:
        """The measurement's noise on the [0, 1] scale (datasets.noise.noise_level); an estimate (auto)
        is logged."""
        noise = noise_level(self.tcfg["noise_sigma"], item.y, item.mask)
        if isinstance(noise, torch.Tensor):
            log.info("%s: noise estimated from the measurement (test.noise_sigma=auto): σ R %.2f, G %.2f, B %.2f "
                     "(0–255 units)", item.stem, *(255 * noise).tolist())
        return noise

    def earlier_estimate(self, r: Restoration, item: RestoreInput, yd: torch.Tensor,
                         md: torch.Tensor,
                         noise: float | torch.Tensor = 0.0) -> tuple[torch.Tensor | None, tuple[int, float]]:
        """(the earlier stage's estimate on the device or None, its (NFE, seconds))."""
        pcfg = self.tcfg["progressive"]
        if not pcfg["enabled"]:
            return None, (0, 0.0)
        if r.earlier_prior is None:
            earlier = read_earlier_estimate(r.earlier_folder, item.stem, *item.y.shape[-2:])[None].to(self.device)
            return earlier, earlier_cost(r.earlier_folder, item.stem)
        settings = r.settings.with_schedule(pcfg["prev_step_lr"], pcfg["prev_n_steps_each"])
        stats: dict = {}
        with level_bar(f"{item.stem} stage 1") as bar:
            earlier = restore_image(r.earlier_prior, yd, md, settings, progress=bar, noise_sigma=noise, stats=stats)
        save_image(earlier[0], os.path.join(r.out, EARLIER_STAGE_FOLDER, item.stem + ".png"))
        return earlier, (stats["nfe"], 0.0)  # its time is in ours

    def trace_callback(self, r: Restoration, item: RestoreInput,
                       traces: list) -> Callable[[int, torch.Tensor, tuple | None], None] | None:
        """callback(step, x, patches) that records the PSNR of every trace_freq-th iterate (an oracle),
        or None. Whole images: the image's PSNR. In patches: the mean PSNR of the patches being
        sampled, in rows named `<stem> patches <first>-<last>` (no oracle column for those)."""
        freq = self.tcfg["trace_freq"]
        if not freq or item.gt is None:
            return None
        t, gt, s = r.prior.transform, item.gt, r.settings
        gtd = gt[None].to(self.device)
        gt_tiles = []

        def callback(step, x, part):
            if step % freq:
                return
            est = t.inverse(x).clamp(0, 1)
            if part is None:
                traces.append((item.stem, step, psnr(est[0, :, :gt.shape[-2], :gt.shape[-1]], gtd[0])))
                return
            if not gt_tiles:
                gt_tiles.append(to_patches(gtd, s.patch_size, s.patch_stride, s.pad_mode)[0])
            ref = gt_tiles[0][part[0]:part[1]]
            value = sum(psnr(e, g) for e, g in zip(est, ref)) / len(ref)
            traces.append((f"{item.stem} patches {part[0]}-{part[1] - 1}", step, value))
        return callback

    def restore_one(self, r: Restoration, item: RestoreInput, traces: list,
                    stats: dict | None = None) -> tuple[torch.Tensor, tuple[int, float]]:
        yd, md = item.y[None].to(self.device), item.mask[None].to(self.device)
        noise = self.noise_level(item)
        with torch.inference_mode():
            earlier, cost = self.earlier_estimate(r, item, yd, md, noise)
            with level_bar(item.stem) as bar:
                result = restore_image(r.prior, yd, md, r.settings, earlier, progress=bar,
                                       callback=self.trace_callback(r, item, traces), stats=stats,
                                       noise_sigma=noise, hole_prior=r.hole_prior)
        return result[0].cpu(), cost
