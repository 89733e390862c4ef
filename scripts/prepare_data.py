#!/usr/bin/env python
"""Prepare the data folders the tables and the paper's training runs read, from the files as
their publishers distribute them, and check a prepared folder.

    python scripts/prepare_data.py kodak24 SRC -o $DATA      # $DATA/kodak24: kodim01..24.png, 500×500
    python scripts/prepare_data.py mcmaster SRC -o $DATA     # $DATA/mcmaster: 1..18.png, 500×500
    python scripts/prepare_data.py cbsd68 SRC -o $DATA       # $DATA/cbsd68: 68 PNGs, 481×321 or 321×481
    python scripts/prepare_data.py masks -o $DATA            # $DATA/masks: the repository's four masks
    python scripts/prepare_data.py lsun SRC_LMDB -o $DATA    # $DATA/lsun_bedroom: PNG files (pip install lmdb)
    python scripts/prepare_data.py msr SRC -o $DATA          # $DATA/msr_demosaicking: the training list's images
    python scripts/prepare_data.py check kodak24 $DATA/kodak24   # is a folder what the tables expect?

SRC is a folder (searched recursively) or a .zip archive. The evaluation sets are the test sets
distributed with the FFDNet / DPIR repositories (Kodak24 and McMaster as 500×500 images, CBSD68
at the BSDS size); names, counts and sizes are checked. The 768×512 Kodak PhotoCD originals are
NOT the images the tables use, and no crop is guessed from them. LSUN bedroom ships as an LMDB
database of encoded images (key -> bytes), exported here to one PNG per image; the MSR
demosaicking set lists its training images in train.txt files beside its groundtruth/ folders.
"""
from __future__ import annotations

import argparse
import io
import os
import re
import shutil
import sys
import zipfile
from dataclasses import dataclass

from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from datasets.errors import HGMError
from scripts.cli import one_line_errors

IMAGE_EXT = (".png", ".tif", ".tiff", ".bmp", ".jpg", ".jpeg", ".ppm")


@dataclass(frozen=True)
class TestSet:
    """An evaluation set: how its files are named, how many, which sizes (W, H)."""
    folder: str
    pattern: str  # a regular expression on the file's stem; group 1 is the number where there is one
    count: int
    sizes: tuple[tuple[int, int], ...]
    stem: str  # how a prepared file is named, from the number ("{n}") or the stem ("{stem}")
    wrong_sizes: dict[tuple[int, int], str] | None = None  # sizes that mean another version of the set


KODAK_ORIGINALS = ("the 768×512 Kodak PhotoCD originals, not the 500×500 images the tables use (distributed "
                   "with the FFDNet/DPIR test sets); no crop is guessed from them")
SETS = {
    "kodak24": TestSet("kodak24", r"kodim(\d\d)", 24, ((500, 500),), "kodim{n:02d}",
                       {(768, 512): KODAK_ORIGINALS, (512, 768): KODAK_ORIGINALS}),
    "mcmaster": TestSet("mcmaster", r"(\d{1,2})", 18, ((500, 500),), "{n}"),
    "cbsd68": TestSet("cbsd68", r"(\d+)", 68, ((481, 321), (321, 481)), "{stem}"),
}
MASKS = ("random50", "random80", "box64", "text")


class Source:
    """The image files of a folder (recursive) or a .zip archive: (name, opener) pairs."""

    def __init__(self, path: str):
        self.path = path
        if os.path.isdir(path):
            self.files = sorted(os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs)
            self.zip = None
        elif zipfile.is_zipfile(path):
            self.zip = zipfile.ZipFile(path)
            self.files = sorted(n for n in self.zip.namelist() if not n.endswith("/"))
        else:
            raise HGMError(f"{path} is neither a folder nor a .zip archive")

    def images(self) -> list[str]:
        return [f for f in self.files if f.lower().endswith(IMAGE_EXT) and "__MACOSX" not in f]

    def read(self, name: str) -> bytes:
        if self.zip is not None:
            return self.zip.read(name)
        with open(name, "rb") as f:
            return f.read()


def stem_of(name: str) -> str:
    return os.path.splitext(os.path.basename(name))[0]


def fresh_folder(path: str) -> str:
    if os.path.isdir(path) and os.listdir(path):
        raise HGMError(f"{path} already holds files; remove it or choose another -o")
    os.makedirs(path, exist_ok=True)
    return path


def write_png(data: bytes, dst: str) -> tuple[int, int]:
    """The image in `data` as a PNG at `dst` (PNG bytes are copied unchanged); returns (W, H)."""
    img = Image.open(io.BytesIO(data))
    size = img.size
    if img.format == "PNG":
        with open(dst, "wb") as f:
            f.write(data)
    else:
        img.save(dst)
    return size


def pick(test_set: TestSet, src: Source) -> dict[str, str]:
    """{prepared stem: source file} for the set, checked for count and names."""
    chosen: dict[str, str] = {}
    for name in src.images():
        m = re.fullmatch(test_set.pattern, stem_of(name), re.I)
        if not m:
            continue
        stem = test_set.stem.format(n=int(m.group(1)), stem=stem_of(name))
        if stem in chosen:
            raise HGMError(f"{src.path} holds {stem} twice ({chosen[stem]} and {name}); point SRC at one copy")
        chosen[stem] = name
    if len(chosen) != test_set.count:
        raise HGMError(f"{src.path} holds {len(chosen)} {test_set.folder} images named like "
                       f"'{test_set.pattern}', not {test_set.count}")
    return chosen


def check_size(test_set: TestSet, name: str, size: tuple[int, int]) -> None:
    if size in test_set.sizes:
        return
    why = (test_set.wrong_sizes or {}).get(size)
    want = " or ".join(f"{w}×{h}" for w, h in test_set.sizes)
    raise HGMError(f"{name} is {size[0]}×{size[1]}: " + (why or f"{test_set.folder} images are {want}"))


def prepare_test_set(which: str, src_path: str, out_root: str) -> str:
    test_set, src = SETS[which], Source(src_path)
    chosen = pick(test_set, src)
    for name in chosen.values():  # every size checked before anything is written
        check_size(test_set, name, Image.open(io.BytesIO(src.read(name))).size)
    out = fresh_folder(os.path.join(out_root, test_set.folder))
    for stem, name in sorted(chosen.items()):
        write_png(src.read(name), os.path.join(out, stem + ".png"))
    return out


def check_test_set(which: str, folder: str) -> int:
    """Check a prepared folder; returns the number of images."""
    test_set = SETS[which]
    how = f"prepare it with: python scripts/prepare_data.py {which} SRC -o DATA"
    if not os.path.isdir(folder):
        raise HGMError(f"no folder {folder}; {how}")
    pngs = sorted(f for f in os.listdir(folder) if f.endswith(".png"))
    want = {test_set.stem.format(n=int(m.group(1)), stem=stem_of(f)) + ".png"
            for f in pngs if (m := re.fullmatch(test_set.pattern, stem_of(f), re.I))}
    if len(pngs) != test_set.count or set(pngs) != want:
        raise HGMError(f"{folder} holds {len(pngs)} PNGs, not the {test_set.count} {which} images; {how}")
    for f in pngs:
        try:
            check_size(test_set, os.path.join(folder, f), Image.open(os.path.join(folder, f)).size)
        except HGMError as e:
            raise HGMError(f"{e}; {how}") from e
    return len(pngs)


def prepare_masks(out_root: str) -> str:
    out = fresh_folder(os.path.join(out_root, "masks"))
    for name in MASKS:
        shutil.copyfile(os.path.join(ROOT, "masks", name + ".png"), os.path.join(out, name + ".png"))
    return out


def centre_square(img: Image.Image, size: int) -> Image.Image:
    """Resize the short side to `size` (bicubic), then the centre size×size crop (the NCSN recipe)."""
    w, h = img.size
    scale = size / min(w, h)
    img = img.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BICUBIC)
    w, h = img.size
    left, top = (w - size) // 2, (h - size) // 2
    return img.crop((left, top, left + size, top + size))


def prepare_lsun(src: str, out_root: str, size: int, limit: int | None) -> str:
    try:
        import lmdb
    except ImportError as e:
        raise HGMError("reading LSUN's LMDB database needs the lmdb package: pip install lmdb") from e
    if not os.path.exists(os.path.join(src, "data.mdb")):
        raise HGMError(f"{src} is not an LMDB folder (no data.mdb in it): give the unzipped bedroom_train_lmdb")
    out = fresh_folder(os.path.join(out_root, "lsun_bedroom"))
    env = lmdb.open(src, readonly=True, lock=False, readahead=False, max_readers=1)
    n = 0
    with env.begin(write=False) as txn:
        for key, value in txn.cursor():
            if limit is not None and n >= limit:
                break
            name = re.sub(r"[^\w.-]", "_", key.decode("ascii", "replace"))
            img = Image.open(io.BytesIO(value)).convert("RGB")
            (centre_square(img, size) if size else img).save(os.path.join(out, name + ".png"))
            n += 1
    env.close()
    if n == 0:
        raise HGMError(f"{src} holds no images")
    return out


def prepare_msr(src: str, out_root: str, split: str) -> str:
    """Copy the ground truths that each `<split>.txt` lists (ids, one per line) from the groundtruth/
    folder beside it; names become <subset>_<id>.png (subset: the folder that holds the list)."""
    lists = sorted(os.path.join(d, f) for d, _, fs in os.walk(src) for f in fs if f == f"{split}.txt")
    if not lists:
        raise HGMError(f"no {split}.txt under {src}: give the unpacked MSR demosaicking folder")
    copies = []  # every listed file is found before anything is written
    for listing in lists:
        folder = os.path.dirname(listing)
        gt = os.path.join(folder, "groundtruth")
        subset = re.sub(r"[^\w.-]", "_", os.path.relpath(folder, src))
        with open(listing) as f:
            ids = [line.strip() for line in f if line.strip()]
        for i in ids:
            found = [os.path.join(gt, i + ext) for ext in IMAGE_EXT if os.path.isfile(os.path.join(gt, i + ext))]
            if not found:
                raise HGMError(f"{listing} lists {i}, which is not in {gt}")
            copies.append((found[0], f"{subset}_{i}{os.path.splitext(found[0])[1]}"))
    if not copies:
        raise HGMError(f"the {split}.txt lists under {src} name no images")
    out = fresh_folder(os.path.join(out_root, "msr_demosaicking"))
    for path, name in copies:
        shutil.copyfile(path, os.path.join(out, name))  # 16-bit files stay 16-bit
    return out


@one_line_errors
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("what", choices=[*SETS, "masks", "lsun", "msr", "check"])
    p.add_argument("src", nargs="?", help="the files as distributed (folder or .zip); for check: the set's name")
    p.add_argument("folder", nargs="?", help="check: the prepared folder")
    p.add_argument("-o", "--out", default="data", help="the data root the set's folder goes into (default: data)")
    p.add_argument("--size", type=int, default=256, help="lsun: centre square side (0: as stored)")
    p.add_argument("--limit", type=int, default=None, help="lsun: at most this many images")
    p.add_argument("--split", default="train", help="msr: the list to copy (train | validation | test)")
    a = p.parse_args(argv)
    if a.what == "check":
        if a.src not in SETS or not a.folder:
            raise HGMError(f"check takes a set ({', '.join(SETS)}) and a folder")
        print(f"{a.folder}: {check_test_set(a.src, a.folder)} {a.src} images, as the tables expect")
        return 0
    if a.what == "masks":
        out = prepare_masks(a.out)
    elif not a.src:
        raise HGMError(f"{a.what} needs SRC, the files as distributed")
    elif a.what in SETS:
        out = prepare_test_set(a.what, a.src, a.out)
    elif a.what == "lsun":
        out = prepare_lsun(a.src, a.out, a.size, a.limit)
    else:
        out = prepare_msr(a.src, a.out, a.split)
    print(f"wrote {len(os.listdir(out))} files to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
