"""scripts/prepare_data.py on small synthetic files with the published names and shapes:
the evaluation sets are written as the tables read them, a wrong version of a set is refused
with a reason, and the paper's training sets get the folder layout a training run needs."""
import io
import os
import zipfile

import numpy as np
import pytest
from PIL import Image

from scripts import prepare_data


def image(w, h, seed=0, mode="RGB"):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), mode)


def published(folder, names, size, ext="png"):
    os.makedirs(folder, exist_ok=True)
    for i, name in enumerate(names):
        image(*size, seed=i).save(os.path.join(folder, f"{name}.{ext}"))
    return str(folder)


KODAK = [f"kodim{i:02d}" for i in range(1, 25)]


def test_kodak24_from_a_folder_is_written_as_the_tables_read_it(tmp_path):
    src = published(tmp_path / "testsets" / "Kodak24", KODAK, (500, 500))
    assert prepare_data.main(["kodak24", src, "-o", str(tmp_path / "data")]) == 0
    out = tmp_path / "data" / "kodak24"
    assert sorted(os.listdir(out)) == [k + ".png" for k in KODAK]
    a = np.asarray(Image.open(out / "kodim07.png"))
    assert np.array_equal(a, np.asarray(Image.open(os.path.join(src, "kodim07.png")))) and a.shape == (500, 500, 3)
    assert prepare_data.check_test_set("kodak24", str(out)) == 24


def test_kodak24_from_a_zip_of_bmp_files(tmp_path):
    buf = tmp_path / "Kodak24.zip"
    with zipfile.ZipFile(buf, "w") as z:
        for i, name in enumerate(KODAK):
            b = io.BytesIO()
            image(500, 500, seed=i).save(b, format="BMP")
            z.writestr(f"Kodak24/{name}.bmp", b.getvalue())
    assert prepare_data.main(["kodak24", str(buf), "-o", str(tmp_path / "data")]) == 0
    assert prepare_data.check_test_set("kodak24", str(tmp_path / "data" / "kodak24")) == 24


def test_the_kodak_photocd_originals_are_refused_not_cropped(tmp_path, capsys):
    src = published(tmp_path / "originals", KODAK, (768, 512))
    assert prepare_data.main(["kodak24", src, "-o", str(tmp_path / "data")]) == 1
    err = capsys.readouterr().err
    assert "768×512 Kodak PhotoCD originals" in err and "no crop is guessed" in err
    assert not os.path.exists(tmp_path / "data" / "kodak24")  # nothing half-written


def test_a_set_with_an_image_missing_is_refused(tmp_path, capsys):
    src = published(tmp_path / "k", KODAK[:-1], (500, 500))
    assert prepare_data.main(["kodak24", src, "-o", str(tmp_path / "data")]) == 1
    assert "holds 23 kodak24 images" in capsys.readouterr().err


def test_mcmaster_tiffs_and_cbsd68_in_both_orientations(tmp_path):
    mcm = published(tmp_path / "McMaster", [str(i) for i in range(1, 19)], (500, 500), ext="tif")
    assert prepare_data.main(["mcmaster", mcm, "-o", str(tmp_path / "data")]) == 0
    assert sorted(os.listdir(tmp_path / "data" / "mcmaster")) == sorted(f"{i}.png" for i in range(1, 19))
    names = [str(100000 + i) for i in range(68)]
    src = tmp_path / "CBSD68"
    published(src, names[:40], (481, 321))
    published(src, names[40:], (321, 481))
    assert prepare_data.main(["cbsd68", str(src), "-o", str(tmp_path / "data")]) == 0
    assert prepare_data.check_test_set("cbsd68", str(tmp_path / "data" / "cbsd68")) == 68


def test_check_names_the_command_that_prepares_a_set(tmp_path, capsys):
    published(tmp_path / "kodak24", KODAK, (256, 256))
    assert prepare_data.main(["check", "kodak24", str(tmp_path / "kodak24")]) == 1
    err = capsys.readouterr().err
    assert "256×256" in err and "python scripts/prepare_data.py kodak24 SRC -o DATA" in err
    assert prepare_data.main(["check", "kodak24", str(tmp_path / "none")]) == 1
    assert "prepare it with" in capsys.readouterr().err


def test_masks_are_the_repositorys(tmp_path):
    assert prepare_data.main(["masks", "-o", str(tmp_path)]) == 0
    assert sorted(os.listdir(tmp_path / "masks")) == sorted(m + ".png" for m in prepare_data.MASKS)


def test_an_output_folder_with_files_is_refused(tmp_path, capsys):
    (tmp_path / "masks").mkdir()
    (tmp_path / "masks" / "mine.png").write_bytes(b"x")
    assert prepare_data.main(["masks", "-o", str(tmp_path)]) == 1
    assert "already holds files" in capsys.readouterr().err
    assert (tmp_path / "masks" / "mine.png").read_bytes() == b"x"


def test_lsun_lmdb_is_exported_to_centre_squares(tmp_path):
    lmdb = pytest.importorskip("lmdb")
    db = tmp_path / "bedroom_train_lmdb"
    env = lmdb.open(str(db), map_size=1 << 26)
    with env.begin(write=True) as txn:
        for i, fmt in enumerate(["WEBP", "JPEG", "WEBP"]):
            b = io.BytesIO()
            image(400, 300, seed=i).save(b, format=fmt)
            txn.put(f"{i:040x}".encode(), b.getvalue())
    env.close()
    assert prepare_data.main(["lsun", str(db), "-o", str(tmp_path / "data"), "--limit", "2"]) == 0
    files = sorted(os.listdir(tmp_path / "data" / "lsun_bedroom"))
    assert len(files) == 2 and all(f.endswith(".png") for f in files)
    assert Image.open(tmp_path / "data" / "lsun_bedroom" / files[0]).size == (256, 256)


def test_msr_copies_the_training_list_from_groundtruth(tmp_path):
    sub = tmp_path / "MSR-Demosaicing" / "Dataset_LINEAR_without_noise" / "bayer_panasonic"
    gt = sub / "groundtruth"
    gt.mkdir(parents=True)
    deep = np.arange(64 * 64 * 3, dtype=np.uint16).reshape(64, 64, 3) * 5
    for name in ("1", "2", "3"):
        import tifffile
        tifffile.imwrite(gt / f"{name}.tif", deep)  # 16-bit files stay 16-bit
    (sub / "train.txt").write_text("1\n3\n")
    (sub / "test.txt").write_text("2\n")
    assert prepare_data.main(["msr", str(tmp_path / "MSR-Demosaicing"), "-o", str(tmp_path / "data")]) == 0
    files = sorted(os.listdir(tmp_path / "data" / "msr_demosaicking"))
    assert files == ["Dataset_LINEAR_without_noise_bayer_panasonic_1.tif",
                     "Dataset_LINEAR_without_noise_bayer_panasonic_3.tif"]
    import tifffile
    assert np.array_equal(tifffile.imread(tmp_path / "data" / "msr_demosaicking" / files[0]), deep)


def test_msr_list_naming_a_missing_image_is_refused(tmp_path, capsys):
    sub = tmp_path / "msr" / "canon"
    (sub / "groundtruth").mkdir(parents=True)
    (sub / "train.txt").write_text("7\n")
    assert prepare_data.main(["msr", str(tmp_path / "msr"), "-o", str(tmp_path / "data")]) == 1
    assert "lists 7, which is not in" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "data" / "msr_demosaicking")
