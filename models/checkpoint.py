"""Owns checkpoints: plain dicts written atomically with a checksum of their tensors, read with
weights_only=True (the checksum verified when present, NaN weights refused), and checked against a config.

A checkpoint holds `model`, `optimizer`, `step`, `config` (the resolved config
as a plain dict), optionally `ema` and `rng`. Before any work, the config a
checkpoint was trained with is compared with the one asked for.
"""
from __future__ import annotations

import glob
import hashlib
import logging
import os
import re
import zipfile

import torch

from datasets.errors import HGMError
from datasets.files import atomic_write
from datasets.transforms import Transform, transform_from_config

log = logging.getLogger("hgm")


CHECKSUM_KEY = "tensor_sha256"


def tensor_checksum(obj: object) -> str:
    """SHA-256 over every tensor of a checkpoint (names, dtypes, shapes and bytes, in a fixed order),
    the checksum entry itself left out: a flipped bit in any weight or optimizer state changes it."""
    h = hashlib.sha256()

    def walk(node, name):
        if isinstance(node, torch.Tensor):
            t = node.detach().cpu().contiguous().reshape(-1)
            h.update(f"{name}:{t.dtype}:{tuple(node.shape)};".encode())
            if t.numel():
                h.update(t.view(torch.uint8).numpy().tobytes())
        elif isinstance(node, dict):
            for k in sorted(node, key=str):
                if not (name == "" and k == CHECKSUM_KEY):
                    walk(node[k], f"{name}/{k}")
        elif isinstance(node, (list, tuple)):
            for i, v in enumerate(node):
                walk(v, f"{name}/{i}")
    walk(obj, "")
    return h.hexdigest()


def atomic_save(obj: dict, path: str) -> None:
    """torch.save `obj` with the checksum of its tensors (verified by load_checkpoint), whole or not at all."""
    obj = {**obj, CHECKSUM_KEY: tensor_checksum(obj)}
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def strip_module_prefix(state: dict) -> dict:
    """DataParallel/DDP/compile wrappers prefix keys; checkpoints never carry them."""
    out = {}
    for k, v in state.items():
        for prefix in ("module.", "_orig_mod."):
            while k.startswith(prefix):
                k = k[len(prefix):]
        out[k] = v
    return out


def save_checkpoint(state: dict, log_dir: str, step: int) -> None:
    """checkpoint.pth first: a kill between the two files never leaves a run that cannot be resumed."""
    os.makedirs(log_dir, exist_ok=True)
    atomic_save(state, os.path.join(log_dir, "checkpoint.pth"))
    atomic_save(state, os.path.join(log_dir, f"checkpoint_{step}.pth"))


def _is_torch_file(path: str) -> bool:
    """A zip archive (torch.save since 1.6) or a legacy pickle (magic number first)."""
    if zipfile.is_zipfile(path):
        return True
    with open(path, "rb") as f:
        return f.read(2) in (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")


REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def resolve_checkpoint_path(path: str) -> str:
    """`path` as given, or, when that does not exist and it is relative, the same path under the
    repository root: so configs can name the bundled priors (`pretrained/...`) from any folder."""
    if os.path.exists(path) or os.path.isabs(path):
        return path
    bundled = os.path.join(REPO_ROOT, path)
    return bundled if os.path.exists(bundled) else path


def load_checkpoint(path: str, map_location: torch.device | str = "cpu") -> dict:
    """A checkpoint read with weights_only=True (never unpickling code); errors never suggest unsafe loading."""
    path = resolve_checkpoint_path(path)
    if not os.path.isfile(path):
        raise HGMError(f"no checkpoint at {path}")
    if not _is_torch_file(path):
        raise HGMError(f"{path} is not a checkpoint (not a file written by torch.save)")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "weights_only" in str(e) or "Unsupported global" in str(e) or "pickle" in str(e).lower():
            first = "it holds objects other than tensors and plain values, which hgm does not load"
        raise HGMError(f"cannot read checkpoint {path}: {first}") from e
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise HGMError(f"{path} is not an hgm checkpoint (no 'model' entry)")
    verify_checksum(ckpt, path)
    check_finite_weights(ckpt, path)
    return ckpt


def verify_checksum(ckpt: dict, path: str) -> None:
    """A checkpoint whose tensors no longer match the checksum saved with them is refused; older files
    (and the bundled priors exported before checksums) have none and load as they are."""
    saved = ckpt.get(CHECKSUM_KEY)
    if saved is None:
        log.debug("%s carries no checksum (written before checkpoints had one); not verified", path)
        return
    if tensor_checksum(ckpt) != saved:
        raise HGMError(f"checkpoint {path} is damaged: its tensors do not match the checksum saved with them "
                       f"(a changed or corrupted file); use another copy")


def check_finite_weights(ckpt: dict, path: str) -> None:
    """NaN or infinite weights can only give NaN scores: refused here, naming the first such tensor, rather
    than blamed on the sampler's step size later."""
    for part in ("model", "ema"):
        for name, t in (ckpt.get(part) or {}).items():
            if isinstance(t, torch.Tensor) and t.is_floating_point() and not bool(torch.isfinite(t).all()):
                raise HGMError(f"checkpoint {path} holds NaN or infinite weights ({part} {name}); it cannot "
                               f"be used (the training run that wrote it diverged?)")


def existing_checkpoints(log_dir: str) -> list[str]:
    def step(p):
        m = re.search(r"checkpoint_(\d+)\.pth$", p)
        return int(m.group(1)) if m else -1
    found = glob.glob(os.path.join(log_dir, "checkpoint*.pth"))
    return sorted(found, key=step)


def model_signature(cfg: dict, transform: Transform | None = None) -> dict:
    """What must agree between a checkpoint and the config that loads it (`transform`: the
    config's, when the caller has built it already)."""
    t = transform or transform_from_config(cfg)
    m = cfg["model"]
    name = t.name if t.name == "identity" else f"{t.name}(factor {cfg['data']['transform_factor']})"
    return {"transform": name, "channels": t.channels,
            "ngf": m["ngf"], "num_classes": m["num_classes"],
            "sigma_begin": float(m["sigma_begin"]), "sigma_end": float(m["sigma_end"])}


# The keys that define a prior: restoration reads them from the checkpoint, never from the config.
MODEL_KEYS = ("data.transform", "data.transform_factor", "model.ngf", "model.num_classes",
              "model.sigma_begin", "model.sigma_end")


def _get(cfg: dict, key: str):
    section, name = key.split(".")
    return cfg[section][name]


def adopt_model_keys(cfg: dict, source: dict) -> dict:
    """Set MODEL_KEYS of `cfg` (in place) to those of `source`; returns cfg."""
    for key in MODEL_KEYS:
        section, name = key.split(".")
        cfg[section][name] = source[section][name]
    return cfg


def prior_config(ckpt: dict, path: str, base: dict) -> dict:
    """`base` (a resolved config) with the model keys of the config the checkpoint was trained with:
    the checkpoint is the source of truth for its architecture, transform and noise levels."""
    import copy
    saved = ckpt.get("config")
    if not isinstance(saved, dict):
        raise HGMError(f"{path} has no config; cannot tell its transform and noise levels")
    try:
        cfg = adopt_model_keys(copy.deepcopy(base), saved)
        transform_from_config(cfg)
    except (KeyError, TypeError, HGMError) as e:
        raise HGMError(f"{path} holds a config this version cannot read ({e})") from e
    return cfg


def check_requested(cfg: dict, requested: dict, path: str) -> None:
    """Refuse a model key the user set (`requested`, flat) that disagrees with the prior's `cfg`."""
    from datasets.transforms import canonical_name
    for key in MODEL_KEYS:
        if key not in requested or requested[key] is None:
            continue
        want, have = requested[key], _get(cfg, key)
        if key == "data.transform":
            same = canonical_name(str(want)) == canonical_name(str(have))
        elif key == "data.transform_factor":
            same = canonical_name(cfg["data"]["transform"]) == "identity" or int(want) == int(have)
        elif isinstance(have, float) or isinstance(want, float):
            same = abs(float(want) - float(have)) <= 1e-9 * max(abs(float(have)), 1e-12)
        else:
            same = want == have
        if not same:
            raise HGMError(f"the config or runner name asks for {key}={want!r}, but the prior {path} has "
                           f"{key}={have!r}; restoration reads the model from the checkpoint: drop the setting "
                           f"or use a prior that matches it")


# What a warm start (new run from other weights) needs to agree: the architecture; the noise range may differ.
ARCHITECTURE = ("transform", "channels", "ngf", "num_classes")


def check_compatible(ckpt: dict, cfg: dict, path: str, transform: Transform | None = None,
                     keys: tuple[str, ...] | None = None, what: str = "checkpoint") -> dict:
    """Raise, naming both values, if the checkpoint's model differs from the config's in `keys` of
    `model_signature` (default: all of them); `what` names the checkpoint in the message. Returns
    the checkpoint's signature."""
    saved_cfg = ckpt.get("config")
    if not isinstance(saved_cfg, dict):
        raise HGMError(f"{what} {path} has no config; cannot check it against the run's config")
    try:
        have = model_signature(saved_cfg)
    except (KeyError, TypeError, HGMError) as e:
        raise HGMError(f"{what} {path} holds a config this version cannot read ({e})") from e
    want = model_signature(cfg, transform)
    diffs = [f"{k}: checkpoint {have[k]}, config {want[k]}" for k in (keys or want) if have[k] != want[k]]
    if diffs:
        raise HGMError(f"{what} {path} does not match the config: " + "; ".join(diffs))
    return have
