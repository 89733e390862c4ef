"""The user's own masks: which colour is the hole (test.mask_convention), anti-aliased edges
(test.mask_threshold), and a warning for a mask that is probably inverted."""
import numpy as np
import pytest
import torch
from PIL import Image

from datasets.errors import HGMError
from datasets.masks import mask_for_image, read_mask_file


def painted_hole(tmp_path, name="hole.png", value=255, size=(40, 48), box=(10, 20, 12, 30), background=0):
    """An editor-style mask: a rectangle of `value` on `background` (8-bit grey)."""
    arr = np.full(size, background, np.uint8)
    t, b, left, r = box
    arr[t:b, left:r] = value
    path = tmp_path / name
    Image.fromarray(arr).save(path)
    return str(path), arr


def test_fill_white_makes_the_white_paint_the_hole(tmp_path):
    path, arr = painted_hole(tmp_path)
    known = read_mask_file(path, 40, 48, convention="fill_white")
    assert torch.equal(known[0].bool(), torch.from_numpy(arr == 0))
    assert torch.equal(read_mask_file(path, 40, 48, convention="known_white")[0].bool(), torch.from_numpy(arr == 255))
    with pytest.raises(HGMError, match="test.mask_convention='white_fill'"):
        read_mask_file(path, 40, 48, convention="white_fill")


def test_an_anti_aliased_mask_needs_a_threshold_and_then_splits_at_it(tmp_path):
    """Soft edges (values between black and white) are refused without test.mask_threshold (the
    error says to set it); with it, values >= threshold·255 are white."""
    arr = np.zeros((40, 48), np.uint8)
    arr[10:20, 12:30] = 255
    arr[9, 12:30], arr[20, 12:30] = 100, 200  # anti-aliased rows
    path = tmp_path / "soft.png"
    Image.fromarray(arr).save(path)
    with pytest.raises(HGMError, match="mask_threshold"):
        read_mask_file(str(path), 40, 48, convention="fill_white")
    hole = ~read_mask_file(str(path), 40, 48, convention="fill_white", threshold=0.5)[0].bool()
    assert torch.equal(hole, torch.from_numpy(arr >= 127.5))
    assert hole[20].any() and not hole[9].any()
    with pytest.raises(HGMError, match="test.mask_threshold=1.5"):
        read_mask_file(str(path), 40, 48, threshold=1.5)


def test_a_probably_inverted_mask_is_warned_about(tmp_path, hgm_log):
    """A hole painted white read as known_white marks most of the image missing in one large area:
    warned, naming the other convention. Read with fill_white it is not; nor is a random-sampling
    mask that leaves most pixels missing on purpose (its known pixels are scattered)."""
    path, _ = painted_hole(tmp_path)
    read_mask_file(path, 40, 48)
    assert "is it inverted" in hgm_log.text and "test.mask_convention=fill_white" in hgm_log.text
    hgm_log.clear()
    read_mask_file(path, 40, 48, convention="fill_white")
    rng = np.random.default_rng(0)
    scattered = tmp_path / "random80.png"
    Image.fromarray(((rng.random((40, 48)) >= 0.8) * 255).astype(np.uint8)).save(scattered)
    read_mask_file(str(scattered), 40, 48)
    assert "is it inverted" not in hgm_log.text


def test_the_runner_reads_masks_with_the_configured_convention(tmp_path):
    path, arr = painted_hole(tmp_path)
    tcfg = {"task": "inpaint", "mask": path, "mask_convention": "fill_white", "mask_threshold": None}
    assert torch.equal(mask_for_image(tcfg, "x", 40, 48)[1].bool(), torch.from_numpy(arr == 0))
