"""Every command that writes shares one guard (datasets/files.py): outputs never land on, in or over
an input, and a folder in use by one run is refused to a second one at its start, naming the first."""
import glob
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

import main as hgm_main
from conftest import REPO, subprocess_env, train_tiny_prior, write_rgb_images
from datasets.errors import HGMError
from datasets.files import FolderLock, lock_path
from scripts import run_baseline, tune


def start(*argv):
    return subprocess.Popen([sys.executable, "main.py", *map(str, argv)], cwd=REPO, env=subprocess_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def wait_for(path, p, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline and p.poll() is None:
        if os.path.exists(path):
            return
        time.sleep(0.05)
    raise AssertionError(f"{path} never appeared: {p.stderr.read().decode()[-800:] if p.poll() is not None else ''}")


def stop(p, sig=signal.SIGTERM):
    p.send_signal(sig)
    try:
        _, err = p.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        p.kill()
        raise
    return err.decode()


def test_a_folder_lock_names_its_owner_and_stale_locks_are_taken_over(tmp_path, hgm_log):
    folder = str(tmp_path / "out")
    with FolderLock(folder, "output folder"):
        with pytest.raises(HGMError, match=rf"output folder .*out is in use by another run \(pid {os.getpid()}"):
            FolderLock(folder, "output folder").acquire()
    assert not os.path.exists(lock_path(folder))  # released: the lock file goes
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    with open(lock_path(folder), "w") as f:  # what a killed run leaves
        f.write(f"pid {dead.pid} on host, started then: main.py\n")
    with FolderLock(folder):
        assert "taking over the lock" in hgm_log.text and f"pid {dead.pid}" in hgm_log.text


def test_a_second_training_on_the_same_doc_is_refused_at_its_start(tmp_path, image_folder, capfd):
    """Item 1: before any checkpoint exists (the hours before a paper-scale run's first snapshot), a
    second run on the --doc, --overwrite or not, is refused naming the first; the first is untouched."""
    run = tmp_path / "R"
    argv = ["--runner", "train_3ch_rgb", "--config", "tiny.yml", "--doc", "t", "--run", str(run), "--set",
            f"data.path={image_folder}", "training.val_freq=0"]
    first = start(*argv, "training.n_iters=100000", "training.snapshot_freq=100000")
    try:
        wait_for(run / "logs" / "t" / "stdout.txt", first)
        for flags in ([], ["--overwrite"]):
            capfd.readouterr()
            assert hgm_main.main(flags + argv + ["training.n_iters=2"]) == 1
            err = capfd.readouterr().err
            assert f"run folder {run / 'logs' / 't'} is in use by another run (pid {first.pid}" in err, err
        assert first.poll() is None and not glob.glob(str(run / "logs" / "t.replaced-*"))
    finally:
        first.kill()
        first.communicate()
    # killed with -9: its lock is stale and the next run takes it over
    assert hgm_main.main(argv + ["training.n_iters=2"]) == 0


@pytest.fixture(scope="module")
def prior(tmp_path_factory):
    return train_tiny_prior(str(tmp_path_factory.mktemp("prior")))[0]


def test_a_second_overwriting_restoration_to_the_same_output_is_refused(prior, tmp_path, capfd):
    """Item 5: the second --overwrite run used to move the first's folder aside mid-run."""
    data = tmp_path / "data"
    write_rgb_images(data, n=3)
    out = tmp_path / "o"
    argv = ["--runner", "Test_3ch_inpainting_rgbrgb_256", "--config", "tiny.yml", "--test", "-o", out,
            "--overwrite", "--set", f"test.data_path={data}", f"test.checkpoint={prior}", "test.step_lr=1e-5"]
    first = start(*argv, "test.n_steps_each=100000")
    try:
        wait_for(out / "log.txt", first)
        capfd.readouterr()
        assert hgm_main.main([str(a) for a in argv] + ["test.n_steps_each=1"]) == 1
        err = capfd.readouterr().err
        assert f"output folder {out} is in use by another run (pid {first.pid}" in err, err
        assert not glob.glob(str(out) + ".replaced-*") and first.poll() is None
    finally:
        stop(first, signal.SIGINT)
    assert hgm_main.main([str(a) for a in argv] + ["test.n_steps_each=1"]) == 0  # once it ended


@pytest.mark.parametrize("where", ["data", "parent", "inside"])
def test_baselines_share_the_output_guard(tmp_path, capsys, where):
    """Item 4: run_baseline.py -o DATA --overwrite moved the data folder (or its parent) aside."""
    parent = tmp_path / "p"
    data = parent / "data"
    write_rgb_images(data, n=2)
    out = {"data": data, "parent": parent, "inside": data / "out"}[where]
    before = sorted(os.listdir(data))
    rc = run_baseline.main(["--method", "bilinear", "--task", "demosaic", "--data", str(data), "-o", str(out),
                            "--overwrite"])
    err = capsys.readouterr().err
    assert rc == 1 and "data folder --data" in err, err
    assert sorted(os.listdir(data)) == before and os.listdir(parent) == ["data"]


def test_tuning_output_may_not_be_the_training_data(prior, tmp_path, capsys):
    data = tmp_path / "train"
    write_rgb_images(data, n=3)
    rc = tune.main(["--runner", "Test_3ch_inpainting_rgbrgb_256", "--config", "tiny.yml", "--prior", prior,
                    "--set", f"data.path={data}", "-o", str(data / "tuning")])
    assert rc == 1 and "inside the data folder data.path" in capsys.readouterr().err
    assert not os.path.exists(data / "tuning")


def test_training_run_folder_may_not_be_inside_its_data(tmp_path, capfd):
    data = tmp_path / "data"
    write_rgb_images(data, n=3)
    rc = hgm_main.main(["--runner", "train_3ch_rgb", "--config", "tiny.yml", "--doc", "t", "--run",
                        str(data / "run"), "--set", f"data.path={data}", "training.n_iters=1"])
    assert rc == 1 and "is inside the data folder data.path" in capfd.readouterr().err
    assert sorted(os.listdir(data)) == [f"img_{i:02d}.png" for i in range(3)]


def test_an_output_named_like_a_file_is_refused(prior, tmp_path, capfd):
    data = tmp_path / "data"
    write_rgb_images(data, n=1)
    target = tmp_path / "results.png"
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(target)
    rc = hgm_main.main(["--runner", "Test_3ch_inpainting_rgbrgb_256", "--config", "tiny.yml", "--test", "-o",
                        str(target), "--overwrite", "--set", f"test.data_path={data}", f"test.checkpoint={prior}"])
    assert rc == 1 and f"-o {target} is a file, not a folder" in capfd.readouterr().err
    assert os.path.isfile(target)
