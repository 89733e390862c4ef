#!/usr/bin/env python
"""Speed of restoration: this tool's sampler against a re-creation of the
reference code's loop, same model, same image, same number of evaluations.

The reference loop (re-created, not copied) runs patches one at a time, moves
the iterate to NumPy on the host every step for the transform and data
consistency, and computes PSNR and SSIM every step. Ours keeps everything on
the device, batches patches where asked, and scores once at the end.

    python scripts/benchmark.py                       # 12ch, 500×500, 20 NFE, CPU: about 2 min
    python scripts/benchmark.py --variant 6ch --patch 300 --patch_batch 4 --nfe 50 --device cuda

By default both loops see the paper's demosaicking setting, a 500×500 image:
the reference loop as the paper's code ran it (overlapping 300×300 patches,
stride 256, one at a time), ours as one whole image (the network is fully
convolutional; --patch N makes ours use patches too).

Last line: speedup_vs_reference=<x> flop_utilisation=<y>
"""
import argparse
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from datasets.masks import bayer_mask
from datasets.transforms import VARIANTS, transform_from_config
from evaluation.metrics import psnr, ssim
from models.ncsn import build_model
from sampling import Prior, PriorOptions, SamplerSettings, restore_image
from sampling.patches import from_patches, to_patches
from scripts.cli import one_line_errors


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_gflops(device, n=2048, reps=10):
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    a @ b
    sync(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n ** 3 * reps / (time.perf_counter() - t0) / 1e9


def forward_flops(model, x, labels):
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x, labels)
    return counter.get_total_flops()


def reference_loop(model, transform, gt, mask, sigmas, n_steps, step_lr, patch, stride, device):
    """The reference's way: one patch at a time, NumPy round trips every step,
    PSNR and SSIM of every step (ground truth in the loop, as it did)."""
    y = gt * mask
    stack = torch.cat([y, mask, gt], 1)
    tiles, layout = to_patches(stack, patch, stride, "circular") if patch else (stack, None)
    outs = []
    for k in range(tiles.shape[0]):
        yk = tiles[k:k + 1, :3].cpu().numpy()
        mk = tiles[k:k + 1, 3:6].cpu().numpy()
        gk = tiles[k, 6:9].cpu()
        x = transform.forward(torch.rand(1, 3, *yk.shape[-2:]))
        x_noisy = x
        for i, sigma in enumerate(sigmas):
            labels = torch.full((1,), i, dtype=torch.long, device=device)
            eta = step_lr * (float(sigma) / float(sigmas[-1])) ** 2
            for _ in range(n_steps):
                with torch.no_grad():
                    grad = model(x_noisy.to(device), labels)
                x = x.to(device) + eta * grad
                img = transform.inverse(x).cpu().numpy()  # host round trip every step
                img = img * (1 - mk) + yk  # data consistency in NumPy
                x = transform.forward(torch.from_numpy(img.astype(np.float32)))
                x_noisy = x + np.sqrt(2 * eta) * torch.randn_like(x)
                est = torch.from_numpy(np.clip(img[0], 0, 1))  # metrics every step, as the reference
                psnr(est, gk)
                ssim(est, gk)
        outs.append(torch.from_numpy(img))
    out = torch.cat(outs, 0)
    return from_patches(out, layout) if patch else out


def profile_forward(model, x, device):
    """Why bf16 gains less than a bf16 matmul: the share of convolution time."""
    from torch.profiler import ProfilerActivity, profile
    labels = torch.zeros(x.shape[0], dtype=torch.long, device=device)
    for bf16 in (False, True):
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            model(x, labels)
            with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA] if device.type == "cuda"
                         else [ProfilerActivity.CPU]) as prof:
                model(x, labels)
        events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
        total = sum(e.self_cpu_time_total for e in events)
        conv = sum(e.self_cpu_time_total for e in events if "conv" in e.key)
        print(f"forward, {'bf16' if bf16 else 'fp32'}: {total / 1e3:.0f} ms self CPU time; convolution "
              f"{100 * conv / total:.0f} %, other ops {100 - 100 * conv / total:.0f} % "
              f"({len(events)} kinds of op); top:")
        for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[:6]:
            print(f"    {e.key:40s} {100 * e.self_cpu_time_total / total:5.1f} %  ×{e.count}")


@one_line_errors
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variant", default="12ch", choices=sorted(VARIANTS))
    p.add_argument("--size", type=int, default=500, help="image side (a smooth synthetic test image)")
    p.add_argument("--patch", type=int, default=0, help="patch size (0: whole image)")
    p.add_argument("--stride", type=int, default=256)
    p.add_argument("--patch_batch", type=int, default=0, help="patches per forward in our loop (0: auto)")
    p.add_argument("--nfe", type=int, default=20, help="network evaluations (levels × steps)")
    p.add_argument("--ngf", type=int, default=32)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--ref_patch", type=int, default=300,
                   help="patch size of the reference loop (the paper: 300 for 500×500; 0: whole image)")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast in our loop")
    p.add_argument("--compile", action="store_true", help="torch.compile our network (compilation time reported apart)")
    p.add_argument("--channels_last", action="store_true")
    p.add_argument("--profile", action="store_true", help="print where one forward pass spends its time, fp32 and bf16")
    p.add_argument("--checkpoint", default=None, help="use these weights (else random init: speed only)")
    a = p.parse_args(argv)
    device = torch.device(a.device)
    torch.manual_seed(0)
    name, factor = VARIANTS[a.variant]
    n_levels = 10
    cfg = {"data": {"transform": name, "transform_factor": factor},
           "model": {"ngf": a.ngf, "num_classes": n_levels, "sigma_begin": 1.0, "sigma_end": 0.01}}
    transform = transform_from_config(cfg)
    model, sigmas = build_model(cfg, transform.channels)
    sigmas = sigmas.to(device)
    if a.checkpoint:
        model.load_state_dict({k: v.float() for k, v in torch.load(a.checkpoint, weights_only=True)["model"].items()})
    model = model.to(device).eval()
    n_steps = max(1, a.nfe // n_levels)
    nfe = n_levels * n_steps
    yy, xx = torch.meshgrid(torch.linspace(0, 6, a.size), torch.linspace(0, 6, a.size), indexing="ij")
    gt = torch.stack([torch.sin(xx) * 0.3 + 0.5, torch.cos(yy) * 0.3 + 0.5, torch.sin(xx + yy) * 0.3 + 0.5])[None]
    gt = gt.to(device)
    mask = bayer_mask("rggb", a.size, a.size, device)[None]
    side = (a.patch or a.size) // (2 if a.variant == "12ch" else 1)
    x1 = torch.rand(1, transform.channels, side, side, device=device)
    flops = forward_flops(model, x1, torch.zeros(1, dtype=torch.long, device=device))
    n_tiles = 1 if not a.patch else to_patches(gt, a.patch, a.stride)[0].shape[0]
    peak = matmul_gflops(device)
    print(f"device {device} ({torch.get_num_threads()} threads), variant {a.variant}, {a.size}×{a.size}, "
          f"patch {a.patch or 'none'} ({n_tiles} tile(s)), ngf {a.ngf}, NFE {nfe}")
    print(f"forward pass: {flops / 1e9:.1f} GFLOP per tile; float32 matmul here: {peak:.0f} GFLOP/s")

    if a.profile:
        profile_forward(model, x1, device)
    ref_patch = a.ref_patch if a.ref_patch and a.ref_patch < a.size else 0
    prior = Prior({"model": model.state_dict(), "step": 0}, cfg, device,
                  PriorOptions(bf16=a.bf16, compile=a.compile, channels_last=a.channels_last), transform)
    settings = SamplerSettings(step_lr=1e-5, n_steps_each=n_steps, patch_size=a.patch or None, patch_stride=a.stride,
                               pad_mode="circular", patch_batch=a.patch_batch or None)
    settings.validate()
    t0 = time.perf_counter()
    with torch.inference_mode():
        restore_image(prior, gt * mask, mask, settings.with_schedule(None, 1))  # warm-up (and compilation)
    sync(device)
    if a.compile:
        print(f"compilation and warm-up: {time.perf_counter() - t0:.0f} s")
    t0 = time.perf_counter()
    with torch.inference_mode():
        restore_image(prior, gt * mask, mask, settings)
    sync(device)
    ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    reference_loop(model, transform, gt, mask, sigmas, n_steps, 1e-5, ref_patch, a.stride, device)
    sync(device)
    ref = time.perf_counter() - t0
    achieved = flops * n_tiles * nfe / ours / 1e9
    print(f"ours:      {ours:8.2f} s per image, {nfe * n_tiles / ours:6.2f} tile evaluations/s, "
          f"{achieved:.0f} GFLOP/s")
    ref_tiles = 1 if not ref_patch else to_patches(gt, ref_patch, a.stride)[0].shape[0]
    print(f"reference: {ref:8.2f} s per image, {nfe * ref_tiles / ref:6.2f} tile evaluations/s "
          f"({ref_tiles} tile(s) of {ref_patch or a.size}², one at a time, metrics every step)")
    print(f"speedup_vs_reference={ref / ours:.2f} flop_utilisation={achieved / peak:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
