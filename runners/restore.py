"""One restoration runner for every transform × task × progressive option.

For each image: degrade it with the task's operator (or read an already
degraded input), run annealed Langevin dynamics in the lifted space with data
consistency every step, write the restored PNG, and score the PNG as written.
"""
import csv
import logging
import os
import time

import torch

from datasets.folder import list_images, read_image, save_image
from datasets.operators import MaskedObservation, bayer_mask, box_mask, random_mask
from datasets.transforms import transform_from_config
from models.ncsn import CondRefineNetDilated, get_sigmas
from runners.checkpoint import check_compatible, load_checkpoint, move_aside, strip_module_prefix
from runners.config import dump_config
from runners.errors import HGMError
from runners.patches import from_patches, pad_to_multiple, to_patches
from runners.sampler import SamplerDiverged, annealed_langevin, level_bar, nfe
from tqdm import tqdm

log = logging.getLogger("hgm")


# ----------------------------------------------------------------------------- priors

class Prior:
    """A trained score network with its transform and noise levels."""

    def __init__(self, ckpt, cfg, device, use_ema=True, bf16=False, compile=False, channels_last=False):
        self.cfg = cfg
        self.transform = transform_from_config(cfg)
        m = cfg["model"]
        self.model = CondRefineNetDilated(self.transform.channels, m["ngf"], m["num_classes"]).to(device).eval()
        weights = ckpt["ema"] if (use_ema and "ema" in ckpt) else ckpt["model"]
        self.model.load_state_dict(strip_module_prefix({k: v.float() for k, v in weights.items()}), strict=True)
        self.sigmas = get_sigmas(m["sigma_begin"], m["sigma_end"], m["num_classes"], device)
        self.device, self.bf16, self.channels_last = device, bf16, channels_last
        self.step = int(ckpt.get("step", -1))
        self.net = self.model
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        if compile:
            self.net = torch.compile(self.model, dynamic=False)

    def score(self, x, labels):
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            return self.net(x, labels).float()


def load_prior(path, cfg, device, tcfg, check=True):
    """The prior at `path`, checked against `cfg` (unless `check` is false: an
    earlier stage's prior brings its own config)."""
    ckpt = load_checkpoint(path, map_location=device)
    if check:
        check_compatible(ckpt, cfg, path)
    return Prior(ckpt, cfg if check else ckpt["config"], device, tcfg["use_ema"], tcfg["bf16"], tcfg["compile"],
                 tcfg["channels_last"])


# ----------------------------------------------------------------------------- restoration

def restore_image(prior, y, mask, tcfg, step_lr, n_steps_each, anchor=None, progress=None, callback=None):
    """Restore one image (1×3×H×W measurement y, mask 1×3×H×W) with `prior`.

    Sizes the transform or the network cannot take are padded (the padding is
    unknown to the sampler) and cropped back; large images go through
    overlapping patches whose overlaps are averaged. Returns 1×3×H×W in [0, 1]
    whose measured samples equal y exactly.
    """
    t = prior.transform
    multiple = 2 * t.size_multiple  # the network halves the lifted size once
    h, w = y.shape[-2:]
    init = initial_image(tcfg["init"], y, mask)
    stack = torch.cat([y, mask, init] + ([anchor] if anchor is not None else []), dim=1)
    patch = tcfg["patch_size"]
    if patch:
        if patch % multiple:
            raise HGMError(f"test.patch_size={patch} must be divisible by {multiple} for {t.name}")
        tiles, layout = to_patches(stack, patch, tcfg["patch_stride"], tcfg["pad_mode"])
    else:
        tiles, _ = pad_to_multiple(stack, multiple, tcfg["pad_mode"])
    ys, ms, inits = tiles[:, :3], tiles[:, 3:6], tiles[:, 6:9]
    anchors = tiles[:, 9:12] if anchor is not None else None
    if not patch and tiles.shape[-2:] != (h, w):
        # padded samples are unknown to the sampler, whatever the pad copied
        ms = ms.clone()
        ms[..., h:, :] = 0
        ms[..., :, w:] = 0
    ys = ys * ms
    chunk = tcfg["patch_batch"] or (ys.shape[0] if prior.device.type == "cuda" else 1)
    if progress is not None:  # one bar step per sampler step of every chunk
        progress.total = -(-ys.shape[0] // chunk) * (len(prior.sigmas) - tcfg["start_level"]) * n_steps_each
        progress.refresh()
    outs = []
    for k in range(0, ys.shape[0], chunk):
        yk, mk = ys[k:k + chunk], ms[k:k + chunk]
        op = MaskedObservation(mk)

        def project(v, op=op, yk=yk):
            return t.forward(op.project(t.inverse(v), yk))

        xk = annealed_langevin(prior.score, t.forward(inits[k:k + chunk]), prior.sigmas, step_lr, n_steps_each,
                               project=project, first_level=tcfg["start_level"],
                               anchor=None if anchors is None else t.forward(anchors[k:k + chunk]),
                               anchor_weight=tcfg["progressive"]["weight"] if anchors is not None else 1.0,
                               update=tcfg["update"], denoise=tcfg["denoise"], progress=progress,
                               callback=callback)
        outs.append(t.inverse(xk))
    out = torch.cat(outs, dim=0)
    out = from_patches(out, layout) if patch else out[..., :h, :w]
    # clip, then enforce the measurement once more: overlap averaging is exact
    # for identical values, but this makes it a guarantee
    return MaskedObservation(mask).project(out.clamp(0, 1), y)


INITS = ("uniform", "uniform_sym", "measurement", "bilinear", "malvar", "menon", "biharmonic")


def initial_image(kind, y, mask):
    """The sampler's starting point, on the whole image (1×3×H×W).

    uniform is the paper's U(0,1) (uniform_sym: U(-1,1)); measurement keeps the
    known values; bilinear/malvar/menon (demosaicking) and biharmonic (inpainting)
    start from a classical estimate, which with test.start_level > 0 lets the
    sampler skip the highest noise levels (fewer evaluations)."""
    if kind == "uniform":
        return torch.rand_like(y)
    if kind == "uniform_sym":
        return torch.rand_like(y) * 2 - 1
    if kind == "measurement":
        return torch.where(mask > 0.5, y, torch.rand_like(y))
    if kind in ("bilinear", "malvar", "menon", "biharmonic"):
        from evaluation.baselines import run_baseline
        return run_baseline(kind, y[0].cpu(), mask[0].cpu())[None].to(y.device, y.dtype)
    raise HGMError(f"unknown test.init {kind!r} ({' | '.join(INITS)})")


# ----------------------------------------------------------------------------- inputs

def centre_crop(x, size):
    h, w = x.shape[-2:]
    if size is None or (h == size and w == size):
        return x
    if h < size or w < size:
        raise HGMError(f"test.image_size={size} is larger than an image of {h}×{w}")
    top, left = (h - size) // 2, (w - size) // 2
    return x[..., top:top + size, left:left + size]


def load_mask_file(path, h, w):
    m = read_image(path)[:1]
    if m.shape[-2:] != (h, w):
        raise HGMError(f"mask {path} is {m.shape[-2]}×{m.shape[-1]} but the image is {h}×{w}")
    return (m > 0.5).float().expand(3, h, w).clone()


def make_mask(tcfg, stem, h, w, index):
    if tcfg["task"] == "demosaic":
        return bayer_mask(tcfg["pattern"], h, w)
    spec = str(tcfg["mask"])
    if spec == "random":
        g = torch.Generator().manual_seed(1000 + index)  # the same mask for the same image every run
        return random_mask(h, w, tcfg["missing_rate"], generator=g)
    if spec == "box":
        return box_mask(h, w, tcfg["box_size"])
    if os.path.isdir(spec):
        for ext in (".png", ".bmp", ".tif", ".tiff"):
            p = os.path.join(spec, stem + ext)
            if os.path.isfile(p):
                return load_mask_file(p, h, w)
        raise HGMError(f"no mask named {stem}.png in {spec}")
    if os.path.isfile(spec):
        return load_mask_file(spec, h, w)
    raise HGMError(f"test.mask={spec!r} is neither random, box, a mask file nor a folder")


def load_inputs(tcfg):
    """[(stem, ground truth or None, y, mask)], all checked before any sampling."""
    if tcfg["task"] not in ("demosaic", "inpaint"):
        raise HGMError(f"unknown test.task {tcfg['task']!r} (demosaic | inpaint)")
    items = []
    paths = list_images(tcfg["data_path"])
    stems = [os.path.splitext(os.path.relpath(p, tcfg["data_path"]))[0].replace(os.sep, "_") for p in paths]
    for index, (stem, path) in enumerate(zip(stems, paths)):
        try:
            x = read_image(path)
        except Exception as e:
            raise HGMError(f"cannot read image {path}: {e}") from e
        if tcfg["degraded_input"] and tcfg["task"] == "demosaic":
            raw = x[:1]  # a mosaic is one channel; read_image made it grey RGB
            h, w = raw.shape[-2:]
            mask = bayer_mask(tcfg["pattern"], h, w)
            items.append((stem, None, raw.expand(3, h, w) * mask, mask))
            continue
        x = centre_crop(x, tcfg["image_size"])
        h, w = x.shape[-2:]
        mask = make_mask(tcfg, stem, h, w, index)
        gt = None if tcfg["degraded_input"] else x
        items.append((stem, gt, x * mask, mask))
    return items


def earlier_cost(prev_folder, stem):
    """(NFE, seconds) the earlier stage spent on `stem`, from the metrics.csv next to
    its restored/ folder, so a progressive result's cost includes both stages."""
    path = os.path.join(os.path.dirname(os.path.normpath(prev_folder)), "metrics.csv")
    if os.path.isfile(path):
        with open(path) as f:
            for row in csv.DictReader(f):
                if row["image"] == stem and row.get("nfe"):
                    return int(float(row["nfe"])), float(row["seconds"] or 0)
    log.warning("progressive: no cost of the earlier stage for %s in %s; NFE and seconds count this stage only",
                stem, path)
    return 0, 0.0


def read_prev(folder, stem, h, w):
    for ext in (".png", ".tif", ".tiff", ".bmp", ".jpg"):
        p = os.path.join(folder, stem + ext)
        if os.path.isfile(p):
            x = read_image(p)
            if x.shape[-2:] != (h, w):
                raise HGMError(f"earlier estimate {p} is {x.shape[-2]}×{x.shape[-1]}, the image is {h}×{w}")
            return x
    raise HGMError(f"progressive: no earlier estimate named {stem}.png in {folder}")


# ----------------------------------------------------------------------------- runner

def check_settings(tcfg, n_levels):
    """Values the config schema cannot check by type alone."""
    checks = [
        (tcfg["task"] in ("demosaic", "inpaint"), f"test.task={tcfg['task']!r} (demosaic | inpaint)"),
        (tcfg["update"] in ("reference", "langevin"), f"test.update={tcfg['update']!r} (reference | langevin)"),
        (tcfg["init"] in INITS, f"test.init={tcfg['init']!r} ({' | '.join(INITS)})"),
        (tcfg["step_lr"] > 0, f"test.step_lr={tcfg['step_lr']} (must be > 0)"),
        (tcfg["n_steps_each"] >= 1, f"test.n_steps_each={tcfg['n_steps_each']} (must be >= 1)"),
        (0 <= tcfg["start_level"] < n_levels, f"test.start_level={tcfg['start_level']} (0..{n_levels - 1})"),
        (not tcfg["patch_size"] or 0 < tcfg["patch_stride"] <= tcfg["patch_size"],
         f"test.patch_stride={tcfg['patch_stride']} (1..test.patch_size)"),
    ]
    for ok, what in checks:
        if not ok:
            raise HGMError(f"bad setting {what}")


METRIC_FIELDS = ["image", "psnr", "ssim", "psnr_border", "ssim_border", "nfe", "seconds", "status"]


class RestoreRunner:
    def __init__(self, args, cfg, device):
        self.args, self.cfg, self.device = args, cfg, device

    def run(self):
        args, cfg, device = self.args, self.cfg, self.device
        tcfg = cfg["test"]
        pcfg = tcfg["progressive"]
        out = args.image_folder or os.path.join(args.run, "restore", args.doc)
        ckpt_path = tcfg["checkpoint"] or os.path.join(args.run, "logs", args.doc, "checkpoint.pth")
        # everything that can be wrong is checked before any sampling
        check_settings(tcfg, cfg["model"]["num_classes"])
        prior = load_prior(ckpt_path, cfg, device, tcfg)
        prev_prior = None
        if pcfg["enabled"]:
            if bool(pcfg["prev_doc"]) == bool(pcfg["prev_folder"]):
                raise HGMError("progressive restoration needs exactly one of test.progressive.prev_doc "
                               "and test.progressive.prev_folder")
            if pcfg["prev_doc"]:
                prev_path = os.path.join(args.run, "logs", pcfg["prev_doc"], "checkpoint.pth")
                prev_prior = load_prior(prev_path, None, device, tcfg, check=False)
        elif pcfg["prev_doc"] or pcfg["prev_folder"]:
            log.warning("test.progressive.prev_* is set but progressive.enabled is false: ignored")
        items = load_inputs(tcfg)
        if pcfg["enabled"] and pcfg["prev_folder"]:
            for stem, _, y, _ in items:
                read_prev(pcfg["prev_folder"], stem, *y.shape[-2:])
        self._prepare_output(out)
        dump_config(cfg, os.path.join(out, "config.yml"))
        handler = logging.FileHandler(os.path.join(out, "log.txt"))
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(handler)
        try:
            self._restore_all(prior, prev_prior, items, out)
        finally:
            log.removeHandler(handler)
            handler.close()

    def _restore_all(self, prior, prev_prior, items, out):
        tcfg, pcfg = self.cfg["test"], self.cfg["test"]["progressive"]
        step_lr, n_steps = tcfg["step_lr"], tcfg["n_steps_each"]
        n_eval = nfe(len(prior.sigmas) - tcfg["start_level"], n_steps, tcfg["denoise"])
        log.info("restoring %d image(s): task %s, transform %s (%d ch), prior step %d, %d levels × %d steps, "
                 "step_lr %g, update %s, %d evaluations per image%s -> %s", len(items), tcfg["task"],
                 prior.transform.name, prior.transform.channels, prior.step, len(prior.sigmas), n_steps, step_lr,
                 tcfg["update"], n_eval, " (progressive)" if pcfg["enabled"] else "", out)
        has_gt = not tcfg["degraded_input"]
        rows, failures, traces = [], [], []
        for stem, gt, y, mask in tqdm(items, desc="images", dynamic_ncols=True, disable=len(items) < 2):
            save_image(y, os.path.join(out, "input", stem + ".png"))
            t0 = time.time()
            try:
                result, (anchor_nfe, anchor_seconds) = self._restore_one(prior, prev_prior, stem, gt, y, mask,
                                                                         out, traces)
            except SamplerDiverged as e:
                log.error("%s: %s; nothing written for it", stem, e)
                failures.append(stem)
                rows.append({"image": stem, "status": f"diverged (step_lr={step_lr:g})"})
                continue
            seconds = time.time() - t0 + anchor_seconds
            path = os.path.join(out, "restored", stem + ".png")
            save_image(result, path)
            row = {"image": stem, "nfe": n_eval + anchor_nfe, "seconds": round(seconds, 2), "status": "ok"}
            if has_gt:
                row.update(score_file(path, gt, tcfg["border"]))
                log.info("%s: PSNR %.2f dB, SSIM %.4f (%.1f s)", stem, row["psnr"], row["ssim"], seconds)
            else:
                log.info("%s: restored (%.1f s)", stem, seconds)
            rows.append(row)
        self._write_tables(out, rows, has_gt, traces)
        if failures:
            raise HGMError(f"{len(failures)} of {len(items)} image(s) diverged ({', '.join(failures)}); "
                           f"lower test.step_lr (now {step_lr:g}); the others are in {out}")

    def _restore_one(self, prior, prev_prior, stem, gt, y, mask, out, traces):
        tcfg, pcfg, device = self.cfg["test"], self.cfg["test"]["progressive"], self.device
        yd, md = y[None].to(device), mask[None].to(device)
        anchor, extra = None, (0, 0.0)
        with torch.inference_mode():
            if pcfg["enabled"]:
                if prev_prior is not None:
                    lr = pcfg["prev_step_lr"] or tcfg["step_lr"]
                    n = pcfg["prev_n_steps_each"] or tcfg["n_steps_each"]
                    levels = len(prev_prior.sigmas) - tcfg["start_level"]
                    with level_bar(f"{stem} stage 1") as bar:
                        anchor = restore_image(prev_prior, yd, md, tcfg, lr, n, progress=bar)
                    save_image(anchor[0], os.path.join(out, "stage1", stem + ".png"))
                    extra = (nfe(levels, n, tcfg["denoise"]), 0.0)  # its time is in ours
                else:
                    anchor = read_prev(pcfg["prev_folder"], stem, *y.shape[-2:])[None].to(device)
                    extra = earlier_cost(pcfg["prev_folder"], stem)
            callback = None
            if tcfg["trace_freq"] and gt is not None:
                from evaluation.metrics import psnr
                t = prior.transform
                gtd = gt[None].to(device)

                def callback(step, x):
                    if step % tcfg["trace_freq"] == 0 and not tcfg["patch_size"]:
                        est = t.inverse(x)[..., :gt.shape[-2], :gt.shape[-1]].clamp(0, 1)
                        traces.append((stem, step, psnr(est[0], gtd[0])))
            with level_bar(stem) as bar:
                result = restore_image(prior, yd, md, tcfg, tcfg["step_lr"], tcfg["n_steps_each"], anchor,
                                       progress=bar, callback=callback)
        return result[0].cpu(), extra

    def _prepare_output(self, out):
        if os.path.isdir(out) and os.listdir(out):
            if not getattr(self.args, "overwrite", False):
                raise HGMError(f"output folder {out} already holds results; choose another -o/--image_folder "
                               f"or pass --overwrite (the old folder is renamed, not deleted)")
            log.warning("moved the earlier %s to %s", out, move_aside(out))
        os.makedirs(out, exist_ok=True)

    @staticmethod
    def _write_tables(out, rows, has_gt, traces):
        fields = METRIC_FIELDS if has_gt else ["image", "nfe", "seconds", "status"]
        ok = [r for r in rows if r.get("status") == "ok"]
        oracle = {}
        if traces:
            for stem, _, p in traces:
                oracle[stem] = max(oracle.get(stem, float("-inf")), p)
            fields = fields + ["oracle_best_psnr_over_steps"]
            for r in rows:
                if r["image"] in oracle:
                    r["oracle_best_psnr_over_steps"] = round(oracle[r["image"]], 4)
            with open(os.path.join(out, "trace.csv"), "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["image", "step", "psnr"])
                w.writerows((s, k, round(p, 4)) for s, k, p in traces)
        with open(os.path.join(out, "metrics.csv"), "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
            w.writeheader()
            for r in rows:
                w.writerow({k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()})
            if ok:
                mean = {"image": "mean", "status": f"{len(ok)} of {len(rows)} ok"}
                for k in fields[1:]:
                    vals = [r[k] for r in ok if isinstance(r.get(k), (int, float))]
                    if vals and k != "status":
                        mean[k] = round(sum(vals) / len(vals), 4)
                w.writerow(mean)
        if has_gt and ok:
            m = sum(r["psnr"] for r in ok) / len(ok)
            log.info("mean over %d image(s): PSNR %.2f dB, SSIM %.4f -> %s", len(ok), m,
                     sum(r["ssim"] for r in ok) / len(ok), os.path.join(out, "metrics.csv"))


def score_file(path, gt, border):
    """Metrics of the PNG as written (re-read from disk), full and without a border."""
    from evaluation.metrics import psnr, ssim
    restored = read_image(path)
    m = {"psnr": psnr(restored, gt), "ssim": ssim(restored, gt)}
    if border and min(gt.shape[-2:]) - 2 * border >= 7:  # SSIM's 7×7 window must fit
        m["psnr_border"] = psnr(restored, gt, border=border)
        m["ssim_border"] = ssim(restored, gt, border=border)
    return m


__all__ = ["RestoreRunner", "restore_image", "load_prior"]
