"""Owns the record of what this machine has compiled before. torch.compile keeps its generated kernels
in inductor's on-disk cache (TORCHINDUCTOR_CACHE_DIR, by default a folder in the system's temporary
directory), so compiling a network of the same architecture for the same input shapes again takes
seconds instead of one to two minutes; `test.compile: auto` reads this record to know which case a run is in."""
from __future__ import annotations

import logging
import os

import torch

from sampling.prior import Prior

log = logging.getLogger("hgm")

RECORD_NAME = "hgm_compiled.txt"  # one key per line, kept beside inductor's cache so both go together


def inductor_cache_dir() -> str | None:
    """The folder torch.compile caches its kernels in (created if needed), or None where that fails."""
    try:
        from torch._inductor.runtime.cache_dir_utils import cache_dir
        return cache_dir()
    except Exception:  # an inductor without that module, an unwritable folder: no record, compile as if cold
        return None


def compile_key(prior: Prior, shape: tuple[int, int], view: str) -> str:
    """What decides the compiled kernels of one run: torch, device, numerics, architecture, the image's
    (H, W) and how the network views it (whole, tiles, patches; `view`). Not the weights: they are inputs."""
    m = prior.cfg["model"]
    return (f"torch {torch.__version__} {prior.device.type} bf16={prior.bf16} channels_last={prior.channels_last} "
            f"channels={prior.transform.channels} ngf={m['ngf']} levels={m['num_classes']} "
            f"image={shape[0]}x{shape[1]} view={view}")


def _record_path() -> str | None:
    folder = inductor_cache_dir()
    return None if folder is None else os.path.join(folder, RECORD_NAME)


def _recorded(path: str) -> set[str]:
    if not os.path.isfile(path):
        return set()
    with open(path, encoding="utf-8") as f:
        return {line.rstrip("\n") for line in f}


def compiled_before(key: str) -> bool:
    """Whether a run on this machine compiled for `key` and its kernels are still in the cache."""
    path = _record_path()
    return path is not None and key in _recorded(path)


def remember_compiled(keys: list[str]) -> None:
    """Add `keys` to the record (after a run whose compiled network ran); failures only cost a cold guess."""
    path = _record_path()
    if path is None:
        return
    try:
        known = _recorded(path)
        new = [k for k in dict.fromkeys(keys) if k not in known]
        if new:
            with open(path, "a", encoding="utf-8") as f:
                f.writelines(k + "\n" for k in new)
    except OSError as e:
        log.debug("could not record the compiled shapes in %s: %s", path, e)
