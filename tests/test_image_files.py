"""Image and mask files mean what they say: one pixel limit for every reader (from the header, nothing
decoded), masks whose transparency is the hole, and data folders whose skipped parts are named."""
import os

import numpy as np
import pytest
import torch
from PIL import Image

import main as hgm_main
from conftest import write_rgb_images
from datasets import image_files, training_data
from datasets.errors import HGMError
from datasets.masks import read_mask_file


def write(path, arr):
    if str(path).endswith((".tif", ".tiff")):
        import tifffile
        colour = "rgb" if arr.ndim == 3 else None
        tifffile.imwrite(str(path), arr, tile=(16, 16), compression="zlib", photometric=colour)
    else:
        Image.fromarray(arr).save(str(path))
    return str(path)


@pytest.mark.parametrize("ext", ["png", "jpg", "tif"])
def test_every_reader_refuses_an_image_over_the_pixel_limit(tmp_path, monkeypatch, ext):
    """Item 6: the limit is named; TIFFs (tiled, compressed: a 236 KB file can hold 15000×15000) had none."""
    path = write(tmp_path / f"big.{ext}", np.zeros((64, 80, 3), np.uint8))
    monkeypatch.setattr(image_files, "MAX_PIXELS", 64 * 80 - 1)
    for read in (image_files.read_image, image_files.image_size, lambda p: read_mask_file(p, 64, 80)):
        with pytest.raises(HGMError, match=r"80×64 = 5,120 pixels, over the limit of 5,119 pixels per image \(HGM_"):
            read(path)
    monkeypatch.setattr(image_files, "MAX_PIXELS", 64 * 80)
    assert image_files.read_image(path).shape == (3, 64, 80)


def test_the_lazy_header_check_decodes_nothing(tmp_path, monkeypatch):
    """data.preload=false measures images by their headers: a TIFF is never decoded for that, not even
    one Pillow cannot open (float or 16-bit colour samples), which was decoded whole."""
    import tifffile
    path = write(tmp_path / "a.tif", np.zeros((40, 48, 3), np.float32))

    def no_decoding(*a, **k):
        raise AssertionError("decoded")
    monkeypatch.setattr(tifffile, "imread", no_decoding)
    monkeypatch.setattr(tifffile.TiffPage, "asarray", no_decoding)
    monkeypatch.setattr(Image.Image, "load", no_decoding)
    assert image_files.usable_paths([path], min_size=16) == [path]
    assert image_files.image_size(path) == (40, 48)


def rgba(alpha, colour=255):
    h, w = alpha.shape
    return np.dstack([np.full((h, w, 3), colour, np.uint8), alpha.astype(np.uint8)])


def test_a_transparent_hole_is_missing(tmp_path):
    """Item 5: an RGBA mask whose transparent area is the hole was read as all known."""
    alpha = np.full((6, 7), 255, np.uint8)
    alpha[2:4, 3:6] = 0
    m = read_mask_file(write(tmp_path / "hole.png", rgba(alpha)), 6, 7)
    assert torch.equal(m[0], torch.from_numpy(alpha == 255).float()) and m.shape == (3, 6, 7)
    # an opaque RGBA image: its colours are the mask, as for RGB
    grey = np.where(alpha == 255, 255, 0).astype(np.uint8)
    assert torch.equal(read_mask_file(write(tmp_path / "opaque.png", rgba(np.full((6, 7), 255), grey[..., None])),
                                      6, 7), m)
    # transparency and colours that mark different holes: which one is meant is not clear
    colours = np.dstack([np.zeros((6, 7, 3), np.uint8), alpha])
    colours[0, 0, :3] = 255
    with pytest.raises(HGMError, match="both by transparency and by colour"):
        read_mask_file(write(tmp_path / "both.png", colours), 6, 7)


def test_a_mask_with_nothing_missing_is_refused(tmp_path):
    with pytest.raises(HGMError, match="all.png marks no pixel missing"):
        read_mask_file(write(tmp_path / "all.png", np.full((6, 7), 255, np.uint8)), 6, 7)
    with pytest.raises(HGMError, match="opaque.png marks no pixel missing"):
        read_mask_file(write(tmp_path / "opaque.png", rgba(np.full((6, 7), 255))), 6, 7)


def test_the_known_fraction_is_logged_per_mask(tmp_path, hgm_log):
    data = tmp_path / "data"
    write_rgb_images(data, n=2, size=(8, 10))
    alpha = np.full((8, 10), 255, np.uint8)
    alpha[:, :4] = 0
    mask = write(tmp_path / "m.png", rgba(alpha))
    from datasets.inputs import load_inputs
    from runners.config import load_config
    sets = {"test.data_path": str(data), "test.task": "inpaint", "test.mask": mask}
    load_inputs(load_config("tiny.yml", sets)["test"])
    for stem in ("img_00", "img_01"):
        assert f"{stem}: mask {mask}, 60.0% of the pixels known" in hgm_log.text


def test_folder_symlinks_are_named_not_skipped_silently(tmp_path, hgm_log):
    write_rgb_images(tmp_path / "data" / "a", n=1)
    write_rgb_images(tmp_path / "elsewhere", n=2)
    os.symlink(tmp_path / "elsewhere", tmp_path / "data" / "linked")
    assert len(image_files.list_images(str(tmp_path / "data"))) == 1
    assert "1 folder symlink(s) not followed" in hgm_log.text and "linked" in hgm_log.text


def test_a_corrupt_held_out_image_is_replaced_without_preloading(tmp_path, capfd):
    """One truncated JPEG among 9, landing in the one-image validation split, stopped training with
    data.preload=false ("no usable image among 1 files"); another image is held out instead."""
    data = tmp_path / "data"
    write_rgb_images(data, n=9)
    paths = image_files.list_images(str(data))
    held = training_data.lazy_split(paths, 16, 1, seed=0)[2][0]  # the image seed 0 holds out
    blob = open(held, "rb").read()
    os.remove(held)
    Image.open(paths[0 if held != paths[0] else 1]).convert("RGB").save(held[:-4] + ".jpg", quality=95)
    cut = held[:-4] + ".jpg"
    with open(cut, "r+b") as f:
        f.truncate(len(open(cut, "rb").read()) // 2)
    assert blob and training_data.lazy_split(image_files.list_images(str(data)), 16, 1, seed=0)[2] != [cut]
    rc = hgm_main.main(["--runner", "train_3ch_rgb", "--config", "tiny.yml", "--doc", "t", "--run",
                        str(tmp_path / "R"), "--set", f"data.path={data}", "data.preload=false", "data.val_images=1",
                        "training.n_iters=2", "training.val_freq=1"])
    err = capfd.readouterr().err
    assert rc == 0, err[-800:]
    assert os.path.basename(cut) in err and "held out in its place" in err
