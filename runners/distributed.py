"""Owns the torchrun / DistributedDataParallel plumbing: one process per device.

Plain `python main.py` is world size 1 and touches none of this: every helper
below is a no-op (or just calls its function) when no process group exists.

Launch (the `--` matters: without it torchrun's own parser reads main.py's
`--run` as an abbreviation of its `--run-path` and stops):

    torchrun --standalone --nproc_per_node=N -- main.py --runner train ... --run RUN

Collective waits are bounded by HGM_DIST_TIMEOUT seconds (default 300).
"""
from __future__ import annotations

import datetime
import os
from collections.abc import Callable
from typing import TypeVar

import torch
import torch.distributed as dist

from datasets.errors import HGMError

T = TypeVar("T")


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def init(device_arg: str) -> torch.device | None:
    """Start the process group when launched by torchrun; returns the device to use
    (None for a plain single-process run)."""
    if world_size() == 1:
        return None
    if not dist.is_available():
        raise HGMError("this PyTorch build has no torch.distributed; run without torchrun")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and not str(device_arg).startswith("cpu")
    if use_cuda:
        if local_rank >= torch.cuda.device_count():
            raise HGMError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} GPU(s) on this node; "
                           f"lower --nproc_per_node")
        torch.cuda.set_device(local_rank)
    timeout = datetime.timedelta(seconds=float(os.environ.get("HGM_DIST_TIMEOUT", "300")))
    dist.init_process_group("nccl" if use_cuda else "gloo", timeout=timeout)
    return torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")


def barrier() -> None:
    if initialized():
        dist.barrier()


def agree(fn: Callable[[], T]) -> T:
    """Run fn() on this rank, then make every rank agree on the outcome.

    If fn raised on any rank, every rank raises: the failing rank its own
    exception, the others an HGMError naming the first failing rank and its
    message. An error on one rank (say rank 0 refusing to overwrite a run)
    therefore never leaves the other ranks waiting in a later collective.
    Also a barrier. Without a process group this is just fn().
    """
    if not initialized():
        return fn()
    err, result = None, None
    try:
        result = fn()
    except Exception as e:  # re-raised below, after the other ranks have heard of it
        err = e
    msg = None if err is None else (str(err).splitlines()[0] if str(err) else type(err).__name__)
    outcomes = [None] * dist.get_world_size()
    dist.all_gather_object(outcomes, msg)
    if err is not None:
        raise err
    for r, m in enumerate(outcomes):
        if m is not None:
            raise HGMError(f"rank {r} failed: {m}")
    return result


def mean(value: torch.Tensor) -> float:
    """A scalar tensor averaged over all ranks, as a Python float (its .item() alone
    without a process group)."""
    if not initialized():
        return value.item()
    t = value.detach().float().reshape(1).clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.item() / dist.get_world_size()


def mean_and_any(value: torch.Tensor, flag: bool) -> tuple[float, bool]:
    """(`value` averaged over all ranks, whether `flag` is set on any rank), in one collective."""
    if not initialized():
        return value.item(), flag
    t = torch.stack([value.detach().float().reshape(()), torch.tensor(float(flag), device=value.device)])
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t[0].item() / dist.get_world_size(), bool(t[1].item() > 0)


def cleanup() -> None:
    if initialized():
        dist.destroy_process_group()
