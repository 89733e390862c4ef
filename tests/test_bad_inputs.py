"""Bad inputs end in one line that names the problem and a non-zero exit, never a raw traceback, a
silent wrong result or a lost file. The table runs each case through main.py as a user would."""
import errno
import os
import shutil
import struct
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

import main as hgm_main
from conftest import train_tiny_prior, write_rgb_images
from datasets.errors import HGMError
from datasets.files import DiskFull, atomic_write
from models.checkpoint import load_checkpoint


@pytest.fixture(scope="module")
def prior(tmp_path_factory):
    """A tiny 3ch prior (two steps, so it carries a checksum) and a folder of test images."""
    root = tmp_path_factory.mktemp("prior")
    ckpt, _ = train_tiny_prior(str(root))
    write_rgb_images(root / "test", n=1, size=(24, 28))
    return ckpt, str(root / "test")


def flip_a_weight_bit(src, dst):
    """Copy a checkpoint and flip one bit in the middle of its largest tensor's stored bytes."""
    shutil.copy(src, dst)
    with zipfile.ZipFile(dst) as z:
        info = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    with open(dst, "r+b") as f:
        f.seek(info.header_offset + 26)
        name_len, extra_len = struct.unpack("<HH", f.read(4))
        at = info.header_offset + 30 + name_len + extra_len + info.file_size // 2
        f.seek(at)
        byte = f.read(1)[0]
        f.seek(at)
        f.write(bytes([byte ^ 0x10]))
    return dst


def nan_weights(src, dst):
    ckpt = torch.load(src, weights_only=True)
    name = next(k for k, v in ckpt["model"].items() if v.is_floating_point())
    ckpt["model"][name] = ckpt["model"][name].clone().fill_(float("nan"))
    ckpt.pop("tensor_sha256", None)  # as a run that diverged would have saved it
    ckpt.pop("ema", None)
    torch.save(ckpt, dst)
    return dst


def restore_argv(ckpt, data, out, *sets):
    return ["--runner", "Test_3ch_inpainting_rgbrgb_256", "--config", "tiny.yml", "--test", "-o", str(out),
            "--set", f"test.data_path={data}", f"test.checkpoint={ckpt}", "test.n_steps_each=1",
            "test.step_lr=1e-5", *sets]


def case_png_config(tmp, ckpt, data):
    png = tmp / "config.png"
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(png)
    argv = restore_argv(ckpt, data, tmp / "o")
    argv[argv.index("tiny.yml")] = str(png)
    return argv


CASES = {
    "a PNG given as --config": (case_png_config, "config.png is not a text file"),
    "-o naming a file": (lambda tmp, ckpt, data: restore_argv(ckpt, data, shutil.copy(ckpt, tmp / "f.pth")),
                         "is a file, not a folder"),
    "patch_size 0": (lambda tmp, ckpt, data: restore_argv(ckpt, data, tmp / "o", "test.patch_size=0"),
                     "test.patch_size=0 (must be >= 1"),
    "negative patch_size": (lambda tmp, ckpt, data: restore_argv(ckpt, data, tmp / "o", "test.patch_size=-8"),
                            "test.patch_size=-8 (must be >= 1"),
    "step_lr so large the result is clipped noise": (
        lambda tmp, ckpt, data: restore_argv(ckpt, data, tmp / "o", "test.step_lr=0.01"), "schedule failed"),
    "NaN weights": (lambda tmp, ckpt, data: restore_argv(nan_weights(ckpt, tmp / "nan.pth"), data, tmp / "o"),
                    "holds NaN or infinite weights"),
    "--threads 0": (lambda tmp, ckpt, data: ["--threads", "0"] + restore_argv(ckpt, data, tmp / "o"),
                    "--threads 0: give at least 1"),
    "a bit-flipped checkpoint": (
        lambda tmp, ckpt, data: restore_argv(flip_a_weight_bit(ckpt, tmp / "flip.pth"), data, tmp / "o"),
        "flip.pth is damaged"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_line_naming_it(name, prior, tmp_path, capfd):
    make, expected = CASES[name]
    argv = make(tmp_path, *prior)
    capfd.readouterr()
    rc = hgm_main.main([str(a) for a in argv])
    err = capfd.readouterr().err
    last = err.strip().splitlines()[-1]
    assert rc == 1 and last.startswith("error: ") and expected in last, err[-800:]
    assert "Traceback" not in err


def test_a_full_disk_says_so_and_leaves_no_temporary(tmp_path, image_folder, monkeypatch, capfd):
    """A checkpoint write that runs out of space: one line saying so, the old checkpoint whole, no
    temporary left behind (it was a cryptic error and a partial *.tmp file)."""
    import models.checkpoint as checkpoint
    argv = ["--runner", "train_3ch_rgb", "--config", "tiny.yml", "--doc", "t", "--run", str(tmp_path / "R"),
            "--set", f"data.path={image_folder}", "training.n_iters=2", "training.val_freq=0"]
    assert hgm_main.main(argv) == 0
    log_dir = tmp_path / "R" / "logs" / "t"
    before = (log_dir / "checkpoint.pth").read_bytes()
    real_save = torch.save

    def full_disk(obj, f, *a, **k):
        real_save(obj, f, *a, **k)
        with open(f, "ab") as fh:
            fh.write(b"x" * 100)
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(checkpoint.torch, "save", full_disk)
    capfd.readouterr()
    assert hgm_main.main(argv[:-2] + ["training.n_iters=4", "training.val_freq=0", "--resume_training"]) == 1
    last = capfd.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("error: no space left on the device writing") and "checkpoint" in last, last
    assert not [f for f in os.listdir(log_dir) if ".tmp-" in f]
    assert (log_dir / "checkpoint.pth").read_bytes() == before


def test_atomic_write_on_a_full_disk_is_a_disk_full_error(tmp_path):
    def writer(tmp):
        with open(tmp, "wb") as f:
            f.write(b"partial")
        raise OSError(errno.EDQUOT, "Disk quota exceeded")
    with pytest.raises(DiskFull, match="no space left on the device writing .*x.bin"):
        atomic_write(str(tmp_path / "x.bin"), writer)
    assert os.listdir(tmp_path) == []


def test_checkpoints_carry_a_checksum_and_older_ones_still_load(prior, tmp_path):
    ckpt, _ = prior
    assert len(torch.load(ckpt, weights_only=True)["tensor_sha256"]) == 64
    load_checkpoint(ckpt)
    old = torch.load(ckpt, weights_only=True)
    old.pop("tensor_sha256")
    torch.save(old, tmp_path / "old.pth")  # written before checkpoints had a checksum
    assert load_checkpoint(str(tmp_path / "old.pth"))["step"] == 2
    with pytest.raises(HGMError, match="flip.pth is damaged"):
        load_checkpoint(flip_a_weight_bit(ckpt, tmp_path / "flip.pth"))


def test_exported_priors_carry_a_checksum(prior, tmp_path):
    from scripts import export_prior
    export_prior.export(prior[0], str(tmp_path / "p.pth"))
    assert "tensor_sha256" in torch.load(tmp_path / "p.pth", weights_only=True)
    load_checkpoint(str(tmp_path / "p.pth"))
    with pytest.raises(HGMError, match="damaged"):
        load_checkpoint(flip_a_weight_bit(str(tmp_path / "p.pth"), tmp_path / "flip.pth"))
    shutil.copy(prior[0], tmp_path / "c.pth")
    with pytest.raises(HGMError, match="c.pth is the checkpoint being exported"):
        export_prior.export(str(tmp_path / "c.pth"), str(tmp_path / "c.pth"))
    assert "optimizer" in torch.load(tmp_path / "c.pth", weights_only=True)
