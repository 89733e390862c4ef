"""Image files at full precision and as displayed: 16-bit PNG/TIFF inputs read without loss and
written back at 16 bits when asked, EXIF orientation applied on read (and said in the log)."""
import os
import warnings

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image, ImageOps
from torchvision.io import ImageReadMode, decode_png, read_file

from datasets.errors import HGMError
from datasets.image_files import ORIENTATIONS, png16_bytes, read_image, save_image


def random16(h=9, w=11, seed=0):
    return np.random.default_rng(seed).integers(0, 65536, size=(h, w, 3), dtype=np.uint16)


def decode16(path):
    """An independent decoder (libpng through torchvision) -> H×W×C uint16."""
    with warnings.catch_warnings():  # torchvision 0.29 announces a move of its decoders to torchcodec
        warnings.simplefilter("ignore", DeprecationWarning)
        return decode_png(read_file(str(path)), mode=ImageReadMode.UNCHANGED).permute(1, 2, 0).numpy()


@pytest.mark.parametrize("ext", ["png", "tif"])
def test_sixteen_bit_colour_round_trips_without_loss(tmp_path, ext):
    """A 16-bit colour input is read at full precision (every value k as k/65535, which Pillow
    alone would cut to 8 bits for PNG) and save_image(bits=16) writes exactly those values back."""
    arr = random16()
    src = tmp_path / f"in.{ext}"
    if ext == "png":
        src.write_bytes(png16_bytes(arr))
        assert np.array_equal(decode16(src), arr)  # the encoder is a valid PNG writer
    else:
        tifffile.imwrite(src, arr, photometric="rgb")
    x = read_image(str(src))
    want = torch.from_numpy(arr.astype(np.int64)).permute(2, 0, 1)
    assert torch.equal((x.double() * 65535).round().to(torch.int64), want)
    save_image(x, str(tmp_path / "out.png"), bits=16)
    assert np.array_equal(decode16(tmp_path / "out.png"), arr)
    assert torch.equal(read_image(str(tmp_path / "out.png")), x)


def test_sixteen_bit_grey_output_and_bad_bit_depths(tmp_path):
    save_image(torch.full((1, 4, 5), 0.5), str(tmp_path / "g.png"), bits=16)
    assert decode16(tmp_path / "g.png").shape == (4, 5, 1) and decode16(tmp_path / "g.png").max() == 32768
    with pytest.raises(HGMError, match="12 bits"):
        save_image(torch.zeros(3, 2, 2), str(tmp_path / "x.png"), bits=12)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_on_read_and_logged(tmp_path, hgm_log, orientation):
    """Each of the eight EXIF orientations gives the image Pillow's exif_transpose shows."""
    arr = np.random.default_rng(orientation).integers(0, 256, size=(6, 10, 3), dtype=np.uint8)
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = orientation
    path = tmp_path / "photo.png"
    img.save(path, exif=exif.tobytes())
    with Image.open(path) as shown:
        want = np.asarray(ImageOps.exif_transpose(shown).convert("RGB"))
    got = (read_image(str(path)).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    assert np.array_equal(got, want)
    assert (f"EXIF orientation {orientation} applied" in hgm_log.text) == (orientation in ORIENTATIONS)


def test_a_restoration_writes_sixteen_bit_results_when_asked(tmp_path):
    """test.output_bits=16: the restored PNG holds 16 bits per sample and its metrics are those of
    the file read at full precision; another bit depth is refused before anything is written."""
    import csv

    import main as hgm_main
    from evaluation.metrics import psnr
    from tests.test_restore_regression import write_images, write_priors
    data, run = write_images(str(tmp_path / "images")), str(tmp_path / "run")
    write_priors(run)
    argv = ["--runner", "Test_12ch_demoscaicking_pool", "--doc", "pool", "--config", "tiny.yml", "--run", run, "--test"]
    sets = ["--set", f"test.data_path={data}", "test.n_steps_each=1", "test.step_lr=1e-5", "test.border=3",
            "test.init=menon", "test.start_level=5"]
    out = tmp_path / "out"
    assert hgm_main.main([*argv, "-o", str(out), *sets, "test.output_bits=16"]) == 0
    restored = out / "restored" / "im0.png"
    assert decode16(restored).dtype == np.uint16
    with open(out / "metrics.csv") as f:
        row = next(r for r in csv.DictReader(f) if r["image"] == "im0")
    gt = read_image(os.path.join(data, "im0.png"))
    assert float(row["psnr"]) == pytest.approx(psnr(read_image(str(restored)), gt), abs=1e-4)
    assert hgm_main.main([*argv, "-o", str(tmp_path / "bad"), *sets, "test.output_bits=12"]) != 0
    assert not os.path.exists(tmp_path / "bad" / "restored")
