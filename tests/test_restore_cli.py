"""Restoration end to end through main.py on tiny trained priors."""
import csv
import glob
import os

import numpy as np
import pytest
import torch
from PIL import Image

import main as hgm_main
from datasets.image_files import read_image
from datasets.masks import bayer_mask
from evaluation.metrics import psnr

TEST_NAMES = {
    "Test_3ch_inpainting_rgbrgb_256": "rgb", "Test_6ch_inpainting_rgbrgb_256": "copy",
    "Test_12ch_inpainting_pool": "pool", "Test_6ch_inpainting_rgbrgb_p": "copy",
    "Test_12ch_inpainting_pool_p": "pool", "Test_6ch_demoscaicking_copy": "copy",
    "Test_6ch_demoscaicking_copy_p": "copy", "Test_12ch_demoscaicking_pool": "pool",
    "Test_12ch_demoscaicking_pool_p": "pool",
}
FAST = ["test.n_steps_each=1", "test.step_lr=1e-5"]


def run_main(*argv):
    return hgm_main.main([str(a) for a in argv])


def write_images(folder, n=3, size=(24, 28), seed=0):
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        yy, xx = np.mgrid[:size[0], :size[1]]
        img = np.stack([np.sin(xx / (3 + i)), np.cos(yy / 4), np.sin((xx + yy) / 5)], -1) * 0.4 + 0.5
        img += rng.normal(0, 0.02, img.shape)
        Image.fromarray((np.clip(img, 0, 1) * 255).round().astype(np.uint8)).save(os.path.join(folder, f"im{i}.png"))
    return folder


@pytest.fixture(scope="module")
def priors(tmp_path_factory):
    """Tiny 3ch, 6ch and 12ch priors trained for two steps through main.py."""
    root = tmp_path_factory.mktemp("priors")
    data = write_images(str(root / "train"), n=4, size=(40, 48))
    run = str(root / "run")
    for runner, doc in [("train_3ch_rgb", "rgb"), ("train_6ch_rgbrgb", "copy"), ("train_12ch_pool", "pool")]:
        assert run_main("--runner", runner, "--config", "tiny.yml", "--doc", doc, "--run", run,
                        "--set", f"data.path={data}", "training.n_iters=2", "training.snapshot_freq=2") == 0
    return run, write_images(str(root / "test"), n=2, size=(24, 28), seed=1)


def read_metrics(out):
    with open(os.path.join(out, "metrics.csv")) as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("name", sorted(TEST_NAMES))
def test_every_paper_runner_restores_and_scores_honestly(name, priors, tmp_path):
    run, data = priors
    out = str(tmp_path / "out")
    extra = ["test.progressive.prev_doc=rgb"] if name.endswith("_p") else []
    rc = run_main("--runner", name, "--config", "tiny.yml", "--doc", TEST_NAMES[name], "--run", run, "--test",
                  "-o", out, "--set", f"test.data_path={data}", *FAST, *extra)
    assert rc == 0
    assert os.path.isfile(os.path.join(out, "config.yml"))
    rows = read_metrics(out)
    assert [r["image"] for r in rows] == ["im0", "im1", "mean"]
    for r in rows[:-1]:
        restored = read_image(os.path.join(out, "restored", r["image"] + ".png"))
        gt = read_image(os.path.join(data, r["image"] + ".png"))
        assert os.path.isfile(os.path.join(out, "input", r["image"] + ".png"))
        assert abs(float(r["psnr"]) - psnr(restored, gt)) < 0.05
        if "demoscaicking" in name:
            m = bayer_mask("rggb", *gt.shape[-2:]) > 0.5
            assert torch.equal((restored[m] * 255).round(), (gt[m] * 255).round())
        else:  # inpainting: the known pixels of the random mask, read back from the input image
            inp = read_image(os.path.join(out, "input", r["image"] + ".png"))
            known = inp.sum(0) > 0
            assert torch.equal(restored[:, known], gt[:, known])
    mean = rows[-1]
    assert abs(float(mean["psnr"]) - np.mean([float(r["psnr"]) for r in rows[:-1]])) < 1e-3
    if name.endswith("_p"):
        assert len(glob.glob(os.path.join(out, "stage1", "*.png"))) == 2
    assert [int(float(r["nfe"])) for r in rows[:-1]] == [20 if name.endswith("_p") else 10] * 2


def test_progressive_from_a_folder_of_earlier_results(priors, tmp_path):
    run, data = priors
    first, second = str(tmp_path / "a"), str(tmp_path / "b")
    assert run_main("--runner", "Test_3ch_inpainting_rgbrgb_256", "--config", "tiny.yml", "--doc", "rgb", "--run", run,
                    "-o", first, "--set", f"test.data_path={data}", *FAST) == 0
    assert run_main("--runner", "Test_12ch_inpainting_pool_p", "--config", "tiny.yml", "--doc", "pool", "--run", run,
                    "-o", second, "--set", f"test.data_path={data}", f"test.progressive.prev_folder={first}/restored",
                    *FAST) == 0
    rows = read_metrics(second)
    assert len(rows) == 3
    # the cost of a progressive result includes the earlier stage's evaluations (10 + 10)
    assert [int(float(r["nfe"])) for r in rows[:2]] == [20, 20]


def test_missing_checkpoint_fails_before_any_work(priors, tmp_path, capsys):
    run, data = priors
    out = str(tmp_path / "out")
    rc = run_main("--runner", "Test_6ch_demoscaicking_copy", "--config", "tiny.yml", "--doc", "nothing", "--run", run,
                  "-o", out, "--set", f"test.data_path={data}")
    assert rc == 1
    assert "no checkpoint" in capsys.readouterr().err
    assert not os.path.exists(out)


def test_checkpoint_of_another_transform_is_refused(priors, tmp_path, capsys):
    run, data = priors
    rc = run_main("--runner", "Test_12ch_demoscaicking_pool", "--config", "tiny.yml", "--doc", "copy", "--run", run,
                  "-o", str(tmp_path / "o"), "--set", f"test.data_path={data}")
    err = capsys.readouterr().err
    assert rc == 1 and "data.transform='pixel_scale'" in err and "has data.transform='channel_copy'" in err


def test_checkpoint_of_another_width_is_refused(priors, tmp_path, capsys):
    run, data = priors
    rc = run_main("--runner", "Test_6ch_demoscaicking_copy", "--config", "tiny.yml", "--doc", "copy", "--run", run,
                  "-o", str(tmp_path / "o"), "--set", f"test.data_path={data}", "model.ngf=16")
    assert rc == 1 and "model.ngf=16, but the prior" in capsys.readouterr().err


def test_mask_of_the_wrong_size_names_both_sizes(priors, tmp_path, capsys):
    run, data = priors
    mask = str(tmp_path / "mask.png")
    Image.fromarray(np.full((10, 12), 255, np.uint8)).save(mask)
    rc = run_main("--runner", "Test_6ch_inpainting_rgbrgb_256", "--config", "tiny.yml", "--doc", "copy", "--run", run,
                  "-o", str(tmp_path / "o"), "--set", f"test.data_path={data}", f"test.mask={mask}", *FAST)
    err = capsys.readouterr().err
    assert rc == 1 and "10×12" in err and "24×28" in err


def test_mask_file_and_odd_sizes_and_unusual_formats(priors, tmp_path):
    """Grayscale, RGBA and 16-bit inputs of odd size through the 12-channel prior with a mask file."""
    run, _ = priors
    data = tmp_path / "odd"
    data.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (21, 27), dtype=np.uint8), "L").save(data / "gray.png")
    Image.fromarray(rng.integers(0, 255, (21, 27, 4), dtype=np.uint8), "RGBA").save(data / "rgba.png")
    Image.fromarray(rng.integers(0, 65535, (21, 27), dtype=np.uint16).astype(np.int32)).convert("I;16") \
        .save(data / "deep.png")
    mask = np.full((21, 27), 255, np.uint8)
    mask[5:15, 6:20] = 0
    Image.fromarray(mask).save(tmp_path / "mask.png")
    out = str(tmp_path / "out")
    assert run_main("--runner", "Test_12ch_inpainting_pool", "--config", "tiny.yml", "--doc", "pool", "--run", run,
                    "-o", out, "--set", f"test.data_path={data}", f"test.mask={tmp_path / 'mask.png'}", *FAST) == 0
    for stem in ("gray", "rgba", "deep"):
        restored = read_image(os.path.join(out, "restored", stem + ".png"))
        assert restored.shape == (3, 21, 27)
        gt = read_image(str(data / (stem + ".png")))
        known = torch.from_numpy(mask > 0)
        assert torch.allclose(restored[:, known], gt[:, known], atol=0.5 / 255)


def test_a_diverging_run_writes_nothing_false(priors, tmp_path, capsys):
    run, data = priors
    out = str(tmp_path / "out")
    rc = run_main("--runner", "Test_6ch_demoscaicking_copy", "--config", "tiny.yml", "--doc", "copy", "--run", run,
                  "-o", out, "--set", f"test.data_path={data}", "test.step_lr=1e6", "test.n_steps_each=2")
    assert rc == 1
    assert "step_lr" in capsys.readouterr().err
    assert not glob.glob(os.path.join(out, "restored", "*.png"))
    rows = read_metrics(out)
    assert [r["status"].startswith("diverged") for r in rows] == [True, True]
    assert all(r["psnr"] == "" for r in rows)


def test_one_diverging_image_does_not_stop_the_others(priors, tmp_path, monkeypatch):
    import runners.restore as restore
    from sampling import SamplerDiverged
    real = restore.restore_image
    calls = []

    def flaky(prior, y, *a, **k):
        calls.append(1)
        if len(calls) == 1:
            raise SamplerDiverged("the iterate diverged; step_lr=... is too large")
        return real(prior, y, *a, **k)

    monkeypatch.setattr(restore, "restore_image", flaky)
    run, data = priors
    out = str(tmp_path / "out")
    assert run_main("--runner", "Test_6ch_demoscaicking_copy", "--config", "tiny.yml", "--doc", "copy", "--run", run,
                    "-o", out, "--set", f"test.data_path={data}", *FAST) == 1
    assert sorted(os.listdir(os.path.join(out, "restored"))) == ["im1.png"]
    rows = read_metrics(out)
    assert rows[0]["status"].startswith("diverged") and rows[1]["status"] == "ok" and rows[2]["image"] == "mean"


def test_an_output_folder_with_results_is_not_mixed(priors, tmp_path, capsys):
    run, data = priors
    out = str(tmp_path / "out")
    args = ["--runner", "Test_6ch_demoscaicking_copy", "--config", "tiny.yml", "--doc", "copy", "--run", run,
            "-o", out, "--set", f"test.data_path={data}", *FAST]
    assert run_main(*args) == 0
    before = open(os.path.join(out, "metrics.csv")).read()
    assert run_main(*args) == 1
    assert "already holds results" in capsys.readouterr().err
    assert open(os.path.join(out, "metrics.csv")).read() == before
    assert run_main(*args, "--overwrite") == 0
    assert glob.glob(out + ".replaced-*")


def test_degraded_inputs_without_ground_truth(priors, tmp_path):
    """Real use: a Bayer mosaic stored as a one-channel image; restored images, no metrics."""
    run, data = priors
    raw = tmp_path / "raw"
    raw.mkdir()
    gt = read_image(os.path.join(data, "im0.png"))
    mosaic = (gt * bayer_mask("rggb", *gt.shape[-2:])).sum(0)
    Image.fromarray((mosaic.numpy() * 255).round().astype(np.uint8)).save(raw / "shot.png")
    out = str(tmp_path / "out")
    assert run_main("--runner", "Test_6ch_demoscaicking_copy", "--config", "tiny.yml", "--doc", "copy", "--run", run,
                    "-o", out, "--set", f"test.data_path={raw}", "test.degraded_input=true", *FAST) == 0
    restored = read_image(os.path.join(out, "restored", "shot.png"))
    m = bayer_mask("rggb", *gt.shape[-2:]) > 0.5
    assert torch.equal((restored[m] * 255).round(), (gt[m] * 255).round())
    assert "psnr" not in open(os.path.join(out, "metrics.csv")).readline()


def test_trace_is_an_oracle_column_never_the_headline(priors, tmp_path):
    run, data = priors
    out = str(tmp_path / "out")
    assert run_main("--runner", "Test_6ch_demoscaicking_copy", "--config", "tiny.yml", "--doc", "copy", "--run", run,
                    "-o", out, "--set", f"test.data_path={data}", "test.n_steps_each=2", "test.trace_freq=5") == 0
    rows = read_metrics(out)
    assert "oracle_best_psnr_over_steps" in rows[0]
    for r in rows[:-1]:
        restored = read_image(os.path.join(out, "restored", r["image"] + ".png"))
        gt = read_image(os.path.join(data, r["image"] + ".png"))
        assert abs(float(r["psnr"]) - psnr(restored, gt)) < 0.05  # the headline is the final output
    with open(os.path.join(out, "trace.csv")) as f:
        assert len(f.readlines()) == 1 + 2 * 4  # 20 steps / 5 per image


@pytest.mark.parametrize("setting,word", [("test.start_level=10", "start_level"), ("test.init=zeros", "init"),
                                          ("test.step_lr=0", "step_lr"), ("test.task=denoise", "task")])
def test_bad_settings_fail_before_any_work(setting, word, priors, tmp_path, capsys):
    run, data = priors
    out = str(tmp_path / "o")
    rc = run_main("--runner", "restore", "--config", "tiny.yml", "--doc", "copy", "--run", run, "-o", out,
                  "--set", f"test.data_path={data}", setting)
    assert rc == 1 and word in capsys.readouterr().err and not os.path.exists(out)


@pytest.mark.parametrize("switch", ["test.bf16=true", "test.channels_last=true"])
def test_speed_switches_keep_the_measurement_exact(switch, priors, tmp_path):
    run, data = priors
    out = str(tmp_path / "o")
    assert run_main("--runner", "Test_12ch_demoscaicking_pool", "--config", "tiny.yml", "--doc", "pool", "--run", run,
                    "-o", out, "--set", f"test.data_path={data}", switch, *FAST) == 0
    gt = read_image(os.path.join(data, "im0.png"))
    restored = read_image(os.path.join(out, "restored", "im0.png"))
    m = bayer_mask("rggb", *gt.shape[-2:]) > 0.5
    assert torch.equal(restored[m], gt[m])
