#!/usr/bin/env python
"""Shrink a training checkpoint to a shippable prior: the weights (EMA if present
and asked for) in half precision, the config, the step and the losses. No
optimizer state. The result loads like any checkpoint (`test.checkpoint=...`).

    python scripts/export_prior.py run/logs/my_12ch/checkpoint.pth pretrained/my_12ch.pth --card --data_name CBSD432
"""
import argparse
import copy
import hashlib
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from datasets.errors import HGMError
from datasets.transforms import transform_from_config
from models.checkpoint import atomic_save, load_checkpoint, strip_module_prefix
from scripts.cli import one_line_errors

# config keys that name files of the machine a prior was trained on: a shipped prior keeps none
PATH_KEYS = ("data.path", "training.init_from", "test.data_path", "test.checkpoint", "test.mask",
             "test.progressive.prev_doc", "test.progressive.prev_folder")


def without_paths(cfg: dict) -> dict:
    """A copy of `cfg` whose file and folder names are null (test.mask: 'random' unless it was a generator)."""
    out = copy.deepcopy(cfg)
    for key in PATH_KEYS:
        *sections, name = key.split(".")
        node = out
        for section in sections:
            node = node.get(section) if isinstance(node, dict) else None
        if not isinstance(node, dict) or name not in node:
            continue
        if key == "test.mask":
            node[name] = node[name] if node[name] in ("random", "box") else "random"
        else:
            node[name] = None
    return out


def last_parts(path: str | None, n: int = 2) -> str | None:
    """The last `n` parts of a path (a name that says what it was without saying where it was)."""
    return None if not path else "/".join(os.path.normpath(str(path)).split(os.sep)[-n:])


def export(src: str, dst: str, use_ema: bool = False) -> dict:
    """Write DST: the weights in half precision and the config without paths of this machine (the
    training data's and warm start's names are kept as `data_name` and `init_from`)."""
    if os.path.exists(dst) and os.path.samefile(src, dst):
        raise HGMError(f"{dst} is the checkpoint being exported; name another file (it would be replaced by "
                       f"the half-precision prior, without optimizer state)")
    ckpt = load_checkpoint(src)
    weights = ckpt["ema"] if (use_ema and "ema" in ckpt) else ckpt["model"]
    cfg = ckpt["config"]
    out = {"model": {k: v.half() if v.is_floating_point() else v for k, v in strip_module_prefix(weights).items()},
           "config": without_paths(cfg), "step": ckpt["step"],
           "train_seconds": ckpt.get("train_seconds"), "loss": ckpt.get("loss"), "val_loss": ckpt.get("val_loss"),
           "val_step": ckpt.get("val_step"),
           "data_name": ckpt.get("data_name") or last_parts(cfg.get("data", {}).get("path"), 1),
           "init_from": ckpt.get("init_from") or last_parts(cfg.get("training", {}).get("init_from")),
           "exported_from": ckpt.get("exported_from") or os.path.basename(src),
           "weights": ckpt.get("weights") or ("ema" if weights is ckpt.get("ema") else "raw")}
    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    atomic_save(out, dst)
    return out


def article(word: str) -> str:
    """'an' before a vowel sound of these names (identity, 12ch are read "an identity", "a twelve"), else 'a'."""
    return "an" if word[:1].lower() in "aeio" else "a"


def sha256_of(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


BSDS_LICENCE = ("Berkeley Segmentation Data Set (BSDS300/500) images: for non-commercial research and "
                "educational use only; the weights inherit that restriction")
LIMITATIONS = [
    "Trained on natural colour photographs at one crop size; expect worse results on other image kinds "
    "(medical, text, synthetic, raw sensor data with noise) and at noise levels outside its range.",
    "Restoration with it assumes noise-free measurements (exact data consistency); it was not trained "
    "or evaluated for noisy mosaics or noisy known pixels.",
    "Half-precision weights: load them with this code (`test.checkpoint=...`); results may differ in the "
    "last bits from the float32 checkpoint.",
]


def model_card(out: dict, dst: str, command: str, machine: str, held_out: list[str], data_name: str | None = None,
               data_licence: str | None = None, evaluation: list[str] = ()) -> str:
    """Write DST's model card (DST with .md); returns its path."""
    cfg = out["config"]
    d, m, t = cfg["data"], cfg["model"], cfg["training"]
    hours = (out["train_seconds"] or 0) / 3600
    rel = os.path.relpath(dst)
    shown = os.path.basename(dst) if rel.startswith("..") else rel  # no machine-specific path in the card
    name = data_name or out.get("data_name") or "(not recorded)"
    if data_licence is None:
        data_licence = BSDS_LICENCE if any(k in name.lower() for k in ("bsd", "berkeley")) else "(not recorded)"
    lines = [f"# {os.path.basename(dst)}", "",
             f"{article(d['transform']).capitalize()} {d['transform']} prior (HGM "
             f"{transform_from_config(cfg).channels}-channel), CondRefineNetDilated, trained by annealed DSM.", "",
             "| | |", "|---|---|",
             f"| data | {name}, {d['val_images']} images held out (seed 0): {', '.join(held_out) or '(none)'} |",
             f"| data licence | {data_licence} |",
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
             f"| weights | {out['weights']} weights, float16 ({os.path.getsize(dst) / 1e6:.1f} MB) |",
             f"| sha256 | `{sha256_of(dst)}` |", ""]
    if evaluation:
        lines += ["## Evaluation", "", "| what | result |", "|---|---|"]
        lines += ["| {} | {} |".format(*(e.split("=", 1) if "=" in e else (e, ""))) for e in evaluation] + [""]
    lines += ["## Limitations", ""] + [f"- {x}" for x in LIMITATIONS] + [""]
    lines += ["Trained with:", "", "```bash", command, "```", "",
              f"Exported with `python scripts/export_prior.py <run>/logs/<doc>/{out['exported_from']} {shown}`."]
    path = os.path.splitext(dst)[0] + ".md"
    with open(path, "w") as f:
        f.write("\n".join(line for line in lines if line is not None) + "\n")
    return path


@one_line_errors
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--ema", action="store_true", help="export the EMA weights")
    p.add_argument("--card", action="store_true", help="also write a model card next to DST (.md)")
    p.add_argument("--command", default="(not recorded)", help="the training command, for the card")
    p.add_argument("--machine", default="(not recorded)", help="where it trained, for the card")
    p.add_argument("--data_name", default=None,
                   help="the training set's name for the card (default: the data folder's name), e.g. CBSD432")
    p.add_argument("--data_licence", default=None,
                   help="the training data's licence for the card (default: the BSDS research-use terms when "
                        "the name says BSD/Berkeley, else '(not recorded)')")
    p.add_argument("--eval", dest="evaluation", action="append", default=[], metavar="WHAT=RESULT",
                   help="an evaluation result for the card, e.g. 'Kodak24 demosaicking, 4 crops=35.97 dB' "
                        "(repeatable; none: no evaluation section)")
    a = p.parse_args(argv)
    d = load_checkpoint(a.src)["config"]["data"]  # with the data path, to list the held-out images
    out = export(a.src, a.dst, a.ema)
    if a.card:
        from datasets.training_data import held_out_paths
        try:
            held = [os.path.basename(x)
                    for x in held_out_paths(d["path"], d["image_size"], d["val_images"], d["preload"])]
        except HGMError:  # the training data is not on this machine
            held = [f"(not listed: {d['path']} is not readable here)"]
        model_card(out, a.dst, a.command, a.machine, held, a.data_name, a.data_licence, a.evaluation)
    print(f"{a.dst}: step {out['step']}, {os.path.getsize(a.dst) / 1e6:.1f} MB, loss {out['loss']}, "
          f"validation loss {out['val_loss']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
