"""Owns image files and folders: reading them as RGB float tensors in [0, 1] and writing PNGs.

Grayscale, palette, RGBA and 16-bit images are converted to RGB; alpha is
dropped. 16-bit PNGs and TIFFs are read at full precision, and an EXIF orientation
(a camera's "rotate on display" tag) is applied on read and logged, so an image is
restored as it is shown. Unreadable files are skipped with a warning and counted. Every
image file is first measured from its header, without decoding its data, and one of more
than MAX_PIXELS pixels is refused (a small compressed file can decode to gigabytes).
"""
from __future__ import annotations

import logging
import os
import struct
import warnings
import zlib

import numpy as np
import torch
from PIL import Image

from datasets.errors import HGMError
from datasets.files import atomic_write

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
MAX_PIXELS = int(os.environ.get("HGM_MAX_PIXELS", 100_000_000))  # for every image file read (H×W)
log = logging.getLogger("hgm")


def image_header(path: str) -> tuple[int, int]:
    """(H, W) of an image file from its header alone (TIFFs with tifffile, the others with Pillow);
    the data is never decoded."""
    if path.lower().endswith((".tif", ".tiff")):
        import tifffile
        try:
            with tifffile.TiffFile(path) as tif:
                page = tif.pages[0]
                return int(page.imagelength), int(page.imagewidth)
        except (ValueError, TypeError, IndexError, tifffile.TiffFileError):
            pass  # let Pillow try
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the limit below is the one that counts
        try:
            with Image.open(path) as img:
                return img.size[1], img.size[0]
        except Image.DecompressionBombError as e:
            raise HGMError(f"{path} is over the limit of {MAX_PIXELS:,} pixels per image ({e})") from e


def check_pixels(path: str, h: int, w: int) -> None:
    """Refuse an image of more than MAX_PIXELS pixels (environment variable HGM_MAX_PIXELS)."""
    if h * w > MAX_PIXELS:
        raise HGMError(f"{path} is {w}×{h} = {h * w:,} pixels, over the limit of {MAX_PIXELS:,} pixels per image "
                       f"(HGM_MAX_PIXELS); crop or downscale it")


def checked_header(path: str) -> tuple[int, int]:
    """(H, W) from the header, refusing an image over the pixel limit before anything is decoded."""
    h, w = image_header(path)
    check_pixels(path, h, w)
    return h, w


def list_images(folder: str | None, recursive: bool = True) -> list[str]:
    """Sorted image paths under `folder`; an error if there is none."""
    if folder is None:
        raise HGMError("no image folder given (set data.path / test.data_path)")
    if not os.path.isdir(folder):
        raise HGMError(f"image folder {folder!r} does not exist")
    paths, links = [], []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        links += [os.path.join(root, d) for d in dirs if os.path.islink(os.path.join(root, d))]
        paths += [os.path.join(root, f) for f in sorted(files) if f.lower().endswith(IMAGE_EXTENSIONS)]
        if not recursive:
            break
    if links and recursive:  # os.walk does not follow them; say so rather than lose their images silently
        shown = ", ".join(links[:3]) + (", …" if len(links) > 3 else "")
        log.warning("%s: %d folder symlink(s) not followed, their images not read: %s; name the folder they "
                    "point to, or copy it in", folder, len(links), shown)
    if not paths:
        raise HGMError(f"image folder {folder!r} holds no images ({'/'.join(IMAGE_EXTENSIONS)})")
    return paths


def _from_integer_array(arr):
    """H×W[×C] integer or float array -> H×W×3 float32 in [0, 1] (alpha dropped)."""
    if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[-1] not in (1, 3, 4):
        arr = np.moveaxis(arr, 0, -1)  # planar TIFFs
    if np.issubdtype(arr.dtype, np.integer):
        arr = arr.astype(np.float32) / np.float32(np.iinfo(arr.dtype).max)
    arr = np.clip(arr.astype(np.float32), 0, 1)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.shape[2] in (2, 4):  # grey+alpha, RGBA
        arr = arr[..., :-1]
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"unsupported image layout {arr.shape}")
    return arr.astype(np.float32)


EXIF_ORIENTATION_TAG = 0x0112
ORIENTATIONS = {2: "mirrored left-right", 3: "rotated 180°", 4: "mirrored top-bottom",
                5: "transposed", 6: "rotated 90° clockwise", 7: "transversed", 8: "rotated 90° anticlockwise"}


def orient(arr: np.ndarray, orientation: int) -> np.ndarray:
    """H×W[×C] as displayed under EXIF orientation 1–8 (the tag says how to turn the stored pixels)."""
    ops = {2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
           5: lambda a: a.swapaxes(0, 1), 6: lambda a: np.rot90(a, -1), 7: lambda a: a.swapaxes(0, 1)[::-1, ::-1],
           8: lambda a: np.rot90(a, 1)}
    return np.ascontiguousarray(ops[orientation](arr)) if orientation in ops else arr


def exif_orientation(path: str) -> int:
    """The EXIF orientation of an image file (1 when it has none; TIFFs: their Orientation tag)."""
    try:
        if path.lower().endswith((".tif", ".tiff")):
            import tifffile
            with tifffile.TiffFile(path) as tif:
                tag = tif.pages[0].tags.get("Orientation")
                return int(tag.value) if tag is not None else 1
        with Image.open(path) as img:
            return int(img.getexif().get(EXIF_ORIENTATION_TAG, 1) or 1)
    except Exception:  # an unreadable tag is no orientation; the pixels are read (or refused) on their own
        return 1


def _apply_orientation(path: str, arr: np.ndarray) -> np.ndarray:
    o = exif_orientation(path)
    if o in ORIENTATIONS:
        log.info("%s: EXIF orientation %d applied on read (%s)", path, o, ORIENTATIONS[o])
    return orient(arr, o)


def _png_bit_depth(path: str) -> tuple[int, int] | None:
    """(bit depth, colour type) from a PNG's header, None for another format."""
    with open(path, "rb") as f:
        head = f.read(26)
    if len(head) < 26 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return None
    return head[24], head[25]


def read_array(path: str) -> np.ndarray:
    """An image file as H×W×3 float32 in [0, 1], turned as its EXIF orientation says.

    16-bit PNGs (colour ones decoded by torchvision: Pillow would cut them to 8 bits) and
    16-bit TIFFs (read with tifffile, which scikit-image brings) keep their precision. An image
    over the pixel limit is refused from its header."""
    checked_header(path)
    return _apply_orientation(path, _read_stored(path))


def _read_stored(path: str) -> np.ndarray:
    """read_array without the orientation: the pixels as stored."""
    if path.lower().endswith((".tif", ".tiff")):
        import tifffile
        try:
            return _from_integer_array(tifffile.imread(path))
        except (ValueError, TypeError, tifffile.TiffFileError):
            pass  # compressed or exotic TIFFs: let Pillow try
    depth = _png_bit_depth(path)
    if depth is not None and depth[0] == 16 and depth[1] in (2, 4, 6):  # RGB, grey+alpha, RGBA at 16 bits
        import warnings

        from torchvision.io import ImageReadMode, decode_image, read_file
        with warnings.catch_warnings():  # torchvision 0.29 announces a move of its decoders to torchcodec
            warnings.simplefilter("ignore", DeprecationWarning)
            x = decode_image(read_file(path), mode=ImageReadMode.UNCHANGED, apply_exif_orientation=False)
        return _from_integer_array(x.permute(1, 2, 0).numpy())
    with Image.open(path) as img:
        img.load()
        if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
            arr = np.asarray(img, dtype=np.float64)
            arr = np.clip(arr / 65535.0, 0, 1)
        elif img.mode == "F":
            arr = np.clip(np.asarray(img, dtype=np.float64), 0, 1)
        else:
            arr = None
        if arr is not None:
            return np.repeat(arr[..., None], 3, axis=2).astype(np.float32)
        if img.mode != "RGB":
            img = img.convert("RGBA" if img.mode == "P" and "transparency" in img.info else img.mode)
            img = img.convert("RGB")
        return np.asarray(img, dtype=np.float32) / 255.0


def read_image(path: str) -> torch.Tensor:
    """An image file as a 3×H×W float tensor in [0, 1]."""
    return torch.from_numpy(read_array(path)).permute(2, 0, 1).contiguous()


def _report_skipped(n: int, bad: list, small: list, min_size: int | None) -> None:
    """Warn (and count) what read_images / usable_paths skipped; an error if nothing is left."""
    if bad:
        log.warning("%d of %d files could not be read and were skipped", len(bad), n)
    if small:
        log.warning("%d of %d images are smaller than the %d×%d crop and were skipped (e.g. %s is %d×%d)",
                    len(small), n, min_size, min_size, small[0][0], *small[0][1])
    if len(bad) + len(small) == n:
        if small:
            raise HGMError(f"no usable image: all readable images are smaller than the crop size {min_size} "
                           f"(largest side pairs e.g. {small[0][1]}); lower data.image_size")
        raise HGMError(f"no usable image among {n} files ({len(bad)} unreadable)")


def read_images(paths: list[str], min_size: int | None = None, what: str = "image") -> list[tuple[str, torch.Tensor]]:
    """Decode `paths`, skipping (and counting) unreadable ones and, with `min_size`,
    those smaller than min_size×min_size. Returns [(path, tensor)]."""
    good, bad, small = [], [], []
    for p in paths:
        try:
            x = read_image(p)
        except Exception as e:  # PIL raises many kinds for corrupt files
            log.warning("skipping unreadable %s %s: %s", what, p, e)
            bad.append(p)
            continue
        if min_size and min(x.shape[-2:]) < min_size:
            small.append((p, tuple(x.shape[-2:])))
            continue
        good.append((p, x))
    _report_skipped(len(paths), bad, small, min_size)
    return good


def image_size(path: str) -> tuple[int, int]:
    """(H, W) of an image file from its header (never decoding its data); over the pixel limit, an error."""
    return checked_header(path)


def usable_paths(paths: list[str], min_size: int | None = None, what: str = "image") -> list[str]:
    """`read_images` without decoding: the files whose header can be read and, with `min_size`, whose
    image is at least min_size×min_size; the others are skipped and counted the same way. A file whose
    header is fine but whose data is corrupt is skipped when LazyImages meets it."""
    good, bad, small = [], [], []
    for p in paths:
        try:
            h, w = image_size(p)
        except Exception as e:
            log.warning("skipping unreadable %s %s: %s", what, p, e)
            bad.append(p)
            continue
        if min_size and min(h, w) < min_size:
            small.append((p, (h, w)))
            continue
        good.append(p)
    _report_skipped(len(paths), bad, small, min_size)
    return good


def png16_bytes(arr: np.ndarray) -> bytes:
    """A 16-bit PNG file (H×W grey or H×W×3 RGB uint16), written here because Pillow writes
    colour PNGs at 8 bits only: IHDR, one zlib IDAT with the Up filter on every row, IEND."""
    arr = np.asarray(arr, dtype=np.uint16)
    h, w = arr.shape[:2]
    channels = 1 if arr.ndim == 2 else arr.shape[2]
    if channels not in (1, 3):
        raise ValueError(f"png16_bytes takes grey or RGB, got {arr.shape}")
    rows = arr.astype(">u2").reshape(h, -1).view(np.uint8)
    up = rows.copy()
    up[1:] -= rows[:-1]  # the Up filter, modulo 256
    raw = np.concatenate([np.full((h, 1), 2, np.uint8), up], axis=1)

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2 if channels == 3 else 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw.tobytes(), 6))
            + chunk(b"IEND", b""))


def save_image(x: torch.Tensor, path: str, bits: int = 8) -> None:
    """Save a 3×H×W (or 1×H×W) tensor in [0, 1] as an 8-bit (or, bits=16, 16-bit) PNG, rounding to nearest.

    The file appears whole or not at all (written to a temporary name, then renamed), and an
    image with NaN or infinite values is refused rather than written."""
    x = x.detach().float().cpu()
    if not bool(torch.isfinite(x).all()):
        raise HGMError(f"refusing to write {path}: the image holds NaN or infinite values")
    if bits not in (8, 16):
        raise HGMError(f"cannot write {path} with {bits} bits per sample (8 or 16)")
    if bits == 16:
        arr = (x.double().clamp(0, 1) * 65535.0).round().to(torch.int32).permute(1, 2, 0).numpy().astype(np.uint16)
        data = png16_bytes(arr[..., 0] if arr.shape[2] == 1 else arr)

        def write(tmp):
            with open(tmp, "wb") as f:
                f.write(data)
    else:
        arr = (x.clamp(0, 1) * 255.0).round().to(torch.uint8)
        arr = arr.permute(1, 2, 0).numpy()
        if arr.shape[2] == 1:
            arr = arr[..., 0]

        def write(tmp):
            Image.fromarray(arr).save(tmp, format="PNG")
    atomic_write(path, write)
