"""Restoration options, each pinned: small images with large patches, traces in patches, masks seeded by
name, --comment stored, run_baseline --overwrite, --doc optional when test.checkpoint names the prior;
and the compare/ panels of every restoration."""
import csv
import os

import pytest
import torch
from PIL import Image

import main as hgm_main
from datasets.errors import HGMError
from datasets.inputs import load_inputs
from runners.config import load_config
from scripts import run_baseline
from tests.helpers import write_images, write_prior

FAST = ["test.n_steps_each=1", "test.step_lr=1e-5"]


def restore(tmp_path, *sets, runner="Test_12ch_demoscaicking_pool", images=None, out="out", extra=()):
    data = images or write_images(tmp_path / "images")
    prior = write_prior(tmp_path / "prior.pth")
    out = str(tmp_path / out)
    rc = hgm_main.main(["--runner", runner, "--config", "tiny.yml", "--test", "-o", out, *extra,
                        "--set", f"test.data_path={data}", f"test.checkpoint={prior}", *FAST, *sets])
    return rc, out


def test_images_smaller_than_the_patch_are_restored_whole(tmp_path):
    # the paper's demosaicking configs use 300×300 circular patches; a 24×28 image used to crash
    rc, out = restore(tmp_path, "test.patch_size=300", "test.patch_stride=256", "test.pad_mode=circular")
    assert rc == 0
    assert sorted(os.listdir(os.path.join(out, "restored"))) == ["im0.png", "im1.png"]


def test_patches_wider_than_a_thin_image_do_not_wrap_more_than_once(tmp_path):
    data = write_images(tmp_path / "thin", names=("thin",), size=(8, 80))
    rc, out = restore(tmp_path, "test.patch_size=32", "test.patch_stride=24", images=data)
    assert rc == 0 and os.path.isfile(os.path.join(out, "restored", "thin.png"))


def test_trace_is_written_when_patches_are_on(tmp_path):
    write_images(tmp_path / "images")
    prior = write_prior(tmp_path / "copy.pth", "channel_copy")
    out = str(tmp_path / "trace")
    assert hgm_main.main(["--runner", "Test_6ch_inpainting_rgbrgb_256", "--config", "tiny.yml", "--test", "-o", out,
                          "--set", f"test.data_path={tmp_path / 'images'}", f"test.checkpoint={prior}", *FAST,
                          "test.patch_size=16", "test.patch_stride=12", "test.trace_freq=1"]) == 0
    with open(os.path.join(out, "trace.csv")) as f:
        rows = list(csv.DictReader(f))
    assert rows and all(" patches " in r["image"] for r in rows)
    assert {r["image"].split()[0] for r in rows} == {"im0", "im1"}
    assert all(float(r["psnr"]) > 0 for r in rows)


def test_random_masks_are_seeded_by_name_not_position(tmp_path):
    one = write_images(tmp_path / "one", names=("kodim07",))
    two = write_images(tmp_path / "two", names=("aaa", "kodim07"))
    masks = []
    for data in (one, two):
        tcfg = load_config("tiny.yml", {"test.task": "inpaint", "test.mask": "random", "test.data_path": data})["test"]
        masks.append({item.stem: item.mask for item in load_inputs(tcfg)})
    assert torch.equal(masks[0]["kodim07"], masks[1]["kodim07"])
    assert not torch.equal(masks[1]["aaa"], masks[1]["kodim07"])


def test_comment_is_stored_in_config_and_log(tmp_path):
    rc, out = restore(tmp_path, extra=("--comment", "first try, step_lr 1e-5"))
    assert rc == 0
    with open(os.path.join(out, "config.yml")) as f:
        assert f.readline().strip() == "# comment: first try, step_lr 1e-5"
    with open(os.path.join(out, "log.txt")) as f:
        assert "comment: first try, step_lr 1e-5" in f.read()
    assert load_config(os.path.join(out, "config.yml"))["test"]["task"] == "demosaic"  # still a config


def test_training_comment_is_in_its_config_and_stdout(tmp_path):
    data = write_images(tmp_path / "train", names=("a", "b", "c"), size=(40, 48))
    run = str(tmp_path / "run")
    assert hgm_main.main(["--runner", "train_3ch", "--config", "tiny.yml", "--doc", "d", "--run", run,
                          "--comment", "tiny run", "--set", f"data.path={data}", "training.n_iters=1"]) == 0
    with open(os.path.join(run, "logs", "d", "config.yml")) as f:
        assert f.readline().strip() == "# comment: tiny run"
    with open(os.path.join(run, "logs", "d", "stdout.txt")) as f:
        assert "comment: tiny run" in f.read()


def test_doc_is_optional_when_test_checkpoint_names_the_prior(tmp_path):
    rc, out = restore(tmp_path)  # no --doc anywhere
    assert rc == 0 and os.path.isfile(os.path.join(out, "metrics.csv"))


def test_training_without_doc_is_one_line_error(tmp_path, capsys):
    assert hgm_main.main(["--runner", "train_3ch", "--config", "tiny.yml", "--set", "data.path=x"]) == 1
    assert "needs --doc" in capsys.readouterr().err


def test_restoring_without_doc_or_checkpoint_is_one_line_error(tmp_path, capsys):
    data = write_images(tmp_path / "images")
    assert hgm_main.main(["--runner", "restore", "--config", "tiny.yml", "--test", "-o", str(tmp_path / "o"),
                          "--set", f"test.data_path={data}"]) == 1
    assert "--doc" in capsys.readouterr().err


def test_run_baseline_overwrite_exists_and_works(tmp_path, capsys):
    data = write_images(tmp_path / "images")
    out = str(tmp_path / "bl")
    args = ["--method", "bilinear", "--task", "demosaic", "--data", data, "-o", out]
    assert run_baseline.main(args) == 0
    assert run_baseline.main(args) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert run_baseline.main(args + ["--overwrite"]) == 0
    assert os.path.isfile(os.path.join(out, "compare", "im0.png"))


def test_restore_writes_labelled_compare_panels(tmp_path):
    rc, out = restore(tmp_path)
    assert rc == 0
    im = Image.open(os.path.join(out, "compare", "im0.png"))
    # four panels (input | restored | ground truth | error), each enlarged to >= 128 px, plus padding
    assert im.width >= 4 * 128 and im.height > 128
    assert sorted(os.listdir(os.path.join(out, "compare"))) == ["im0.png", "im1.png"]


def test_compare_without_ground_truth_has_two_panels(tmp_path):
    from evaluation.report import write_comparison
    x = torch.rand(3, 20, 30)
    path = write_comparison(str(tmp_path), "a", x, x)
    two = Image.open(path).width
    path = write_comparison(str(tmp_path), "b", x, x, x)
    assert Image.open(path).width > 1.8 * two


def test_compile_auto_compiles_only_runs_long_enough_to_repay_it():
    from runners.restore import compile_pays
    assert not compile_pays([(256, 256)] * 3, 31)  # the demo: about 6 megapixel-evaluations
    assert compile_pays([(500, 500)] * 24, 31)  # Kodak24 demosaicking: 186
    assert not compile_pays([(500, 500)] * 12 + [(500, 499)] * 12, 31)  # compiled per shape: 93 each
    assert not compile_pays([], 31)
    # compiled before for that shape (its kernels in inductor's cache): seconds, repaid by far shorter runs
    assert compile_pays([(256, 256)] * 2, 66, warm=True)  # about 8.7 megapixel-evaluations
    assert not compile_pays([(64, 64)] * 3, 31, warm=True)


def test_the_record_of_compiled_shapes_names_what_decides_the_kernels(tmp_path, monkeypatch):
    from sampling import load_prior
    from sampling.compiled import compile_key, compiled_before, remember_compiled
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "cache"))
    prior = load_prior(write_prior(tmp_path / "prior.pth"), torch.device("cpu"))
    other = load_prior(write_prior(tmp_path / "other.pth", seed=3), torch.device("cpu"))
    key = compile_key(prior, (256, 256), "whole")
    assert not compiled_before(key)
    remember_compiled([key, key])
    assert compiled_before(key) and compiled_before(compile_key(other, (256, 256), "whole"))  # weights are inputs
    assert open(tmp_path / "cache" / "hgm_compiled.txt").read().count("\n") == 1
    for changed in (compile_key(prior, (256, 255), "whole"), compile_key(prior, (256, 256), "tiles 64/8 batch None"),
                    compile_key(load_prior(write_prior(tmp_path / "six.pth", "channel_copy"), torch.device("cpu")),
                                (256, 256), "whole")):
        assert not compiled_before(changed)


def test_compile_auto_compiles_a_short_run_of_shapes_compiled_before(tmp_path, monkeypatch, hgm_log):
    """A run whose network ran compiled records its shapes; a later short run of the same shapes compiles
    (cheap from the cache), one of other shapes does not."""
    import runners.restore
    from sampling import Prior
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(runners.restore, "COMPILE_PAYS_FROM_WARM", 0)  # tiny images: any run repays a warm compile

    def fake_compile(self):  # what torch.compile's wrapper looks like to the runner, without compiling
        self.net = lambda x, labels: self.model(x, labels)
    monkeypatch.setattr(Prior, "compile", fake_compile)
    assert restore(tmp_path, "test.compile=auto", out="cold")[0] == 0
    assert "test.compile auto: compiling" not in hgm_log.text
    assert restore(tmp_path, "test.compile=true", out="forced")[0] == 0
    assert restore(tmp_path, "test.compile=auto", out="warm")[0] == 0
    assert "compiled for this shape on this machine before" in hgm_log.text
    hgm_log.clear()
    other = write_images(tmp_path / "other_images", size=(20, 28))
    assert restore(tmp_path, "test.compile=auto", out="other", images=other)[0] == 0
    assert "test.compile auto: compiling" not in hgm_log.text


def test_compile_takes_true_false_or_auto(tmp_path, capsys):
    for value in ("auto", "false"):
        assert restore(tmp_path, f"test.compile={value}", out=f"out_{value}")[0] == 0
    capsys.readouterr()
    rc, _ = restore(tmp_path, "test.compile=sometimes", out="out_bad")
    assert rc == 1 and "test.compile='sometimes' must be true, false or auto" in capsys.readouterr().err


def test_a_network_that_fails_to_compile_runs_uncompiled_with_the_same_results(tmp_path, hgm_log):
    from sampling import load_prior
    prior = load_prior(write_prior(tmp_path / "prior.pth"), torch.device("cpu"))
    x, labels = torch.rand(1, 12, 8, 8), torch.zeros(1, dtype=torch.long)
    expected = prior.score(x, labels)

    def broken(*args):
        raise RuntimeError("InvalidCxxCompiler: no working C++ compiler found")
    prior.net = broken  # what torch.compile's first call does on a machine without a compiler
    assert torch.equal(prior.score(x, labels), expected)
    assert prior.net is prior.model and "torch.compile failed (InvalidCxxCompiler" in hgm_log.text


def test_a_hole_prior_fills_the_holes_first_and_its_evaluations_are_counted(tmp_path, hgm_log, capsys):
    hole = write_prior(tmp_path / "hole.pth", "identity", seed=1, sets={"model.sigma_begin": 1.0})
    main = write_prior(tmp_path / "main.pth", sets={"model.sigma_begin": 0.2})  # levels that never reach σ 1
    sets = ["test.step_lr=null", "test.step_scale=0.4", "test.sigma_start=0.2", "test.init=biharmonic",
            "test.task=inpaint", "test.mask=box", "test.box_size=12", "test.denoise=false"]
    rc, out = restore(tmp_path, *sets, f"test.checkpoint={main}", f"test.hole_prior={hole}",
                      "test.hole_sigma_start=1.0", "test.compile=auto", runner="restore", extra=["--doc", "x"])
    assert rc == 0
    with open(os.path.join(out, "metrics.csv")) as f:
        rows = [r for r in csv.DictReader(f) if r["image"] in ("im0", "im1")]
    # as the preset: the hole prior (σ 1 … 0.01) from σ 1 down to its level nearest 0.2 (levels 0..2, σ 1 … 0.359),
    # then all 10 levels of the main prior (σ 0.2 … 0.01), one step each
    assert [int(r["nfe"]) for r in rows] == [3 + 10, 3 + 10]
    assert "hole prior" in hgm_log.text
    rc, _ = restore(tmp_path, *sets, f"test.hole_prior={hole}", runner="restore", out="out2", extra=["--doc", "x"])
    assert rc != 0 and "test.hole_prior needs test.hole_sigma_start" in capsys.readouterr().err


def test_a_prior_trained_on_its_largest_levels_only_is_warned_about_below_them(tmp_path, hgm_log):
    """training.sigma_min: as a hole prior (levels down to σ 0.359 only) no warning; alone, down to σ 0.01, one."""
    hole = write_prior(tmp_path / "hole.pth", "identity", seed=1,
                       sets={"model.sigma_begin": 1.0, "training.sigma_min": 0.3})
    main = write_prior(tmp_path / "main.pth", sets={"model.sigma_begin": 0.2})
    sets = ["test.step_lr=null", "test.step_scale=0.4", "test.init=biharmonic", "test.task=inpaint",
            "test.mask=box", "test.box_size=12", "test.denoise=false"]
    rc, _ = restore(tmp_path, *sets, "test.sigma_start=0.2", f"test.checkpoint={main}", f"test.hole_prior={hole}",
                    "test.hole_sigma_start=1.0", runner="restore", extra=["--doc", "x"])
    assert rc == 0 and "hole prior" in hgm_log.text and "training.sigma_min" not in hgm_log.text
    rc, _ = restore(tmp_path, *sets, "test.sigma_start=1.0", f"test.checkpoint={hole}", "data.transform=identity",
                    runner="restore", out="alone", extra=["--doc", "x"])
    assert rc == 0
    assert "test.checkpoint was trained on its levels with σ ≥ 0.3 only (training.sigma_min)" in hgm_log.text
    assert "down to σ 0.01" in hgm_log.text


def test_the_mean_of_samples_is_written_and_its_evaluations_counted(tmp_path, hgm_log):
    rows = {}
    for n in (1, 3):
        rc, out = restore(tmp_path, f"test.n_samples={n}", "test.task=inpaint", "test.mask=random",
                          runner="restore", out=f"out{n}", extra=["--doc", "x"])
        assert rc == 0
        with open(os.path.join(out, "metrics.csv")) as f:
            rows[n] = [r for r in csv.DictReader(f) if r["image"] in ("im0", "im1")]
    assert [int(r["nfe"]) for r in rows[3]] == [3 * int(r["nfe"]) for r in rows[1]]
    assert "(the mean of 3 samples)" in hgm_log.text


def test_flips_are_said_in_the_log_and_cost_no_evaluations(tmp_path, hgm_log):
    nfe = {}
    for flips in ("false", "true"):
        rc, out = restore(tmp_path, f"test.flips={flips}", runner="restore", out=f"out_{flips}", extra=["--doc", "x"])
        assert rc == 0
        with open(os.path.join(out, "metrics.csv")) as f:
            nfe[flips] = [r["nfe"] for r in csv.DictReader(f) if r["image"] != "mean"]
    assert nfe["true"] == nfe["false"]
    assert "each evaluation on the next of the image's four flips" in hgm_log.text
    assert "trained without flips" not in hgm_log.text


def test_flips_with_a_prior_trained_without_them_are_warned_about(tmp_path, hgm_log):
    data = write_images(tmp_path / "images")
    prior = write_prior(tmp_path / "prior.pth", sets={"data.augment": False})
    rc = hgm_main.main(["--runner", "restore", "--config", "tiny.yml", "--test", "-o", str(tmp_path / "out"),
                        "--doc", "x", "--set", f"test.data_path={data}", f"test.checkpoint={prior}", *FAST,
                        "test.flips=true"])
    assert rc == 0
    assert "trained without flips" in hgm_log.text


def test_bf16_auto_follows_the_hardware(monkeypatch):
    from sampling.prior import PriorOptions, native_bf16, resolve_bf16
    tcfg = {"use_ema": True, "bf16": "auto", "compile": False, "channels_last": False}
    for avx512_bf16, amx, expected in ((False, False, False), (True, False, True), (False, True, True)):
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda v=avx512_bf16: v, raising=False)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda v=amx: v, raising=False)
        assert native_bf16(torch.device("cpu")) is expected
        assert PriorOptions.from_config(tcfg, torch.device("cpu")).bf16 is expected
    assert PriorOptions.from_config({**tcfg, "bf16": True}).bf16 is True
    assert PriorOptions.from_config({**tcfg, "bf16": False}).bf16 is False
    assert native_bf16(torch.device("meta")) is False
    with pytest.raises(HGMError, match="bf16='sometimes' must be true, false or auto"):
        resolve_bf16("sometimes", torch.device("cpu"))


def test_bf16_takes_true_false_or_auto_and_says_what_auto_chose(tmp_path, capsys, hgm_log):
    assert restore(tmp_path, "test.bf16=auto", out="out_auto")[0] == 0
    assert "test.bf16 auto: " in hgm_log.text
    capsys.readouterr()
    rc, _ = restore(tmp_path, "test.bf16=sometimes", out="out_bad")
    assert rc == 1 and "test.bf16='sometimes' must be true, false or auto" in capsys.readouterr().err


def test_image_grid_matches_torchvision_make_grid():
    from torchvision.utils import make_grid

    from evaluation.report import image_grid
    for n, nrow, padding in [(4, 4, 2), (6, 4, 2), (3, 2, 4), (8, 3, 1)]:
        tiles = torch.rand(n, 3, 5, 7)
        assert torch.equal(image_grid(tiles, nrow, padding, 0.5), make_grid(tiles, nrow, padding, pad_value=0.5))
    grey = torch.rand(2, 1, 5, 7)  # one-channel tiles become grey RGB, as make_grid makes them
    assert torch.equal(image_grid(grey, 2), make_grid(grey, 2, pad_value=1.0))


def test_restore_run_does_not_import_torchvision(tmp_path):
    """Importing torchvision (and with it torch._dynamo) costs a run about 2 s of start-up."""
    import subprocess
    import sys
    data = write_images(tmp_path / "images")
    prior = write_prior(tmp_path / "prior.pth")
    code = ("import sys, main as m; rc = m.main(sys.argv[1:]); "
            "assert 'torchvision' not in sys.modules, 'torchvision imported'; sys.exit(rc)")
    r = subprocess.run([sys.executable, "-c", code, "--runner", "restore", "--config", "tiny.yml", "--test",
                        "-o", str(tmp_path / "o"), "--set", f"test.data_path={data}",
                        f"test.checkpoint={prior}", *FAST],
                       cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
