"""torchrun / DistributedDataParallel plumbing: one process per device.

Plain `python main.py` is world size 1 and touches none of this.
"""
import datetime
import os

import torch
import torch.distributed as dist


def world_size():
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank():
    return int(os.environ.get("RANK", "0"))


def is_main():
    return rank() == 0


def init(device_arg):
    """Start the process group when launched by torchrun; returns the device to use."""
    if world_size() == 1:
        return None
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and not str(device_arg).startswith("cpu")
    if use_cuda:
        torch.cuda.set_device(local_rank)
    timeout = datetime.timedelta(seconds=float(os.environ.get("HGM_DIST_TIMEOUT", "300")))
    dist.init_process_group("nccl" if use_cuda else "gloo", timeout=timeout)
    return torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")


def barrier():
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def cleanup():
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
