"""DistributedDataParallel training: two gloo processes on the CPU, launched by torchrun.

Every launch uses the documented command (README, "Training on several GPUs"):

    torchrun --standalone --nproc_per_node=2 -- main.py --runner ... --run RUN ...

as `python -m torch.distributed.run`, the same program as `torchrun`, so the
test does not depend on PATH. The `--` keeps torchrun's own parser from reading
main.py's `--run` as an abbreviation of its `--run-path`. Two launches run
tests/ddp_spy.py instead of main.py: the same main(), with the training step
wrapped from the outside to record each rank's weights or to kill a rank.
"""
import glob
import os
import shutil
import subprocess
import sys
import time

import pytest
import torch
import torch.distributed as dist

from conftest import REPO, subprocess_env, write_rgb_images

pytestmark = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                                reason="torch.distributed with gloo is not available")

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "--"]
TIMEOUT = 150  # seconds for one launch; a hang fails the test instead of blocking the suite


def launch(cmd, env_extra=None):
    env = subprocess_env()
    for k in list(env):
        if k.startswith("HGM_TEST_") or k.startswith("TORCHELASTIC_"):
            env.pop(k)
    env["HGM_DIST_TIMEOUT"] = "60"  # bounded collective waits, should anything go wrong
    env.update(env_extra or {})
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    return proc.returncode, proc.stdout + proc.stderr, time.time() - t0


SPY = os.path.join("tests", "ddp_spy.py")


def train_args(data, run, doc, *sets, program="main.py"):
    return [program, "--runner", "train_6ch_rgbrgb", "--config", "tiny.yml", "--doc", doc, "--run", run,
            "--device", "cpu", "--set", f"data.path={data}", "training.snapshot_freq=2", *sets]


def torchrun(data, run, doc, *sets, resume=False, env=None):
    """The documented torchrun command; with `env` (HGM_TEST_* settings) through tests/ddp_spy.py."""
    extra = ["--resume_training"] if resume else []
    return launch(TORCHRUN + train_args(data, run, doc, *sets, program=SPY if env else "main.py") + extra, env)


def single(data, run, doc, *sets, resume=False):
    extra = ["--resume_training"] if resume else []
    return launch([sys.executable] + train_args(data, run, doc, *sets) + extra)


def ckpt_step(run, doc, name="checkpoint.pth"):
    return torch.load(os.path.join(run, "logs", doc, name), map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def ddp(tmp_path_factory):
    """One two-process run of 4 steps; what it wrote is recorded right after it ends."""
    root = tmp_path_factory.mktemp("ddp")
    data = str(root / "images")
    write_rgb_images(data, n=4)
    run, dump = str(root / "run"), str(root / "dump")
    rc, out, seconds = torchrun(data, run, "d", "training.n_iters=4", env={"HGM_TEST_DUMP_PARAMS": dump})
    assert rc == 0, out
    files = sorted(os.listdir(os.path.join(run, "logs", "d")))
    events = glob.glob(os.path.join(run, "tensorboard", "d", "*"))
    return {"data": data, "run": run, "dump": dump, "files": files, "events": events, "out": out}


def test_two_ranks_train_the_same_model_and_rank_0_alone_writes(ddp):
    assert ddp["files"] == ["checkpoint.pth", "checkpoint_2.pth", "checkpoint_4.pth", "config.yml", "stdout.txt"]
    assert len(ddp["events"]) == 1  # one tensorboard writer
    r0 = torch.load(os.path.join(ddp["dump"], "rank0.pt"), weights_only=True)
    r1 = torch.load(os.path.join(ddp["dump"], "rank1.pt"), weights_only=True)
    assert r0["model"].keys() == r1["model"].keys()
    for k in r0["model"]:
        assert torch.equal(r0["model"][k], r1["model"][k]), k
    # each rank gets half the global batch of 4, and its own crops
    assert r0["first_batch"].shape == r1["first_batch"].shape == (2, 3, 16, 16)
    assert not torch.equal(r0["first_batch"], r1["first_batch"])

    ck = ckpt_step(ddp["run"], "d")
    assert ck["step"] == 4 and ck["world_size"] == 2
    assert not any(k.startswith("module.") for k in ck["model"])  # the format of a single-process checkpoint
    for k in r0["model"]:
        assert torch.equal(ck["model"][k], r0["model"][k]), k
    with open(os.path.join(ddp["run"], "logs", "d", "stdout.txt")) as f:
        log = f.read()
    assert log.count("done: step 4") == 1 and "validation loss" in log  # validation ran on rank 0, no hang


def test_resume_across_world_sizes(ddp, tmp_path):
    run = str(tmp_path / "run")
    shutil.copytree(ddp["run"], run)
    # the two-process checkpoint continued by one process ...
    rc, out, _ = single(ddp["data"], run, "d", "training.n_iters=6", resume=True)
    assert rc == 0, out
    assert "resumed from step 4" in out
    assert ckpt_step(run, "d")["step"] == 6 and ckpt_step(run, "d")["world_size"] == 1
    # ... and that one continued by two processes (--resume_training under torchrun)
    rc, out, _ = torchrun(ddp["data"], run, "d", "training.n_iters=8", resume=True)
    assert rc == 0, out
    assert ckpt_step(run, "d")["step"] == 8 and ckpt_step(run, "d")["world_size"] == 2
    assert sorted(os.listdir(os.path.join(run, "logs", "d"))) == [
        "checkpoint.pth", "checkpoint_2.pth", "checkpoint_4.pth", "checkpoint_6.pth", "checkpoint_8.pth",
        "config.yml", "stdout.txt"]


def test_every_rank_refuses_to_overwrite_a_run(ddp, tmp_path):
    run = str(tmp_path / "run")
    shutil.copytree(ddp["run"], run)
    before = {p: os.path.getmtime(p) for p in glob.glob(os.path.join(run, "logs", "d", "*"))}
    rc, out, seconds = torchrun(ddp["data"], run, "d", "training.n_iters=4")
    assert rc != 0
    assert out.count("already holds 3 checkpoint file(s)") == 2  # rank 0 found it, rank 1 heard of it
    assert "error: rank 0 failed:" in out
    assert {p: os.path.getmtime(p) for p in glob.glob(os.path.join(run, "logs", "d", "*"))} == before
    assert seconds < 60  # no rank waited for the collective timeout


def test_global_batch_must_divide_by_the_world_size(tmp_path):
    data = str(tmp_path / "images")
    write_rgb_images(data, n=4)
    run = str(tmp_path / "run")
    rc, out, _ = torchrun(data, run, "odd", "training.n_iters=4", "training.batch_size=3")
    assert rc != 0
    assert "error: training.batch_size=3 (the global batch) does not divide by the world size 2" in out
    assert not os.path.exists(os.path.join(run, "logs", "odd"))


def test_a_dying_rank_stops_the_others(tmp_path):
    data = str(tmp_path / "images")
    write_rgb_images(data, n=4)
    run = str(tmp_path / "run")
    rc, out, seconds = torchrun(data, run, "k", "training.n_iters=6", env={"HGM_TEST_KILL_RANK": "1"})
    assert rc != 0
    assert seconds < 120
    assert "done: step" not in out
