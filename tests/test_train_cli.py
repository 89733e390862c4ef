"""Training end to end through `python main.py` (subprocesses) on configs/tiny.yml."""
import glob
import logging
import os
import re
import shutil

import pytest
import torch
import yaml

import main as hgm_main
from conftest import write_rgb_images

TRAIN_RUNNERS = {  # runner -> (transform, channels)
    "train_6ch_rgbrgb": ("channel_copy", 6),
    "train_12ch_pool": ("pixel_scale", 12),
    "train_3ch_rgb": ("identity", 3),
    "Anneal_runner_train_6ch_demoscaicking": ("channel_copy", 6),
    "Anneal_runner_train_12ch_demoscaicking": ("pixel_scale", 12),
}
PAPER_NAMES = list(TRAIN_RUNNERS) + [
    "Test_3ch_inpainting_rgbrgb_256", "Test_6ch_inpainting_rgbrgb_256", "Test_12ch_inpainting_pool",
    "Test_6ch_inpainting_rgbrgb_p", "Test_12ch_inpainting_pool_p", "Test_6ch_demoscaicking_copy",
    "Test_6ch_demoscaicking_copy_p", "Test_12ch_demoscaicking_pool", "Test_12ch_demoscaicking_pool_p"]


def train_argv(runner, run, doc, data, n_iters, *sets, flags=()):
    return ["--runner", runner, "--config", "tiny.yml", "--doc", doc, "--run", str(run), "--device", "cpu",
            *flags, "--set", f"data.path={data}", f"training.n_iters={n_iters}", "training.snapshot_freq=2",
            *sets]


def snapshot(folder):
    """{relative path: bytes} of every file under folder."""
    out = {}
    for root, _, files in os.walk(folder):
        for f in files:
            p = os.path.join(root, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, folder)] = fh.read()
    return out


def load(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def main_in_process(capfd, *argv):
    """main.main(argv) in this process (same code path as the CLI, no interpreter start-up):
    (return code, stdout, stderr)."""
    capfd.readouterr()
    rc = hgm_main.main([str(a) for a in argv])
    out, err = capfd.readouterr()
    return rc, out, err


def assert_one_line_error(rc, err, *needles):
    assert rc == 1, err
    lines = [line for line in err.splitlines() if line.startswith("error")]
    assert len(lines) == 1, err
    assert err.rstrip().splitlines()[-1] == lines[0]  # the last thing printed
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


@pytest.mark.parametrize("runner", list(TRAIN_RUNNERS))
def test_train_refuse_and_resume(runner, run_main, shared_image_folder, tmp_path, capfd):
    transform, channels = TRAIN_RUNNERS[runner]
    run, doc = tmp_path / "run", "d"
    log_dir, tb_dir = run / "logs" / doc, run / "tensorboard" / doc

    rc, out, err = run_main(*train_argv(runner, run, doc, shared_image_folder, 4))
    assert rc == 0, err
    for name in ["checkpoint.pth", "checkpoint_2.pth", "checkpoint_4.pth", "stdout.txt", "config.yml"]:
        assert (log_dir / name).is_file(), name
    events = glob.glob(str(tb_dir / "events.out.tfevents.*"))
    assert events and all(os.path.getsize(e) > 0 for e in events)
    assert "checkpoint written" in (log_dir / "stdout.txt").read_text()
    with open(log_dir / "config.yml") as f:
        cfg = yaml.safe_load(f)  # plain YAML, no python tags
    assert cfg["data"]["transform"] == transform and cfg["data"]["path"] == shared_image_folder
    assert cfg["training"]["n_iters"] == 4 and cfg["model"]["ngf"] == 8

    ck = load(log_dir / "checkpoint.pth")
    assert {"model", "optimizer", "step", "config"} <= set(ck)
    assert ck["step"] == 4 and load(log_dir / "checkpoint_2.pth")["step"] == 2
    assert ck["config"]["data"]["transform"] == transform
    assert ck["model"]["begin_conv.weight"].shape[1] == channels
    assert ck["model"]["end_conv.weight"].shape[0] == channels
    assert all(s["step"].item() == 4 for s in ck["optimizer"]["state"].values())
    assert not any(k.startswith("module.") for k in ck["model"])

    # A second run on the same --doc is refused and touches nothing; resuming continues from step 4
    # with the optimizer's state. Both go through main.main() in this process, to spare two interpreter
    # starts per runner; test_rerun_is_refused_by_the_cli and test_resume_by_the_cli do them as subprocesses.
    before = snapshot(run)
    rc, out, err = main_in_process(capfd, *train_argv(runner, run, doc, shared_image_folder, 4))
    assert_one_line_error(rc, err, "--resume_training")
    assert snapshot(run) == before

    rc, out, err = main_in_process(capfd, *train_argv(runner, run, doc, shared_image_folder, 6,
                                                      flags=["--resume_training"]))
    assert rc == 0, err
    assert "resumed from step 4" in err
    ck6 = load(log_dir / "checkpoint.pth")
    assert ck6["step"] == 6 and (log_dir / "checkpoint_6.pth").is_file()
    assert ck6["config"]["training"]["n_iters"] == 6
    states = ck6["optimizer"]["state"].values()
    assert len(states) == len(ck["optimizer"]["state"]) > 0
    assert all(s["step"].item() == 6 for s in states)  # 4 restored + 2 new; a fresh Adam would say 2
    assert load(log_dir / "checkpoint_4.pth")["step"] == 4  # earlier snapshots are kept
    assert any(not torch.equal(ck6["model"][k], ck["model"][k]) for k in ck["model"])


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A train_6ch_rgbrgb run (ngf 8) of 2 steps. Tests copy it before touching it."""
    root = tmp_path_factory.mktemp("trained")
    data = str(root / "images")
    write_rgb_images(data, n=4, seed=2)
    run = str(root / "run")
    assert hgm_main.main(train_argv("train_6ch_rgbrgb", run, "base", data, 2)) == 0
    return run, data


def copy_run(trained_run, tmp_path):
    run, data = trained_run
    dst = str(tmp_path / "run")
    shutil.copytree(run, dst)
    return dst, data


def test_resume_without_checkpoint(image_folder, tmp_path, capfd):
    run = tmp_path / "run"
    rc, out, err = main_in_process(capfd, *train_argv("train_6ch_rgbrgb", run, "d", image_folder, 4,
                                                      flags=["--resume_training"]))
    assert_one_line_error(rc, err, "checkpoint")
    assert not glob.glob(str(run / "**" / "checkpoint*.pth"), recursive=True)


def mismatches(line):
    """{'ngf': ('8', '16'), ...} from '...: ngf: checkpoint 8, config 16; ...'."""
    return {k: (a.strip(), b.strip()) for k, a, b in re.findall(r"(\w+): checkpoint ([^,;:]+), config ([^,;:]+)", line)}


def test_resume_with_other_transform_and_ngf(trained_run, tmp_path, capfd):
    run, data = copy_run(trained_run, tmp_path)
    log_dir = os.path.join(run, "logs", "base")
    before = snapshot(log_dir)
    rc, out, err = main_in_process(capfd, *train_argv("train_12ch_pool", run, "base", data, 4, "model.ngf=16",
                                                      flags=["--resume_training"]))
    diffs = mismatches(assert_one_line_error(rc, err))
    assert "channel_copy" in diffs["transform"][0] and "pixel_scale" in diffs["transform"][1]
    assert diffs["ngf"] == ("8", "16")
    assert diffs["channels"] == ("6", "12")
    # a refused resume leaves the run as it was: checkpoints and the config that describes them
    after = snapshot(log_dir)
    after.pop("stdout.txt"), before.pop("stdout.txt")
    assert after == before


def test_resume_with_only_other_ngf(trained_run, tmp_path, capfd):
    run, data = copy_run(trained_run, tmp_path)
    ckpt = os.path.join(run, "logs", "base", "checkpoint.pth")
    before = snapshot(os.path.dirname(ckpt))
    rc, out, err = main_in_process(capfd, *train_argv("train_6ch_rgbrgb", run, "base", data, 4, "model.ngf=16",
                                        flags=["--resume_training"]))
    assert mismatches(assert_one_line_error(rc, err, "ngf")) == {"ngf": ("8", "16")}
    after = snapshot(os.path.dirname(ckpt))
    assert after["checkpoint.pth"] == before["checkpoint.pth"]
    assert after["config.yml"] == before["config.yml"]


def test_resume_by_the_cli(run_main, trained_run, tmp_path):
    run, data = copy_run(trained_run, tmp_path)
    log_dir = os.path.join(run, "logs", "base")
    ck2 = load(os.path.join(log_dir, "checkpoint.pth"))
    rc, out, err = run_main(*train_argv("train_6ch_rgbrgb", run, "base", data, 5, "training.snapshot_freq=4",
                                        flags=["--resume_training"]))
    assert rc == 0, err
    ck = load(os.path.join(log_dir, "checkpoint.pth"))
    assert ck["step"] == 5 and load(os.path.join(log_dir, "checkpoint_4.pth"))["step"] == 4
    assert all(s["step"].item() == 5 for s in ck["optimizer"]["state"].values())
    assert ck["train_seconds"] > ck2["train_seconds"]
    assert "resumed from step 2" in open(os.path.join(log_dir, "stdout.txt")).read()


def test_rerun_is_refused_by_the_cli(run_main, trained_run, tmp_path):
    run, data = copy_run(trained_run, tmp_path)
    before = snapshot(run)
    rc, out, err = run_main(*train_argv("train_6ch_rgbrgb", run, "base", data, 2))
    assert_one_line_error(rc, err, "--resume_training", "--overwrite")
    assert snapshot(run) == before


def test_unknown_runner_lists_names(image_folder, tmp_path, capfd):
    rc, out, err = main_in_process(capfd, *train_argv("train_7ch", tmp_path / "run", "d", image_folder, 2))
    line = assert_one_line_error(rc, err, "train_7ch")
    for name in PAPER_NAMES:
        assert name in line
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("verbose", ["info", "debug"])
def test_missing_data_folder(run_main, tmp_path, verbose):
    missing = tmp_path / "no_such_folder"
    rc, out, err = run_main(*train_argv("train_3ch_rgb", tmp_path / "run", "d", missing, 2,
                                        flags=["--verbose", verbose]))
    assert rc == 1
    if verbose == "info":
        assert_one_line_error(rc, err, str(missing), "does not exist")
    else:
        assert "Traceback" in err and "HGMError" in err
        assert err.rstrip().splitlines()[-1].startswith("error: ")
    assert not glob.glob(str(tmp_path / "run" / "**" / "checkpoint*.pth"), recursive=True)


def test_overwrite_moves_the_old_run_aside(run_main, trained_run, tmp_path):
    run, data = copy_run(trained_run, tmp_path)
    old_logs = snapshot(os.path.join(run, "logs", "base"))
    old_tb = snapshot(os.path.join(run, "tensorboard", "base"))
    rc, out, err = run_main(*train_argv("train_6ch_rgbrgb", run, "base", data, 2, flags=["--overwrite"]))
    assert rc == 0, err
    moved_logs = glob.glob(os.path.join(run, "logs", "base.replaced-*"))
    moved_tb = glob.glob(os.path.join(run, "tensorboard", "base.replaced-*"))
    assert len(moved_logs) == 1 and len(moved_tb) == 1
    assert snapshot(moved_logs[0]) == old_logs  # nothing deleted or changed
    assert snapshot(moved_tb[0]) == old_tb
    new = snapshot(os.path.join(run, "logs", "base"))
    assert {"checkpoint.pth", "checkpoint_2.pth", "config.yml", "stdout.txt"} <= set(new)
    assert new["checkpoint.pth"] != old_logs["checkpoint.pth"]
    ck = load(os.path.join(run, "logs", "base", "checkpoint.pth"))
    assert ck["step"] == 2 and all(s["step"].item() == 2 for s in ck["optimizer"]["state"].values())
    assert "resumed" not in err


def test_help_mentions_every_flag(run_main):
    rc, out, err = run_main("--help")
    assert rc == 0
    for flag in ["--runner", "--config", "--doc", "--test", "--image_folder", "--resume_training", "--seed",
                 "--run", "--verbose", "--comment", "--set", "--device", "--model", "--overwrite"]:
        assert re.search(re.escape(flag) + r"\b", out), flag
    for name in PAPER_NAMES:
        assert name in out


def test_bad_command_line_exits_2(run_main):
    rc, out, err = run_main("--runner", "train_6ch_rgbrgb", "--doc", "d")  # no --config
    assert rc == 2 and "--config" in err


def test_in_process_runs_do_not_share_log_files(trained_run, tmp_path):
    """Each run's stdout.txt holds its own log only, also when main() runs twice in one process."""
    _, data = trained_run
    run = str(tmp_path / "run")
    hgm = logging.getLogger("hgm")

    def our_file_handlers():  # handlers other tests may have left are not this test's business
        return [h for h in hgm.handlers if isinstance(h, logging.FileHandler) and h.baseFilename.startswith(run)]
    assert hgm_main.main(train_argv("train_3ch_rgb", run, "first", data, 2)) == 0
    assert our_file_handlers() == []
    assert hgm_main.main(train_argv("train_3ch_rgb", run, "second", data, 2)) == 0
    assert our_file_handlers() == []
    first = open(os.path.join(run, "logs", "first", "stdout.txt")).read()
    second = open(os.path.join(run, "logs", "second", "stdout.txt")).read()
    assert "logs/first" in first and "logs/second" not in first
    assert "logs/second" in second and "logs/first" not in second


@pytest.mark.parametrize("key", ["snapshot_freq", "log_freq"])
def test_zero_frequencies_are_refused_with_a_message(key, tmp_path, image_folder, capsys):
    import main as hgm_main
    rc = hgm_main.main(["--runner", "train_3ch_rgb", "--config", "tiny.yml", "--doc", "z", "--run", str(tmp_path),
                        "--set", f"data.path={image_folder}", f"training.{key}=0"])
    assert rc == 1 and f"training.{key} must be at least 1" in capsys.readouterr().err


def test_move_aside_never_reuses_a_name(tmp_path):
    from datasets.files import move_aside
    names = []
    for _ in range(3):
        (tmp_path / "d").mkdir()
        names.append(move_aside(str(tmp_path / "d")))
    assert len(set(names)) == 3 and all(os.path.isdir(n) for n in names)


def test_sigterm_saves_a_checkpoint_before_exiting(tmp_path, image_folder):
    """A pre-empted run (SIGTERM) keeps its progress, like Ctrl-C."""
    import signal
    import subprocess
    import sys
    import time
    run = tmp_path / "R"
    p = subprocess.Popen([sys.executable, "main.py", "--runner", "train_3ch_rgb", "--config", "tiny.yml", "--doc", "t",
                          "--run", str(run), "--set", f"data.path={image_folder}", "training.n_iters=100000",
                          "training.snapshot_freq=100000", "training.val_freq=0", "training.log_freq=1",
                          "--verbose", "debug"],
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "OMP_NUM_THREADS": "1"})
    log = run / "logs" / "t" / "stdout.txt"
    deadline = time.time() + 120
    while time.time() < deadline and not (log.exists() and "step 3 loss" in log.read_text()):
        time.sleep(0.2)  # until training is under way
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130, err.decode()[-500:]
    ckpt = torch.load(run / "logs" / "t" / "checkpoint.pth", weights_only=True)
    assert ckpt["step"] >= 3


def test_init_from_warm_starts_a_new_run(shared_image_folder, tmp_path, capfd):
    """training.init_from: the new run starts from the given weights (fresh optimizer,
    step 0); the noise range may change; another architecture is refused by name."""
    run = tmp_path / "run"
    rc, _, err = main_in_process(capfd, *train_argv("train_12ch_pool", run, "src", shared_image_folder, 2))
    assert rc == 0, err
    src = run / "logs" / "src" / "checkpoint.pth"
    # zero steps of training would leave nothing to compare: n_iters=1 with lr 0 keeps the weights exactly
    rc, _, err = main_in_process(capfd, *train_argv("train_12ch_pool", run, "dst", shared_image_folder, 1,
                                                    f"training.init_from={src}", "optim.lr=0.0",
                                                    "model.sigma_begin=0.2", "model.sigma_end=0.005",
                                                    "model.ema=true"))
    assert rc == 0, err
    a, b = load(src), load(run / "logs" / "dst" / "checkpoint.pth")
    assert b["step"] == 1 and b["config"]["training"]["init_from"] == str(src)
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
        # the EMA starts from the warm-started weights (it once started from the random ones)
        assert torch.allclose(v.float(), b["ema"][k].float(), atol=1e-6), k
    # without init_from the same run starts elsewhere
    rc, _, err = main_in_process(capfd, *train_argv("train_12ch_pool", run, "fresh", shared_image_folder, 1,
                                                    "optim.lr=0.0", flags=("--seed", "7")))
    c = load(run / "logs" / "fresh" / "checkpoint.pth")
    assert any(not torch.equal(v, c["model"][k]) for k, v in a["model"].items())
    rc, _, err = main_in_process(capfd, *train_argv("train_12ch_pool", run, "wide", shared_image_folder, 1,
                                                    f"training.init_from={src}", "model.ngf=16"))
    assert_one_line_error(rc, err, "init_from", "ngf: checkpoint 8, config 16")
    rc, _, err = main_in_process(capfd, *train_argv("train_6ch_rgbrgb", run, "six", shared_image_folder, 1,
                                                    f"training.init_from={src}"))
    assert_one_line_error(rc, err, "init_from", "channels")
    rc, _, err = main_in_process(capfd, *train_argv("train_12ch_pool", run, "none", shared_image_folder, 1,
                                                    f"training.init_from={tmp_path / 'missing.pth'}"))
    assert_one_line_error(rc, err, "missing.pth")


def test_sigma_min_trains_only_the_largest_levels(shared_image_folder, tmp_path, capfd):
    """training.sigma_min: the levels below it are never drawn, so their per-level norm parameters
    keep their starting values while the trained level's move; a value outside the levels is refused."""
    run = tmp_path / "run"
    rc, _, err = main_in_process(capfd, *train_argv("train_3ch_rgb", run, "src", shared_image_folder, 1,
                                                    "optim.lr=0.0"))
    assert rc == 0, err
    src = run / "logs" / "src" / "checkpoint.pth"
    rc, _, err = main_in_process(capfd, *train_argv("train_3ch_rgb", run, "top", shared_image_folder, 3,
                                                    f"training.init_from={src}", "training.sigma_min=0.9",
                                                    "optim.lr=0.01"))
    assert rc == 0, err
    assert "training the 1 largest of 10 levels only" in open(run / "logs" / "top" / "stdout.txt").read()
    start, end = load(src)["model"], load(run / "logs" / "top" / "checkpoint.pth")["model"]
    embeds = [k for k in start if k.endswith("embed.weight")]
    assert embeds
    for k in embeds:  # row i: level i's parameters
        assert torch.equal(end[k][1:], start[k][1:]), k
    assert all(not torch.equal(end[k][0], start[k][0]) for k in embeds)
    for bad in ("0", "1.5"):
        rc, _, err = main_in_process(capfd, *train_argv("train_3ch_rgb", run, "bad", shared_image_folder, 1,
                                                        f"training.sigma_min={bad}"))
        assert_one_line_error(rc, err, f"training.sigma_min={bad}", "model.sigma_begin=1")
