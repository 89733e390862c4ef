"""Image folders: listing, decoding every mode to RGB floats, bad files, crops, the validation split."""
import logging
import os

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import write_rgb_images
from datasets.errors import HGMError
from datasets.image_files import list_images, read_image, read_images
from datasets.training_data import RandomCrops, as_float, to_storage, training_images


def save(arr, path, **kw):
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    Image.fromarray(arr).save(str(path), **kw)
    return str(path)


def rgb(h=8, w=10, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_listing_is_recursive_sorted_and_filters_extensions(tmp_path):
    want = []
    for i, ext in enumerate(["png", "jpg", "jpeg", "tif", "tiff", "bmp"]):
        want.append(save(rgb(seed=i), tmp_path / ("sub" if i % 2 else "") / f"a{i}.{ext}"))
    want.append(save(rgb(seed=9), tmp_path / "sub" / "deeper" / "b.PNG"))  # extension case does not matter
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "sub" / "x.gif.bak").write_text("no")
    got = list_images(str(tmp_path))
    assert sorted(got) == sorted(want)
    assert got == sorted(got, key=lambda p: (os.path.dirname(p), os.path.basename(p)))  # a stable order
    top = list_images(str(tmp_path), recursive=False)
    assert sorted(top) == sorted(p for p in want if os.path.dirname(p) == str(tmp_path))
    for p in got:  # every listed format decodes
        x = read_image(p)
        assert x.shape == (3, 8, 10) and x.dtype == torch.float32
        assert 0 <= x.min() and x.max() <= 1


def test_lossless_formats_read_back_exactly(tmp_path):
    arr = rgb(6, 7, seed=3)
    for ext in ["png", "tif", "bmp"]:
        x = read_image(save(arr, tmp_path / f"a.{ext}"))
        assert torch.equal(x, torch.from_numpy(arr).permute(2, 0, 1).float() / 255)


def test_grayscale_becomes_three_equal_channels(tmp_path):
    g = np.arange(0, 240, 4, dtype=np.uint8).reshape(6, 10)
    x = read_image(save(g, tmp_path / "g.png"))
    assert x.shape == (3, 6, 10)
    for c in range(3):
        assert torch.equal(x[c], torch.from_numpy(g).float() / 255)


def test_rgba_drops_alpha(tmp_path):
    arr = rgb(5, 6, seed=1)
    alpha = np.random.default_rng(2).integers(0, 256, (5, 6, 1), dtype=np.uint8)
    alpha[0, 0] = 0  # fully transparent pixels keep their colour too
    x = read_image(save(np.concatenate([arr, alpha], 2), tmp_path / "a.png"))
    assert torch.equal(x, torch.from_numpy(arr).permute(2, 0, 1).float() / 255)


@pytest.mark.parametrize("transparency", [False, True])
def test_palette_image_uses_palette_colours(tmp_path, transparency):
    palette = np.array([[10, 20, 30], [200, 100, 0], [0, 255, 7], [99, 98, 97]], dtype=np.uint8)
    idx = np.random.default_rng(0).integers(0, 4, (5, 7), dtype=np.uint8)
    img = Image.fromarray(idx)
    img.putpalette(palette.flatten().tolist())
    assert img.mode == "P"
    path = str(tmp_path / "p.png")
    img.save(path, **({"transparency": 0} if transparency else {}))
    with Image.open(path) as check:
        assert check.mode == "P" and (("transparency" in check.info) == transparency)
    x = read_image(path)
    want = torch.from_numpy(palette[idx]).permute(2, 0, 1).float() / 255
    assert torch.equal(x, want)


def test_sixteen_bit_grayscale_keeps_precision(tmp_path):
    vals = np.array([[0, 257 * 100, 1000, 65535], [1, 32768, 12345, 65534]], dtype=np.uint16)
    path = save(vals, tmp_path / "g16.png")
    with Image.open(path) as check:
        assert check.mode.startswith("I")  # really a 16-bit file
    x = read_image(path)
    assert x.shape == (3, 2, 4) and x.dtype == torch.float32
    want = torch.from_numpy(vals.astype(np.float64) / 65535)
    for c in range(3):
        assert torch.allclose(x[c].double(), want, rtol=1e-6, atol=1e-9)
    assert x[0, 0, 1].item() == pytest.approx(100 / 255, rel=1e-6)
    # 1000/65535 is not an 8-bit level: an 8-bit decode would be off by ~3%
    assert x[0, 0, 2].item() == pytest.approx(1000 / 65535, rel=1e-6)
    assert x[0, 0, 3].item() == 1.0 and x[0, 0, 0].item() == 0.0


def test_sixteen_bit_precision_survives_preloading(tmp_path):
    vals = np.full((20, 20), 1000, dtype=np.uint16)
    vals[::2, ::3] = 40000
    save(vals, tmp_path / "d" / "a16.png")
    save(rgb(20, 20), tmp_path / "d" / "b8.png")
    train, val, n = training_images(str(tmp_path / "d"), 16, val_images=0)
    assert n == 2 and len(train) == 2 and val == []
    by_dtype = {x.dtype: x for x in train}
    assert set(by_dtype) == {torch.uint8, torch.float32}  # 8-bit stored compactly, 16-bit as floats
    x16 = as_float(by_dtype[torch.float32])
    assert x16[0, 1, 0].item() == pytest.approx(1000 / 65535, rel=1e-6)
    assert x16[0, 0, 0].item() == pytest.approx(40000 / 65535, rel=1e-6)


def test_to_storage_round_trip():
    x8 = torch.from_numpy(rgb(4, 4)).permute(2, 0, 1).float() / 255
    s = to_storage(x8)
    assert s.dtype == torch.uint8 and torch.equal(as_float(s), x8)
    xf = torch.full((3, 2, 2), 0.3)
    assert to_storage(xf).dtype == torch.float32


def test_missing_and_empty_folders(tmp_path):
    with pytest.raises(HGMError, match="does not exist"):
        list_images(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(HGMError, match="no images"):
        list_images(str(tmp_path / "empty"))
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "a.txt").write_text("x")
    with pytest.raises(HGMError, match="no images"):
        training_images(str(tmp_path / "text"), 16)
    with pytest.raises(HGMError):
        list_images(None)
    with pytest.raises(HGMError, match="does not exist"):
        training_images(str(tmp_path / "nope"), 16)


def test_corrupt_file_is_skipped_with_a_warning(tmp_path, hgm_log):
    folder = tmp_path / "mixed"
    good = write_rgb_images(folder, n=3)
    bad = folder / "x.png"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 500, dtype=np.uint8).tobytes())
    items = read_images(list_images(str(folder)))
    assert sorted(p for p, _ in items) == sorted(good)
    warnings = [r for r in hgm_log.records if r.name == "hgm" and r.levelno == logging.WARNING]
    text = "\n".join(r.getMessage() for r in warnings)
    assert str(bad) in text
    assert "1 of 4 files could not be read" in text
    hgm_log.clear()
    train, val, n = training_images(str(folder), 16, val_images=1)
    assert n == 3 and len(train) == 2 and len(val) == 1
    assert any("1 of 4" in r.getMessage() for r in hgm_log.records)


def test_all_corrupt_is_an_error(tmp_path, hgm_log):
    for name in ["a.png", "b.jpg"]:
        (tmp_path / name).write_bytes(b"\x89PNG not really" * 10)
    with pytest.raises(HGMError, match="2 unreadable"):
        training_images(str(tmp_path), 16)
    assert any("2 of 2" in r.getMessage() for r in hgm_log.records)


def test_images_smaller_than_the_crop_are_skipped(tmp_path, hgm_log):
    big = save(rgb(16, 40), tmp_path / "big.png")          # exactly the crop height: usable
    save(rgb(15, 40), tmp_path / "short.png")               # one row short
    save(rgb(40, 10), tmp_path / "narrow.png")
    items = read_images(list_images(str(tmp_path)), min_size=16)
    assert [p for p, _ in items] == [big]
    assert any("2 of 3" in r.getMessage() and "smaller" in r.getMessage() for r in hgm_log.records)


def test_all_too_small_names_the_crop_size(tmp_path):
    save(rgb(10, 40), tmp_path / "a.png")
    save(rgb(30, 12), tmp_path / "b.png")
    with pytest.raises(HGMError) as e:
        training_images(str(tmp_path), 24)
    assert "24" in str(e.value) and "smaller" in str(e.value)


def dihedral(x):
    """The 8 flips/rotations of a C×H×W tensor."""
    out = []
    for flip in (False, True):
        y = x.flip(-1) if flip else x
        out += [torch.rot90(y, k, dims=(-2, -1)) for k in range(4)]
    return out


def test_random_crops_shapes_and_windows():
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(3, 20, 30, generator=g), (torch.rand(3, 17, 16, generator=g) * 255).to(torch.uint8)]
    ds = RandomCrops(images, 16, augment=False, min_len=5)
    assert len(ds) == 5
    torch.manual_seed(0)
    for i in range(10):
        c = ds[i]
        assert c.shape == (3, 16, 16) and c.dtype == torch.float32 and c.is_contiguous()
        src = as_float(images[i % 2])
        h, w = src.shape[-2:]
        assert any(torch.equal(c, src[:, t:t + 16, left:left + 16]) for t in range(h - 15)
                   for left in range(w - 15))
    assert len(RandomCrops(images, 16, min_len=1)) == 2


def test_augmentation_only_permutes_pixels():
    x = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(1))
    variants = dihedral(x)
    assert len({tuple(v.flatten().tolist()) for v in variants}) == 8
    ds = RandomCrops([x], 8, augment=True)
    torch.manual_seed(0)
    seen = set()
    for _ in range(200):
        c = ds[0]
        # the multiset of values of each channel is the original's
        for ch in range(3):
            assert torch.equal(c[ch].flatten().sort().values, x[ch].flatten().sort().values)
        matches = [k for k, v in enumerate(variants) if torch.equal(c, v)]
        assert len(matches) == 1  # a flip/rotation of the whole crop, channels kept together
        seen.add(matches[0])
    assert seen == set(range(8))  # all 8 augmentations occur (missing one: p < 1e-10)


def test_augmented_crops_of_a_larger_image_keep_pixel_multisets():
    x = torch.rand(3, 12, 14, generator=torch.Generator().manual_seed(2))
    ds = RandomCrops([x], 8, augment=True)
    torch.manual_seed(1)
    for _ in range(30):
        c = ds[0]
        ok = False
        for t in range(5):
            for left in range(7):
                if any(torch.equal(c, v) for v in dihedral(x[:, t:t + 8, left:left + 8])):
                    ok = True
        assert ok


def test_validation_split_is_deterministic(tmp_path):
    write_rgb_images(tmp_path / "imgs", n=6, size=(20, 20))
    folder = str(tmp_path / "imgs")

    def split(seed):
        train, val, n = training_images(folder, 16, val_images=2, seed=seed)
        assert n == 6 and len(train) == 4 and len(val) == 2
        return [x.flatten()[:16].tolist() for x in train], [x.flatten()[:16].tolist() for x in val]
    tr0, va0 = split(0)
    assert split(0) == (tr0, va0)
    all_imgs = sorted(tr0 + va0)
    assert len({tuple(v) for v in all_imgs}) == 6  # disjoint, and together every image
    others = [split(s) for s in range(1, 8)]
    assert all(sorted(t + v) == all_imgs for t, v in others)
    assert any(v != va0 for _, v in others)  # the seed matters
    with pytest.raises(HGMError, match="val_images"):
        training_images(folder, 16, val_images=6)


def test_lazy_loading_gives_the_same_split(tmp_path):
    write_rgb_images(tmp_path / "imgs", n=5, size=(20, 20))
    folder = str(tmp_path / "imgs")
    tr_p, va_p, _ = training_images(folder, 16, val_images=2, preload=True, seed=3)
    tr_l, va_l, _ = training_images(folder, 16, val_images=2, preload=False, seed=3)
    assert len(tr_l) == 3 and len(va_l) == 2
    for a, b in zip(tr_p + va_p, list(tr_l) + list(va_l)):
        assert torch.equal(as_float(a), b)


def test_16bit_colour_tiff_keeps_its_precision(tmp_path):
    import tifffile

    from datasets.image_files import read_image
    a = (np.random.default_rng(0).random((6, 7, 3)) * 65535).astype(np.uint16)
    tifffile.imwrite(tmp_path / "deep.tif", a, photometric="rgb")
    x = read_image(str(tmp_path / "deep.tif"))
    assert x.shape == (3, 6, 7)
    assert np.abs(x.permute(1, 2, 0).numpy() - a / 65535.0).max() < 1e-6


def test_16bit_colour_png_is_read_to_8_bit_precision(tmp_path):
    """Pillow reads 48-bit PNGs at 8 bits per channel: within one 8-bit level."""
    import struct
    import zlib

    from datasets.image_files import read_image
    a = (np.random.default_rng(1).random((5, 6, 3)) * 65535).astype(">u2")
    raw = b"".join(b"\x00" + a[i].tobytes() for i in range(5))

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)
    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 6, 5, 16, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    (tmp_path / "deep.png").write_bytes(png)
    x = read_image(str(tmp_path / "deep.png"))
    assert x.shape == (3, 5, 6)
    assert np.abs(x.permute(1, 2, 0).numpy() - a.astype(np.float64) / 65535.0).max() <= 1 / 255
