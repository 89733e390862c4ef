"""The scripts behind the README tables, on tiny data."""
import csv
import os

import numpy as np
import pytest
import torch
from PIL import Image

import main as hgm_main
from scripts import benchmark, export_prior, make_table, run_baseline, speed_presets


def images(folder, n=2, size=(24, 32)):
    os.makedirs(folder, exist_ok=True)
    yy, xx = np.mgrid[:size[0], :size[1]]
    for i in range(n):
        img = np.stack([np.sin(xx / (4 + i)), np.cos(yy / 5), np.sin((xx + yy) / 6)], -1) * 0.4 + 0.5
        Image.fromarray((img * 255).round().astype(np.uint8)).save(os.path.join(folder, f"s{i}.png"))
    return folder


@pytest.fixture(scope="module")
def prior(tmp_path_factory):
    root = tmp_path_factory.mktemp("p")
    data = images(str(root / "train"), n=3, size=(40, 48))
    assert hgm_main.main(["--runner", "train_12ch_pool", "--config", "tiny.yml", "--doc", "p", "--run", str(root),
                          "--set", f"data.path={data}", "training.n_iters=2"]) == 0
    return os.path.join(root, "logs", "p", "checkpoint.pth")


def test_an_exported_prior_is_small_and_restores_like_a_checkpoint(prior, tmp_path):
    dst = str(tmp_path / "prior.pth")
    out = export_prior.export(prior, dst)
    saved = torch.load(dst, weights_only=True)
    assert "optimizer" not in saved and all(v.dtype == torch.float16 for v in saved["model"].values())
    assert out["step"] == 2
    cfg = saved["config"]  # no path of this machine; the names say what it was trained on
    assert cfg["data"]["path"] is None and cfg["training"]["init_from"] is None and saved["data_name"] == "train"
    data = images(str(tmp_path / "test"))
    assert hgm_main.main(["--runner", "Test_12ch_demoscaicking_pool", "--config", "tiny.yml", "--doc", "x", "--test",
                          "-o", str(tmp_path / "o"), "--set", f"test.data_path={data}", f"test.checkpoint={dst}",
                          "test.n_steps_each=1"]) == 0


@pytest.mark.parametrize("method,task", [("bilinear", "demosaic"), ("malvar", "demosaic"), ("biharmonic", "inpaint"),
                                         ("harmonic", "inpaint"), ("telea", "inpaint"), ("ns", "inpaint")])
def test_baseline_script_writes_the_restore_layout(method, task, tmp_path):
    data = images(str(tmp_path / "d"))
    out = str(tmp_path / method)
    assert run_baseline.main(["--method", method, "--task", task, "--data", data, "-o", out,
                              "--missing_rate", "0.5", "--border", "2"]) == 0
    with open(os.path.join(out, "metrics.csv")) as f:
        rows = list(csv.DictReader(f))
    assert [r["image"] for r in rows] == ["s0", "s1", "mean"]
    assert all(float(r["psnr"]) > 20 for r in rows)  # smooth images: every classical method does well
    text = make_table.table([(method, out)])
    assert f"| {method} | 2 |" in text


def test_benchmark_runs_and_prints_its_last_line(capsys):
    assert benchmark.main(["--size", "32", "--ref_patch", "16", "--stride", "12", "--nfe", "10", "--ngf", "8",
                           "--device", "cpu"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("speedup_vs_reference=") and "flop_utilisation=" in last


@pytest.mark.parametrize("config", ["demosaic.yml", "inpaint.yml"])
def test_speed_presets_compares_modes_on_held_out_images(config, tmp_path, capsys):
    """One row per mode, fp32 the baseline (×1.00, Δ 0), and the verdict line; the held-out images
    are the shipped prior's split (8 of the folder) and only --n of them are used."""
    from conftest import write_rgb_images
    write_rgb_images(str(tmp_path / "train"), n=10, size=(72, 80))
    assert speed_presets.main(["--config", config, "--data", str(tmp_path / "train"), "--n", "2", "--crop", "64",
                               "--steps", "1", "--modes", "fp32,bf16,channels_last"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert "2 held-out images (64×64 first)" in out[0]
    rows = {r.split("|")[1].strip(): r.split("|") for r in out if r.startswith("| ") and "mode" not in r}
    assert set(rows) == {"fp32", "bf16", "channels_last"}
    assert rows["fp32"][3].strip() == "1.00" and rows["fp32"][5].strip() == "+0.000"
    assert all(0 < float(r[4]) < 100 for r in rows.values())  # random test images: any finite PSNR
    assert out[-1].startswith("fastest_within=") and "speedup=" in out[-1]


def test_speed_presets_needs_fp32_to_compare_with(tmp_path, capsys):
    assert speed_presets.main(["--data", str(tmp_path), "--modes", "bf16"]) == 1
    assert "must include fp32" in capsys.readouterr().err


def run_reproduce(tmp_path, task, **env):
    import subprocess

    from conftest import REPO, subprocess_env
    env = {**subprocess_env(), "TQDM_DISABLE": "1", **env}
    return subprocess.run(["bash", os.path.join(REPO, "scripts", "reproduce.sh"), task], env=env, cwd=str(tmp_path),
                          capture_output=True, text=True, timeout=900)


def test_reproduce_checks_its_images_and_names_the_command_that_prepares_them(tmp_path):
    images(str(tmp_path / "data" / "kodak24"))
    r = run_reproduce(tmp_path, "demosaic", DATA=str(tmp_path / "data"), OUT=str(tmp_path / "out"))
    assert r.returncode == 1
    assert "python scripts/prepare_data.py kodak24 SRC -o DATA" in r.stderr
    assert not os.path.exists(tmp_path / "out")
    r = run_reproduce(tmp_path, "deblur", DATA=str(tmp_path / "data"))
    assert r.returncode == 2 and "unknown task" in r.stderr


def test_reproduce_demosaic_writes_its_table(tmp_path):
    data = tmp_path / "data"
    images(str(data / "kodak24"))
    r = run_reproduce(tmp_path, "demosaic", DATA=str(data), OUT=str(tmp_path / "out"), CHECK="0",
                      EXTRA="test.n_steps_each=1")
    assert r.returncode == 0, r.stderr[-2000:]
    table = (tmp_path / "out" / "table.md").read_text()
    for row in ("| bilinear | 2 |", "| malvar | 2 |", "| menon | 2 |", "| HGM (demosaic.yml) | 2 |"):
        assert row in table


def test_reproduce_noisy_puts_every_method_on_the_same_noisy_mosaics(tmp_path):
    data = tmp_path / "data"
    images(str(data / "kodak24"))
    r = run_reproduce(tmp_path, "noisy", DATA=str(data), OUT=str(tmp_path / "out"), CHECK="0", SIGMAS="10",
                      EXTRA="test.n_steps_each=1")
    assert r.returncode == 0, r.stderr[-2000:]
    table = (tmp_path / "out" / "table.md").read_text()
    assert "**noise σ 10 of 255**" in table and "σ 5" not in table
    for row in ("| menon | 2 |", "| nlm+menon | 2 |", "| menon+nlm | 2 |", "| HGM (demosaic_noisy.yml) | 2 |"):
        assert row in table
    noisy = [(tmp_path / "out" / "sigma10" / m / "input").iterdir() for m in ("menon", "hgm")]
    first = [sorted(p.name for p in it) for it in noisy]
    assert first[0] == first[1] and first[0]
    names = first[0]
    a = [(tmp_path / "out" / "sigma10" / m / "input" / names[0]).read_bytes() for m in ("menon", "hgm")]
    assert a[0] == a[1]  # the very same noisy measurement


def test_reproduce_noisy_inpaint_writes_a_table_per_mask(tmp_path):
    pytest.importorskip("cv2", reason="telea+nlm needs the optional opencv-python-headless")
    data = tmp_path / "data"
    images(str(data / "kodak24"), size=(300, 300))
    r = run_reproduce(tmp_path, "noisy_inpaint", DATA=str(data), OUT=str(tmp_path / "out"), CHECK="0",
                      MASKSET="box64", EXTRA="test.n_steps_each=1")
    assert r.returncode == 0, r.stderr[-2000:]
    table = (tmp_path / "out" / "table.md").read_text()
    assert "**mask box64, noise σ 10 of 255**" in table
    for row in ("| biharmonic | 2 |", "| biharmonic+nlm | 2 |", "| harmonic+nlm | 2 |", "| telea+nlm | 2 |",
                "| HGM (inpaint.yml) | 2 |"):
        assert row in table


def test_gpu_check_says_plainly_that_no_gpu_is_here_and_its_dry_run_works(tmp_path):
    import subprocess

    from conftest import REPO, subprocess_env
    if torch.cuda.is_available():
        pytest.skip("a GPU is here: the real check is bash scripts/gpu_check.sh")
    script = os.path.join(REPO, "scripts", "gpu_check.sh")
    r = subprocess.run(["bash", script, "--out", str(tmp_path / "plain.md")], env=subprocess_env(),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "no GPU here" in r.stdout and "| everything that needs CUDA | skipped |" in r.stdout
    r = subprocess.run(["bash", script, "--dry-run", "--out", str(tmp_path / "dry.md")], env=subprocess_env(),
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    table = (tmp_path / "dry.md").read_text()
    for row in ("| tests marked cuda | ok |", "| demosaic.yml 32² fp32 |", "| inpaint.yml 32² bf16 |",
                "| training 12ch ngf 8", "| torchrun, one process | ok | gloo"):
        assert row in table, table
