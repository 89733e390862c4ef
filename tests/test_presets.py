"""The recommended presets (configs/demosaic.yml, configs/inpaint.yml) work with any prior:
the checkpoint says what the model is, the presets say where to start and how large a step
is in noise levels, which mean the same for every prior. They run from any folder, on images
of any size, with every bundled prior and with a freshly trained prior of another noise range
and width."""
import csv
import glob
import math
import os

import numpy as np
import pytest
import torch
from PIL import Image

import main as hgm_main
from conftest import REPO, run_main_process
from models.checkpoint import load_checkpoint, resolve_checkpoint_path
from runners.config import load_config, read_config_file, resolve_config_path
from sampling.settings import SamplerSettings, nearest_level

BUNDLED = sorted(glob.glob(os.path.join(REPO, "pretrained", "*.pth")))
PRESETS = ("demosaic.yml", "inpaint.yml")


def smooth_images(folder, sizes):
    """Natural-ish test images: one smooth luminance field shared by the channels, plus a tint."""
    os.makedirs(folder, exist_ok=True)
    for n, (h, w) in enumerate(sizes):
        i, j = np.mgrid[0:h, 0:w] / 16.0
        lum = 0.5 + 0.2 * np.sin(1.3 * i + 0.7 * j + n) + 0.1 * np.cos(0.9 * j - 0.4 * i)
        img = np.stack([0.9 * lum + 0.05, lum, 0.8 * lum + 0.1], -1)
        Image.fromarray(np.round(img * 255).astype(np.uint8)).save(os.path.join(folder, f"img{n}_{h}x{w}.png"))
    return folder


def read_rows(out):
    with open(os.path.join(out, "metrics.csv")) as f:
        return list(csv.DictReader(f))


def restore(out, preset, data, *sets):
    return hgm_main.main(["--runner", "restore", "--config", preset, "--test", "-o", str(out), "--quiet",
                          "--device", "cpu", "--set", f"test.data_path={data}", *sets])


@pytest.mark.parametrize("name", PRESETS)
def test_presets_name_a_bundled_prior_and_inherit_the_base_only(name):
    cfg = load_config(name)
    assert cfg["test"]["checkpoint"].startswith("pretrained/")
    assert os.path.isfile(os.path.join(REPO, cfg["test"]["checkpoint"]))
    explicit = read_config_file(resolve_config_path(name))  # without the schema's defaults
    assert set(explicit) == {"test"}, "a preset says how to sample, the checkpoint what the model is"
    with open(resolve_config_path(name)) as f:
        assert "_base_: anneal.yml" in f.read()


def test_bundled_paths_resolve_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    want = os.path.join(REPO, "pretrained", "cpu_12ch_64.pth")
    assert resolve_checkpoint_path("pretrained/cpu_12ch_64.pth") == want
    assert resolve_checkpoint_path("pretrained/none.pth") == "pretrained/none.pth"  # the error names the path given
    (tmp_path / "pretrained").mkdir()
    (tmp_path / "pretrained" / "cpu_12ch_64.pth").write_bytes(b"x")
    assert resolve_checkpoint_path("pretrained/cpu_12ch_64.pth") == "pretrained/cpu_12ch_64.pth"  # the user's own


def test_nearest_level_is_taken_on_a_log_scale():
    sigmas = torch.tensor([0.2 * 0.025 ** (i / 9) for i in range(10)])
    assert nearest_level(sigmas, 0.039) == 4
    assert nearest_level(sigmas, 0.058) == 3
    assert nearest_level(sigmas, 5.0) == 0 and nearest_level(sigmas, 1e-4) == 9
    # between 0.1 and 0.01 the geometric middle is 0.0316: 0.03 is nearer 0.01 on a log scale
    assert nearest_level(torch.tensor([0.1, 0.01]), 0.03) == 1


def test_a_step_scale_gives_the_same_step_at_a_given_sigma_for_any_prior():
    tcfg = load_config("demosaic.yml")["test"]
    steps_at = {}
    for first, last, n in ((0.2, 0.005, 10), (1.0, 0.01, 10), (0.5, 0.02, 6)):
        sigmas = torch.tensor([first * (last / first) ** (i / (n - 1)) for i in range(n)])
        s = SamplerSettings.from_config(tcfg, sigmas)
        # the sampler's η_i = step_lr·(σ_i/σ_L)²: at any σ the step is step_lr/σ_L²·σ²
        steps_at[(first, last)] = s.step_lr / last ** 2
        assert abs(float(sigmas[s.start_level]) - 0.039) / 0.039 < 0.3
    assert max(steps_at.values()) == pytest.approx(min(steps_at.values()), rel=1e-9)
    assert steps_at[(0.2, 0.005)] == pytest.approx(tcfg["step_scale"], rel=1e-6)


def test_the_form_given_last_wins_and_one_file_cannot_give_both(tmp_path):
    cfg = load_config("demosaic.yml", {"test.step_lr": 1e-5, "test.start_level": 2})
    assert cfg["test"]["step_scale"] is None and cfg["test"]["sigma_start"] is None
    assert cfg["test"]["step_lr"] == 1e-5 and cfg["test"]["start_level"] == 2
    child = tmp_path / "child.yml"
    child.write_text(f"_base_: {resolve_config_path('demosaic.yml')}\ntest:\n  step_lr: 3.0e-6\n")
    cfg = load_config(str(child))
    assert cfg["test"]["step_scale"] is None and cfg["test"]["step_lr"] == 3e-6
    assert cfg["test"]["sigma_start"] == 0.039  # the other pair is untouched
    both = tmp_path / "both.yml"
    both.write_text("test:\n  step_lr: 3.0e-6\n  step_scale: 0.2\n")
    with pytest.raises(Exception, match="both test.step_lr and test.step_scale"):
        load_config(str(both))


@pytest.fixture(scope="module")
def small_images(tmp_path_factory):
    return smooth_images(str(tmp_path_factory.mktemp("imgs")), [(24, 28)])


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("prior", [os.path.basename(p) for p in BUNDLED])
def test_presets_restore_with_every_bundled_prior(tmp_path, small_images, preset, prior):
    rc = restore(tmp_path / "out", preset, small_images, f"test.checkpoint=pretrained/{prior}",
                 "test.n_steps_each=1")
    assert rc == 0
    row = read_rows(tmp_path / "out")[0]
    assert row["status"] == "ok" and float(row["psnr"]) > 25, row
    used = load_config(str(tmp_path / "out" / "config.yml"))
    saved = load_checkpoint(os.path.join(REPO, "pretrained", prior))["config"]
    assert used["model"]["sigma_end"] == saved["model"]["sigma_end"]  # the run records the prior's schedule
    assert used["data"]["transform"] == saved["data"]["transform"]


@pytest.fixture(scope="module")
def other_prior(tmp_path_factory):
    """A prior trained here for two steps, with another width, noise range and number of levels."""
    run = tmp_path_factory.mktemp("run")
    data = smooth_images(str(run / "train"), [(40, 48)] * 4)
    rc = hgm_main.main(["--runner", "train_6ch_rgbrgb", "--config", "tiny.yml", "--doc", "other", "--run", str(run),
                        "--quiet", "--device", "cpu", "--set", f"data.path={data}", "training.n_iters=2",
                        "model.ngf=12", "model.sigma_begin=0.5", "model.sigma_end=0.02", "model.num_classes=6",
                        "training.tb_images=0"])
    assert rc == 0
    return str(run / "logs" / "other" / "checkpoint.pth")


@pytest.mark.parametrize("preset, sigma_start_level", [("demosaic.yml", 4), ("inpaint.yml", 1)])
def test_presets_restore_with_a_prior_of_another_noise_range_and_width(tmp_path, small_images, other_prior,
                                                                      preset, sigma_start_level):
    rc = restore(tmp_path / "out", preset, small_images, f"test.checkpoint={other_prior}", "test.n_steps_each=2")
    assert rc == 0
    row = read_rows(tmp_path / "out")[0]
    assert row["status"] == "ok" and math.isfinite(float(row["psnr"]))
    # levels 0.5, 0.26, 0.14, 0.072, 0.038, 0.02: σ 0.039 (demosaic.yml) is level 4 and σ 0.2 (inpaint.yml) level 1
    # on a log scale; 2 steps each and the final denoising step
    assert int(row["nfe"]) == (6 - sigma_start_level) * 2 + 1


@pytest.mark.parametrize("setting, named", [("model.sigma_end=0.01", "model.sigma_end=0.01"),
                                            ("model.ngf=64", "model.ngf=64"),
                                            ("data.transform=identity", "data.transform='identity'")])
def test_a_model_setting_that_disagrees_with_the_checkpoint_is_refused(tmp_path, small_images, setting, named,
                                                                      capsys):
    rc = restore(tmp_path / "out", "demosaic.yml", small_images, setting)
    assert rc == 1
    err = capsys.readouterr().err
    assert named in err and "cpu_12ch_64.pth has" in err
    assert not os.path.exists(tmp_path / "out" / "metrics.csv")


def test_a_paper_runner_names_its_transform_and_is_refused_with_another(tmp_path, small_images, capsys):
    rc = hgm_main.main(["--runner", "Test_6ch_demoscaicking_copy", "--config", "demosaic.yml", "--test", "-o",
                        str(tmp_path / "out"), "--quiet", "--set", f"test.data_path={small_images}"])
    assert rc == 1
    assert "data.transform='channel_copy'" in capsys.readouterr().err


def test_demosaic_preset_from_another_folder_on_small_images(tmp_path):
    data = smooth_images(str(tmp_path / "imgs"), [(37, 45), (9, 13), (64, 48), (80, 70)])
    out = str(tmp_path / "out")
    rc, _, err = run_main_process("--runner", "restore", "--config", "demosaic.yml", "--doc", "any", "--test",
                                  "-o", out, "--set", f"test.data_path={data}", "--device", "cpu", timeout=900)
    assert rc == 0, err
    rows = read_rows(out)
    assert [r["status"] for r in rows[:-1]] == ["ok"] * 4
    # test.tile_size auto: the bundled prior was trained on 64×64 crops, so the 80×70 image is seen in tiles
    assert "the network's view in tiles of 64 px sharing 8" in err
    for r in rows[:-1]:
        h, w = (int(v) for v in r["image"].rsplit("_", 1)[1].split("x"))
        restored = np.asarray(Image.open(os.path.join(out, "restored", r["image"] + ".png")))
        assert restored.shape == (h, w, 3)
        assert int(r["nfe"]) == 31
        assert math.isfinite(float(r["psnr"])) and float(r["psnr"]) > 30, r  # smooth images are easy


def test_inpaint_preset_with_a_mask_file(tmp_path):
    data = smooth_images(str(tmp_path / "imgs"), [(40, 56)])
    mask = np.full((40, 56), 255, np.uint8)
    mask[10:30, 18:38] = 0  # a hole with pixels farther than 4 px from the measurement, at half size too
    Image.fromarray(mask).save(tmp_path / "hole.png")
    out = str(tmp_path / "out")
    rc, _, err = run_main_process("--runner", "restore", "--config", "inpaint.yml", "--test", "-o", out,
                                  "--set", f"test.data_path={data}", f"test.mask={tmp_path / 'hole.png'}",
                                  "--device", "cpu", timeout=900)
    assert rc == 0, err
    stem = read_rows(out)[0]["image"]
    x = torch.from_numpy(np.asarray(Image.open(os.path.join(out, "restored", stem + ".png"))).copy())
    gt = torch.from_numpy(np.asarray(Image.open(os.path.join(data, stem + ".png"))).copy())
    known = torch.from_numpy(mask > 0)
    assert torch.equal(x[known], gt[known])  # measured pixels exactly as measured
    assert float(read_rows(out)[0]["psnr"]) > 25
    assert int(read_rows(out)[0]["nfe"]) == 3 * 20 + 51 + 51  # at half size: hole prior, main prior; then full size


@pytest.mark.parametrize("path", BUNDLED, ids=os.path.basename)
def test_bundled_priors_store_no_path_of_the_machine_they_were_trained_on(path):
    cfg = load_checkpoint(path)["config"]
    for key, value in (("data.path", cfg["data"].get("path")), ("training.init_from", cfg["training"].get("init_from")),
                       ("test.data_path", cfg["test"].get("data_path")),
                       ("test.checkpoint", cfg["test"].get("checkpoint"))):
        assert value is None, f"{os.path.basename(path)} stores {key}={value!r}"
    text = repr(cfg)
    assert "/work/" not in text and "/home/" not in text and "/root/" not in text


@pytest.mark.parametrize("path", BUNDLED, ids=os.path.basename)
def test_bundled_priors_carry_a_checksum_of_their_weights(path):
    from models.checkpoint import tensor_checksum
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["tensor_sha256"] == tensor_checksum(ckpt)
