"""Owns checkpoints: plain dicts written atomically, read with weights_only=True, and checked against a config.

A checkpoint holds `model`, `optimizer`, `step`, `config` (the resolved config
as a plain dict), optionally `ema` and `rng`. Before any work, the config a
checkpoint was trained with is compared with the one asked for.
"""
from __future__ import annotations

import glob
import os
import re
import zipfile

import torch

from datasets.errors import HGMError
from datasets.transforms import Transform, transform_from_config


def atomic_save(obj: dict, path: str) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    torch.save(obj, tmp)
    os.replace(tmp, path)


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


def remove_stale_temporaries(log_dir: str) -> list[str]:
    """Remove the `*.tmp-PID` files a killed process left (those of a running process are kept)."""
    removed = []
    for path in glob.glob(os.path.join(glob.escape(log_dir), "*.pth.tmp-*")):
        pid = path.rsplit("-", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and _alive(int(pid)):
            continue
        try:
            os.remove(path)
            removed.append(path)
        except OSError:
            pass
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, another user's
        return True
    return True


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
    return ckpt


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


def prior_config(ckpt: dict, path: str, base: dict) -> dict:
    """`base` (a resolved config) with the model keys of the config the checkpoint was trained with:
    the checkpoint is the source of truth for its architecture, transform and noise levels."""
    import copy
    saved = ckpt.get("config")
    if not isinstance(saved, dict):
        raise HGMError(f"{path} has no config; cannot tell its transform and noise levels")
    cfg = copy.deepcopy(base)
    try:
        for key in MODEL_KEYS:
            section, name = key.split(".")
            cfg[section][name] = _get(saved, key)
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


def check_compatible(ckpt: dict, cfg: dict, path: str, transform: Transform | None = None) -> None:
    """Raise, naming both values, if the checkpoint's model differs from the config's."""
    saved_cfg = ckpt.get("config")
    if not isinstance(saved_cfg, dict):
        raise HGMError(f"{path} has no config; cannot check it against the run's config")
    try:
        have = model_signature(saved_cfg)
    except (KeyError, TypeError, HGMError) as e:
        raise HGMError(f"{path} holds a config this version cannot read ({e})") from e
    want = model_signature(cfg, transform)
    diffs = [f"{k}: checkpoint {have[k]}, config {want[k]}" for k in want if have[k] != want[k]]
    if diffs:
        raise HGMError(f"checkpoint {path} does not match the config: " + "; ".join(diffs))
