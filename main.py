#!/usr/bin/env python
"""hgm's command line: flags, logging, seed, device, dispatch by --runner, exit codes.

hgm: score-based colour image restoration with high-dimensional assistance.

    python main.py --runner train_6ch_rgbrgb --config train_demosaic.yml --doc rgbrgb
    python main.py --runner Test_6ch_demoscaicking_copy --config demosaic_6ch.yml --doc rgbrgb --test -o out

Exit codes: 0 success, 1 error (one line on stderr; the traceback with
--verbose debug), 2 bad command line, 130 interrupted.
"""
from __future__ import annotations

import argparse
import logging
import random
import sys
from typing import TYPE_CHECKING

from runners import signals  # the standard library only: torch is not loaded yet

if TYPE_CHECKING:
    import torch

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
          "error": logging.ERROR, "critical": logging.CRITICAL}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from runners.registry import RUNNERS
    p = argparse.ArgumentParser(
        description="HGM: train score priors on lifted colour images and restore images "
                    "(demosaicking, inpainting) by annealed Langevin dynamics with data consistency.",
        epilog="runners: " + ", ".join(RUNNERS))
    p.add_argument("--runner", required=True, help="what to run (case-insensitive); see the list below")
    p.add_argument("--config", required=True,
                   help="YAML config: a path, or a file name under configs/ (e.g. tiny.yml)")
    p.add_argument("--doc", default=None,
                   help="run name: files go to <run>/logs/<doc> and <run>/tensorboard/<doc> (required for "
                        "training; for restoration only when test.checkpoint does not name the prior)")
    p.add_argument("--run", default="run", help="folder that holds all runs (default: run)")
    p.add_argument("--test", action="store_true",
                   help="restore (test) mode; accepted for the paper's Test_* runners, which imply it")
    p.add_argument("-o", "-i", "--image_folder", default=None,
                   help="output folder of a restoration (default: <run>/restore/<doc>)")
    p.add_argument("--resume_training", action="store_true",
                   help="continue training from <run>/logs/<doc>/checkpoint.pth")
    p.add_argument("--overwrite", action="store_true",
                   help="start a new training run over an existing --doc (the old one is renamed, not deleted)")
    p.add_argument("--seed", type=int, default=1234, help="random seed (default: 1234)")
    p.add_argument("--verbose", default="info", choices=sorted(LEVELS),
                   help="log level; 'debug' also prints tracebacks (default: info)")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="no progress bars (the same as the environment variable TQDM_DISABLE=1)")
    p.add_argument("--comment", default="", help="free text stored in the run's log and on top of its config.yml")
    p.add_argument("--model", default="ncsn", choices=["ncsn"], help="accepted for compatibility; only ncsn exists")
    p.add_argument("--set", dest="overrides", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="override config values, e.g. --set training.n_iters=20 data.path=imgs (YAML-typed)")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="CPU threads for torch (default: OMP_NUM_THREADS if set, else one per core); with other "
                        "jobs on the machine, give each its share of the cores")
    return p.parse_args(argv)


# Set before torch is imported (main() does it first; a value already in the environment wins), and only
# when other processes are running on the CPUs at start-up. PyTorch's OpenMP threads spin at the end of
# every parallel region; on a machine of its own that is what makes the network fast (on 2 cores a compiled
# 256×256 inpainting ran 1.6–2.3× slower with them sleeping instead), but with another process on the same
# cores the spinning threads take the cores the other one's threads wait for, and both collapse (two
# restorations side by side, 2 threads each on 2 cores: 4.9× slower each, where sharing costs 2×).
THREAD_ENVIRONMENT = {"OMP_WAIT_POLICY": "PASSIVE", "KMP_BLOCKTIME": "0"}
THREAD_POLICY = ""  # what configure_threads_environment chose, for the start-up line


def others_running(samples: list[str] | None = None) -> bool:
    """Whether other processes are running on the CPUs now: in at least 3 of 5 looks 10 ms apart at
    /proc/loadavg, whose "running/total" field counts this process too (Linux; elsewhere False).
    `samples`: those lines, for tests."""
    import time
    if samples is None:
        samples = []
        try:
            for _ in range(5):
                with open("/proc/loadavg", encoding="ascii") as f:
                    samples.append(f.read())
                time.sleep(0.01)
        except OSError:
            return False
    busy = 0
    for line in samples:
        fields = line.split()
        running = fields[3].split("/")[0] if len(fields) > 3 else ""
        busy += running.isdigit() and int(running) > 1
    return busy >= 3


def configure_threads_environment() -> str:
    """THREAD_ENVIRONMENT, where other processes are running (`others_running`) and the environment does
    not set those variables already; returns which policy the OpenMP threads will follow, for the log."""
    import os
    if "OMP_WAIT_POLICY" in os.environ:
        return f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']} (set in the environment)"
    if not others_running():
        return "spinning between parallel regions (no other process was running)"
    for key, value in THREAD_ENVIRONMENT.items():
        os.environ.setdefault(key, value)
    return "sleeping between parallel regions (OMP_WAIT_POLICY=PASSIVE: other processes were running)"


def set_threads(n: int | None) -> None:
    """--threads N: torch's intra-op threads (OpenMP, MKL)."""
    if n is None:
        return
    from datasets.errors import HGMError
    if n < 1:
        raise HGMError(f"--threads {n}: give at least 1")
    import torch
    torch.set_num_threads(n)


def setup_logging(level: int) -> logging.Logger:
    """The 'hgm' logger on stderr (main() routes it through tqdm.write while it runs, so log lines
    do not break the progress bars)."""
    log = logging.getLogger("hgm")
    log.setLevel(level)
    log.propagate = False
    ours = [h for h in log.handlers if getattr(h, "hgm_console", False)]
    if ours:  # main() called again in this process: write to today's stderr, not a closed one
        ours[0].stream = sys.stderr  # not setStream(): it flushes the old stream, which may be closed
    else:
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
        h.hgm_console = True
        log.addHandler(h)
    return log


def pick_device(name: str) -> torch.device:
    import torch

    from datasets.errors import HGMError
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as e:
        raise HGMError(f"--device {name!r} is not a device (use auto, cpu, cuda or cuda:N)") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise HGMError(f"--device {name}: CUDA is not available on this machine; use --device cpu")
    return dev


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def run(args: argparse.Namespace, log: logging.Logger) -> None:
    from datasets.errors import HGMError
    from runners import distributed
    from runners.config import explicit_values, load_config, parse_set
    from runners.registry import resolve_runner

    set_threads(args.threads)
    name, kind, fixed = resolve_runner(args.runner)
    if kind == "train" and args.test:
        raise HGMError(f"runner {name} trains; for restoration use a Test_* runner or 'restore'")
    if kind == "train" and not args.doc:
        raise HGMError(f"runner {name} trains and needs --doc (the run's name under <run>/logs/)")
    if kind != "train" and distributed.world_size() > 1:
        raise HGMError(f"runner {name} restores in one process; run it with python main.py, not torchrun "
                       f"(several processes would write the same output folder)")
    overrides = parse_set(args.overrides)
    cfg = load_config(args.config, overrides, fixed)
    device = distributed.init(args.device) or pick_device(args.device)
    seed_everything(args.seed + distributed.rank())
    if not distributed.is_main():
        log.setLevel(logging.WARNING)
    import torch
    log.info("runner %s (%s), config %s, doc %s, device %s, %d CPU thread(s)%s%s", name, kind, args.config, args.doc,
             device, torch.get_num_threads(), f", {THREAD_POLICY}" if device.type == "cpu" and THREAD_POLICY else "",
             f", comment: {args.comment}" if args.comment else "")
    try:
        if kind == "train":
            from runners.train import TrainRunner
            TrainRunner(args, cfg, device).run()
        else:
            from runners.restore import RestoreRunner
            RestoreRunner(args, cfg, device, explicit_values(args.config, overrides, fixed)).run()
    finally:
        distributed.cleanup()


def main(argv: list[str] | None = None) -> int:
    global THREAD_POLICY
    THREAD_POLICY = configure_threads_environment()
    args = parse_args(argv)
    if args.quiet:  # runners.progress.bars_disabled() reads it; so does tqdm itself
        import os
        os.environ["TQDM_DISABLE"] = "1"
    signals.install_handlers()
    log = setup_logging(LEVELS[args.verbose])
    from tqdm.contrib.logging import logging_redirect_tqdm

    from datasets.errors import HGMError
    try:
        with logging_redirect_tqdm(loggers=[log]):
            run(args, log)
    except KeyboardInterrupt:
        log.error("interrupted")
        return 130
    except Exception as e:  # every failure ends in a non-zero exit, never swallowed
        if args.verbose == "debug":
            log.exception("failed")
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        prefix = "error" if isinstance(e, HGMError) else f"error ({type(e).__name__})"
        sys.stderr.write(f"{prefix}: {msg}\n")  # one write: torchrun ranks' lines do not interleave
        return 1
    return 0


if __name__ == "__main__":
    code = main()
    if code == 130:
        signals.exit_within(30)
    sys.exit(code)
