"""Test-only launcher for tests/test_distributed.py: main.py's main() with `runners.train.train_step`
wrapped from the outside, so the test can see what each torchrun rank did.

    torchrun --standalone --nproc_per_node=2 -- tests/ddp_spy.py --runner ... (main.py's arguments)

HGM_TEST_DUMP_PARAMS=DIR  each rank saves {"model": its final state_dict, "first_batch": its first
                          batch of crops} to DIR/rank<r>.pt
HGM_TEST_KILL_RANK=R      rank R exits abruptly (os._exit(1)) right after its second step
"""
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import torch

import main as hgm
from runners import distributed, train


def spy_on_training(kill_rank):
    """Wrap train_step; returns what it saw: the trainer, the first batch, the number of steps."""
    real, seen = train.train_step, {"trainer": None, "first_batch": None, "steps": 0}

    def spy(t, x):
        if seen["first_batch"] is None:
            seen["first_batch"] = x.clone()
        seen["trainer"] = t
        loss = real(t, x)
        seen["steps"] += 1
        if kill_rank is not None and seen["steps"] == 2 and distributed.rank() == kill_rank:
            os._exit(1)  # a rank that dies without a word
        return loss

    train.train_step = spy
    return seen


def main():
    dump_dir, kill = os.environ.get("HGM_TEST_DUMP_PARAMS"), os.environ.get("HGM_TEST_KILL_RANK")
    seen = spy_on_training(None if kill is None else int(kill))
    rc = hgm.main(sys.argv[1:])
    if dump_dir and rc == 0:
        os.makedirs(dump_dir, exist_ok=True)
        torch.save({"model": seen["trainer"].model.state_dict(), "first_batch": seen["first_batch"]},
                   os.path.join(dump_dir, f"rank{distributed.rank()}.pt"))
    return rc


if __name__ == "__main__":
    sys.exit(main())
