"""Restoration never gives a silent wrong result or clobbers an output (each test failed before its fix)."""
import csv
import glob
import os

import numpy as np
import pytest
import torch
from PIL import Image

import main as hgm_main
from datasets.errors import HGMError
from datasets.masks import read_mask_file

FAST = ["test.n_steps_each=1", "test.step_lr=1e-5"]


def run_main(*argv):
    return hgm_main.main([str(a) for a in argv])


def write_image(path, h=24, w=28, seed=0, grey=False):
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    rng = np.random.default_rng(seed)
    shape = (h, w) if grey else (h, w, 3)
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(str(path))
    return str(path)


def read_rows(out):
    with open(os.path.join(out, "metrics.csv")) as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def prior(tmp_path_factory):
    """A tiny 3ch prior (two training steps); returns its run folder."""
    root = tmp_path_factory.mktemp("prior")
    for i in range(3):
        write_image(root / "train" / f"t{i}.png", 40, 48, seed=i)
    run = str(root / "run")
    assert run_main("--runner", "train_3ch_rgb", "--config", "tiny.yml", "--doc", "rgb", "--run", run,
                    "--set", f"data.path={root / 'train'}", "training.n_iters=2", "training.snapshot_freq=2") == 0
    return run


def restore(run, data, out, *sets, runner="Test_3ch_inpainting_rgbrgb_256", flags=()):
    return run_main("--runner", runner, "--config", "tiny.yml", "--doc", "rgb", "--run", run, "--test", "-o", out,
                    *flags, "--set", f"test.data_path={data}", *FAST, *sets)


def test_names_keep_their_folders_and_clashes_are_refused(prior, tmp_path, capsys):
    """Item 1: sub/x.png and sub_x.png are two outputs; sub_x.png with sub_x.jpg is refused by name."""
    data = tmp_path / "data"
    write_image(data / "sub" / "x.png", seed=1)
    write_image(data / "sub_x.png", seed=2)
    out = str(tmp_path / "o")
    assert restore(prior, data, out) == 0
    rows = read_rows(out)
    assert sorted(r["image"] for r in rows) == ["mean", "sub/x", "sub_x"]
    assert os.path.isfile(os.path.join(out, "restored", "sub", "x.png"))
    assert os.path.isfile(os.path.join(out, "restored", "sub_x.png"))
    write_image(data / "sub_x.jpg", seed=3)
    capsys.readouterr()
    assert restore(prior, data, str(tmp_path / "o2")) == 1
    err = capsys.readouterr().err
    assert "sub_x.jpg" in err and "sub_x.png" in err, err
    assert not os.path.exists(tmp_path / "o2")


def test_output_inside_the_data_folder_is_refused_and_old_outputs_are_not_data(prior, tmp_path, capsys, hgm_log):
    """Item 2: -o DATA/out is refused; an earlier output folder inside DATA is never read as data."""
    data = tmp_path / "data"
    write_image(data / "a.png", seed=1)
    assert restore(prior, data, str(data / "out")) == 1
    assert "inside the data folder" in capsys.readouterr().err
    assert not os.path.exists(data / "out")
    # an output folder left there by an earlier version (or moved there by hand)
    old = tmp_path / "o"
    assert restore(prior, data, str(old)) == 0
    os.rename(old, data / "old_out")
    out = str(tmp_path / "o2")
    assert restore(prior, data, out) == 0
    assert [r["image"] for r in read_rows(out)] == ["a", "mean"]
    assert "earlier hgm output folder" in hgm_log.text


@pytest.mark.parametrize("overwrite", [False, True])
def test_output_that_is_or_holds_the_data_run_or_checkpoint_is_refused(prior, tmp_path, capsys, overwrite):
    """Item 3: with or without --overwrite, nothing is moved aside."""
    parent = tmp_path / "p"
    data = parent / "data"
    write_image(data / "a.png", seed=1)
    write_image(parent / "unrelated.png", seed=2)
    ckpt = os.path.join(prior, "logs", "rgb", "checkpoint.pth")
    flags = ("--overwrite",) if overwrite else ()
    cases = [(str(data), "is the data folder"), (str(parent), "contains the data folder"),
             (prior, "contains the run folder"), (os.path.dirname(ckpt), "contains the checkpoint")]
    for out, msg in cases:
        capsys.readouterr()
        assert restore(prior, data, out, flags=flags) == 1
        err = capsys.readouterr().err
        assert msg in err and "already holds results" not in err, err
    assert sorted(os.listdir(parent)) == ["data", "unrelated.png"]
    assert os.listdir(data) == ["a.png"]
    assert os.path.isfile(ckpt) and not glob.glob(prior + "*.replaced-*")


def test_degraded_mosaic_must_be_one_channel(prior, tmp_path, capsys):
    """Item 4: an RGB image is not a mosaic; a grey one is restored."""
    data = tmp_path / "data"
    write_image(data / "grey.png", seed=1, grey=True)
    demosaic = ("test.degraded_input=true", "test.task=demosaic", "data.transform=identity")
    assert restore(prior, data, str(tmp_path / "o1"), *demosaic, runner="restore") == 0
    write_image(data / "rgb.png", seed=2)
    capsys.readouterr()
    assert restore(prior, data, str(tmp_path / "o2"), *demosaic, runner="restore") == 1
    err = capsys.readouterr().err
    assert "rgb.png" in err and "not a Bayer mosaic" in err, err


def test_degraded_inpainting_needs_its_mask(prior, tmp_path, capsys):
    """Item 4: real degraded images with the preset's random mask would be restored with a made-up mask."""
    data = tmp_path / "data"
    write_image(data / "a.png", seed=1)
    for mask in ("random", "box"):
        capsys.readouterr()
        assert restore(prior, data, str(tmp_path / "o"), "test.degraded_input=true", f"test.mask={mask}") == 1
        assert "test.mask" in capsys.readouterr().err
    mask = tmp_path / "m.png"
    Image.fromarray(np.where(np.arange(24 * 28).reshape(24, 28) % 3, 255, 0).astype(np.uint8)).save(mask)
    assert restore(prior, data, str(tmp_path / "o"), "test.degraded_input=true", f"test.mask={mask}") == 0


def save_mask(path, arr):
    Image.fromarray(arr).save(str(path))
    return str(path)


def test_mask_values_are_read_or_refused(tmp_path):
    """Item 5: 0/1 and 0/255 mean the same; other values, all-missing and colour masks are errors."""
    rng = np.random.default_rng(0)
    bits = (rng.random((6, 7)) > 0.5).astype(np.uint8)
    a = read_mask_file(save_mask(tmp_path / "01.png", bits), 6, 7)
    b = read_mask_file(save_mask(tmp_path / "0255.png", bits * 255), 6, 7)
    assert torch.equal(a, b) and torch.equal(a[0], torch.from_numpy(bits).float())
    assert read_mask_file(save_mask(tmp_path / "bw.png", np.dstack([bits * 255] * 3)), 6, 7).mean() == a.mean()
    grey = bits * 255
    grey[0, 0] = 128
    with pytest.raises(HGMError, match=r"values 0, 128, 255"):
        read_mask_file(save_mask(tmp_path / "grey.png", grey), 6, 7)
    with pytest.raises(HGMError, match=r"zero.png marks every pixel missing"):
        read_mask_file(save_mask(tmp_path / "zero.png", np.zeros((6, 7), np.uint8)), 6, 7)
    colour = np.dstack([bits * 255, bits * 255, (1 - bits) * 255]).astype(np.uint8)
    with pytest.raises(HGMError, match=r"colour.png is a colour image whose channels differ"):
        read_mask_file(save_mask(tmp_path / "colour.png", colour), 6, 7)


def test_tiny_images_never_stop_the_scoring_of_the_others(prior, tmp_path, capsys):
    """Item 6: 3×5 is scored (smaller SSIM window); 1×1 and 2×2 fail alone; metrics.csv has every row."""
    data = tmp_path / "data"
    write_image(data / "a.png", seed=1)
    write_image(data / "b_3x5.png", 3, 5, seed=2)
    write_image(data / "c_1x1.png", 1, 1, seed=3)
    write_image(data / "d_2x2.png", 2, 2, seed=4)
    out = str(tmp_path / "o")
    assert restore(prior, data, out, "test.mask=random") == 1
    err = capsys.readouterr().err
    assert "2 of 4 image(s) failed" in err and "too small" in err, err
    rows = {r["image"]: r for r in read_rows(out)}
    assert rows["a"]["status"] == rows["b_3x5"]["status"] == "ok"
    assert float(rows["b_3x5"]["ssim"]) > -1 and float(rows["b_3x5"]["psnr"]) > 0
    for name in ("c_1x1", "d_2x2"):
        assert rows[name]["status"].startswith("error: an image of") and "too small" in rows[name]["status"]
    assert rows["mean"]["status"] == "2 of 4 ok"
    assert sorted(os.listdir(os.path.join(out, "restored"))) == ["a.png", "b_3x5.png"]


def test_ssim_of_small_images():
    from evaluation.metrics import ssim
    x = torch.rand(3, 3, 5)
    assert ssim(x, x) == pytest.approx(1.0)
    assert np.isnan(ssim(torch.rand(3, 2, 2), torch.rand(3, 2, 2)))


def test_save_image_is_atomic_and_refuses_nan(tmp_path, monkeypatch):
    """Restoration never writes a NaN or a partial PNG."""
    from datasets import image_files
    path = str(tmp_path / "r" / "x.png")
    with pytest.raises(HGMError, match="NaN"):
        image_files.save_image(torch.full((3, 4, 4), float("nan")), path)
    assert not os.path.exists(path)
    image_files.save_image(torch.ones(3, 4, 4), path)
    before = open(path, "rb").read()

    def broken_save(self, fp, *a, **k):  # a disk that fills up half way
        with open(fp, "wb") as f:
            f.write(b"\x89PNG partial")
        raise OSError("No space left on device")
    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(OSError):
        image_files.save_image(torch.zeros(3, 4, 4), path)
    assert open(path, "rb").read() == before  # the old file whole, no partial one, no temporary left
    assert os.listdir(os.path.dirname(path)) == ["x.png"]


def test_restoration_with_a_nan_result_writes_no_image(prior, tmp_path, monkeypatch, capsys):
    """A sampler result with NaN (past the divergence check) is an error for that image, not a black PNG."""
    import runners.restore as restore_mod
    data = tmp_path / "data"
    write_image(data / "a.png", seed=1)
    write_image(data / "b.png", seed=2)
    real = restore_mod.restore_image

    def nan_for_a(prior, y, *a, **k):
        out = real(prior, y, *a, **k)
        nan_for_a.calls += 1
        return out * float("nan") if nan_for_a.calls == 1 else out
    nan_for_a.calls = 0
    monkeypatch.setattr(restore_mod, "restore_image", nan_for_a)
    out = str(tmp_path / "o")
    assert restore(prior, data, out) == 1
    assert "NaN" in capsys.readouterr().err
    rows = {r["image"]: r for r in read_rows(out)}
    assert rows["a"]["status"].startswith("error") and rows["b"]["status"] == "ok"
    assert not os.path.exists(os.path.join(out, "restored", "a.png"))


def test_failed_schedule_fails_the_image(prior, tmp_path, hgm_log):
    """Item 10: a step size far too large ends at noise, clipped to [0, 1]: that image fails (no PNG,
    an error row, a non-zero exit), never "ok"."""
    data = tmp_path / "data"
    write_image(data / "a.png", seed=1)
    assert restore(prior, data, str(tmp_path / "o"), "test.step_lr=0.01") == 1
    assert "schedule failed" in hgm_log.text
    row = read_rows(str(tmp_path / "o"))[0]
    assert row["image"] == "a" and "schedule failed" in row["status"], row
    assert not os.path.exists(tmp_path / "o" / "restored" / "a.png")
    hgm_log.clear()
    assert restore(prior, data, str(tmp_path / "o2")) == 0
    assert "schedule failed" not in hgm_log.text
