#!/usr/bin/env python
"""Shrink a training checkpoint to a shippable prior: the weights (EMA if present
and asked for) in half precision, the config, the step and the losses. No
optimizer state. The result loads like any checkpoint (`test.checkpoint=...`).

    python scripts/export_prior.py run/logs/cpu_12ch/checkpoint_20000.pth pretrained/cpu_12ch.pth
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from runners.checkpoint import atomic_save, load_checkpoint, strip_module_prefix  # noqa: E402


def export(src, dst, use_ema=False):
    ckpt = load_checkpoint(src)
    weights = ckpt["ema"] if (use_ema and "ema" in ckpt) else ckpt["model"]
    out = {"model": {k: v.half() if v.is_floating_point() else v for k, v in strip_module_prefix(weights).items()},
           "config": ckpt["config"], "step": ckpt["step"],
           "train_seconds": ckpt.get("train_seconds"), "loss": ckpt.get("loss"), "val_loss": ckpt.get("val_loss"),
           "exported_from": os.path.basename(src), "weights": "ema" if weights is ckpt.get("ema") else "raw"}
    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    atomic_save(out, dst)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--ema", action="store_true", help="export the EMA weights")
    a = p.parse_args(argv)
    out = export(a.src, a.dst, a.ema)
    print(f"{a.dst}: step {out['step']}, {os.path.getsize(a.dst) / 1e6:.1f} MB, loss {out['loss']}, "
          f"validation loss {out['val_loss']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
