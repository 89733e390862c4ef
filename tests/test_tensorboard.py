"""TensorBoard after a tiny training run: image grids (denoised validation crops, samples) and the
learning rate and gradient norm scalars; pictures do not change the training run."""
import glob
import os
import struct

import torch

import main as hgm_main
from tests.helpers import write_images


def read_events(folder):
    """Every Event in the tfevents files under `folder` (TFRecord framing parsed by hand)."""
    from tensorboardX.proto import event_pb2
    events = []
    for path in glob.glob(os.path.join(folder, "**", "*tfevents*"), recursive=True):
        with open(path, "rb") as f:
            data = f.read()
        pos = 0
        while pos + 12 <= len(data):
            (n,) = struct.unpack("<Q", data[pos:pos + 8])
            e = event_pb2.Event()
            e.ParseFromString(data[pos + 12:pos + 12 + n])
            events.append(e)
            pos += 12 + n + 4
    return events


def train(tmp_path, doc, *sets):
    data = write_images(tmp_path / "train", names=("a", "b", "c", "d"), size=(40, 48))
    run = str(tmp_path / "run")
    assert hgm_main.main(["--runner", "train_12ch", "--config", "tiny.yml", "--doc", doc, "--run", run, "--quiet",
                          "--set", f"data.path={data}", "training.n_iters=4", "training.snapshot_freq=2",
                          "training.log_freq=2", *sets]) == 0
    return run


def test_tensorboard_has_images_lr_and_grad_norm(tmp_path, monkeypatch):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    run = train(tmp_path, "tb")
    events = read_events(os.path.join(run, "tensorboard", "tb"))
    images = {(v.tag, e.step): v.image for e in events for v in e.summary.value if v.HasField("image")}
    scalars = {(v.tag, e.step) for e in events for v in e.summary.value if not v.HasField("image")}
    assert {("denoise", 2), ("denoise", 4), ("sample", 2), ("sample", 4)} <= set(images)
    png = images[("denoise", 4)]
    assert png.encoded_image_string.startswith(b"\x89PNG") and png.width > 16 and png.height > 16
    # clean row + (noisy, denoised) at 3 levels = 7 rows of 16-pixel crops
    assert png.height >= 7 * 16
    assert {("lr", 2), ("grad_norm", 2), ("loss", 2)} <= scalars


def test_pictures_do_not_change_training(tmp_path, monkeypatch):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    a = train(tmp_path / "a", "x")
    b = train(tmp_path / "b", "x", "training.tb_images=0")
    wa = torch.load(os.path.join(a, "logs", "x", "checkpoint.pth"), weights_only=True)["model"]
    wb = torch.load(os.path.join(b, "logs", "x", "checkpoint.pth"), weights_only=True)["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not any(v.HasField("image") for e in read_events(os.path.join(b, "tensorboard", "x"))
                   for v in e.summary.value)
