#!/usr/bin/env python
"""Run a small training and a small restoration alone, then side by side, and print how much slower
each one is beside the other than alone (on a machine with two cores, sharing them should cost about 2×).

    python scripts/concurrency_check.py                       # main.py's thread defaults
    python scripts/concurrency_check.py --threads 1           # main.py --threads 1 for both
    python scripts/concurrency_check.py --env OMP_WAIT_POLICY=ACTIVE   # spinning OpenMP threads: the collapse

Times are the commands' own (training: its loop, from its log; restoration: seconds per image, from
metrics.csv), so start-up is left out. The child processes get this environment without
OMP_NUM_THREADS / MKL_NUM_THREADS / OMP_WAIT_POLICY / KMP_BLOCKTIME (main.py's defaults apply) plus
--env. Other jobs on the machine disturb the numbers: read the ratios, and run it twice.
"""
import argparse
import csv
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY", "KMP_BLOCKTIME", "GOMP_SPINCOUNT")


def write_images(folder, n, size, seed=0):
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        img = np.stack([np.sin(xx / (3 + i)), np.cos(yy / 4), np.sin((xx + yy) / 5)], -1) * 0.4 + 0.5
        img = np.clip(img + rng.normal(0, 0.03, img.shape), 0, 1)
        Image.fromarray((img * 255).round().astype(np.uint8)).save(os.path.join(folder, f"im{i:02d}.png"))
    return folder


class Job:
    def __init__(self, a, work):
        self.a, self.work = a, work
        self.env = {k: v for k, v in os.environ.items() if k not in THREAD_VARS}
        self.env.update(dict(e.split("=", 1) for e in a.env))
        self.env["TQDM_DISABLE"] = "1"
        self.common = ["--config", "tiny.yml", "--quiet"] + (["--threads", str(a.threads)] if a.threads else [])
        self.model = [f"model.ngf={a.ngf}"]
        self.train_data = write_images(os.path.join(work, "train"), 6, 64)
        self.test_data = write_images(os.path.join(work, "test"), a.images, a.size, seed=1)
        self.few = write_images(os.path.join(work, "few"), 3, a.size, seed=1)

    def main(self, argv, wait=True):
        cmd = [sys.executable, os.path.join(ROOT, "main.py"), *argv]
        p = subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if wait:
            _, err = p.communicate()
            if p.returncode:
                raise SystemExit(f"failed: {' '.join(argv)}\n{err[-2000:]}")
        return p

    def train(self, doc, steps, wait=True):
        return self.main(["--runner", "train_12ch_pool", *self.common, "--doc", doc, "--run",
                          os.path.join(self.work, "run"), "--overwrite", "--set", f"data.path={self.train_data}",
                          f"training.n_iters={steps}", "training.val_freq=0", f"training.snapshot_freq={steps}",
                          "data.image_size=32", "training.batch_size=8", "training.tb_images=0", *self.model],
                         wait)

    def restore(self, out, data, wait=True):
        ckpt = os.path.join(self.work, "run", "logs", "prior", "checkpoint.pth")
        return self.main(["--runner", "Test_12ch_demoscaicking_pool", *self.common, "--test", "-o", out,
                          "--overwrite", "--set", f"test.data_path={data}", f"test.checkpoint={ckpt}",
                          f"test.n_steps_each={self.a.restore_steps}", "test.step_lr=1e-6", *self.model], wait)

    def train_seconds(self, doc):
        text = open(os.path.join(self.work, "run", "logs", doc, "stdout.txt")).read()
        return float(re.findall(r"done: step \d+.*?, ([0-9.]+) s$", text, re.M)[-1])


def image_seconds(out):
    with open(os.path.join(out, "metrics.csv")) as f:
        rows = [r for r in csv.DictReader(f) if r["image"] != "mean" and r["status"] == "ok"]
    if not rows:
        raise SystemExit(f"no image finished in {out}; use smaller images (--size) or a longer training (--steps)")
    return sum(float(r["seconds"]) for r in rows) / len(rows), len(rows)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=None, help="pass --threads N to both commands")
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="extra environment for both")
    p.add_argument("--steps", type=int, default=60, help="training steps")
    p.add_argument("--ngf", type=int, default=16)
    p.add_argument("--images", type=int, default=40, help="restoration images (it is stopped when training ends)")
    p.add_argument("--size", type=int, default=64, help="restoration image size")
    p.add_argument("--restore_steps", type=int, default=2, help="test.n_steps_each")
    a = p.parse_args(argv)
    work = tempfile.mkdtemp(prefix="hgm_concurrency_")
    try:
        job = Job(a, work)
        job.train("prior", 1)  # the restoration's prior (and a warm start of the file cache)
        job.train("alone", a.steps)
        train_alone = job.train_seconds("alone")
        out_alone = os.path.join(work, "restore_alone")
        job.restore(out_alone, job.few)
        img_alone, _ = image_seconds(out_alone)
        r = job.restore(os.path.join(work, "restore_side"), job.test_data, wait=False)
        t = job.train("side", a.steps, wait=False)
        _, err = t.communicate()
        if t.returncode:
            r.kill()
            raise SystemExit(f"training failed beside the restoration:\n{err[-2000:]}")
        r.send_signal(signal.SIGINT)
        r.communicate()
        train_side = job.train_seconds("side")
        img_side, n_side = image_seconds(os.path.join(work, "restore_side"))
        print(f"threads: {a.threads or 'main.py default'}; env: {' '.join(a.env) or '(none)'}; "
              f"{os.cpu_count()} CPUs; load average now {os.getloadavg()[0]:.2f}")
        print(f"training    alone {train_alone:7.2f} s ({a.steps} steps), side by side {train_side:7.2f} s: "
              f"{train_side / train_alone:.2f}× slower")
        print(f"restoration alone {img_alone:7.2f} s / image,     side by side {img_side:7.2f} s / image "
              f"({n_side} images): {img_side / img_alone:.2f}× slower")
    finally:
        time.sleep(0.1)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
