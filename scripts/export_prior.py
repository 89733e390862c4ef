#!/usr/bin/env python
"""Shrink a training checkpoint to a shippable prior: the weights (EMA if present
and asked for) in half precision, the config, the step and the losses. No
optimizer state. The result loads like any checkpoint (`test.checkpoint=...`).

    python scripts/export_prior.py run/logs/cpu_12ch/checkpoint_20000.pth pretrained/cpu_12ch.pth
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from datasets.transforms import transform_from_config  # noqa: E402
from runners.checkpoint import atomic_save, load_checkpoint, strip_module_prefix  # noqa: E402
from scripts.cli import one_line_errors  # noqa: E402


def export(src: str, dst: str, use_ema: bool = False) -> dict:
    ckpt = load_checkpoint(src)
    weights = ckpt["ema"] if (use_ema and "ema" in ckpt) else ckpt["model"]
    out = {"model": {k: v.half() if v.is_floating_point() else v for k, v in strip_module_prefix(weights).items()},
           "config": ckpt["config"], "step": ckpt["step"],
           "train_seconds": ckpt.get("train_seconds"), "loss": ckpt.get("loss"), "val_loss": ckpt.get("val_loss"),
           "val_step": ckpt.get("val_step"),
           "exported_from": os.path.basename(src), "weights": "ema" if weights is ckpt.get("ema") else "raw"}
    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    atomic_save(out, dst)
    return out


def model_card(out: dict, dst: str, command: str, machine: str, held_out: list[str]) -> None:
    cfg = out["config"]
    d, m, t = cfg["data"], cfg["model"], cfg["training"]
    hours = (out["train_seconds"] or 0) / 3600
    lines = [f"# {os.path.basename(dst)}", "",
             f"A {d['transform']} prior (HGM {transform_from_config(cfg).channels}-channel), CondRefineNetDilated, "
             f"trained by annealed DSM.", "",
             "| | |", "|---|---|",
             f"| data | `{d['path']}` (CBSD432), {d['val_images']} images held out (seed 0): {', '.join(held_out)} |",
             f"| crops | {d['image_size']}×{d['image_size']} colour pixels, 8-fold augmentation: {d['augment']}, "
             f"dequantised: {d['dequantize']} |",
             f"| network | ngf {m['ngf']}, {m['num_classes']} noise levels {m['sigma_begin']} → {m['sigma_end']} |",
             f"| optimiser | {cfg['optim']['optimizer']}, lr {cfg['optim']['lr']}, batch {t['batch_size']}, "
             f"bf16 autocast: {t['bf16']} |",
             f"| steps | {out['step']} |",
             f"| wall time | {hours:.2f} h |",
             f"| machine | {machine} |",
             f"| final training loss | {out['loss']:.2f} (one batch) |" if out["loss"] is not None else None,
             f"| validation loss | {out['val_loss']:.2f} at step {out['val_step'] or '(last validation)'} "
             f"(fixed held-out crops, levels and noise) |"
             if out["val_loss"] is not None else None,
             f"| weights | {out['weights']} weights, float16 ({os.path.getsize(dst) / 1e6:.1f} MB) |", "",
             "Trained with:", "", "```bash", command, "```", "",
             f"Exported with `python scripts/export_prior.py <run>/logs/<doc>/{out['exported_from']} {dst}`."]
    with open(os.path.splitext(dst)[0] + ".md", "w") as f:
        f.write("\n".join(line for line in lines if line is not None) + "\n")


@one_line_errors
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--ema", action="store_true", help="export the EMA weights")
    p.add_argument("--card", action="store_true", help="also write a model card next to DST (.md)")
    p.add_argument("--command", default="(not recorded)", help="the training command, for the card")
    p.add_argument("--machine", default="(not recorded)", help="where it trained, for the card")
    a = p.parse_args(argv)
    out = export(a.src, a.dst, a.ema)
    if a.card:
        from datasets.folder import held_out_paths
        d = out["config"]["data"]
        held = [os.path.basename(x) for x in held_out_paths(d["path"], d["image_size"], d["val_images"], d["preload"])]
        model_card(out, a.dst, a.command, a.machine, held)
    print(f"{a.dst}: step {out['step']}, {os.path.getsize(a.dst) / 1e6:.1f} MB, loss {out['loss']}, "
          f"validation loss {out['val_loss']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
