"""--quiet / TQDM_DISABLE silence the progress bars; scripts fail with one line like main.py."""
import os
import subprocess
import sys

import pytest

import main as hgm_main
from tests.conftest import REPO, subprocess_env
from tests.helpers import write_images


def train(tmp_path, doc, *extra):
    data = write_images(tmp_path / "train", names=("a", "b", "c"), size=(40, 48))
    return hgm_main.main(["--runner", "train_3ch", "--config", "tiny.yml", "--doc", doc, "--run",
                          str(tmp_path / "run"), *extra, "--set", f"data.path={data}", "training.n_iters=2"])


def test_bars_show_by_default(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    assert train(tmp_path, "loud") == 0
    assert "train loud" in capsys.readouterr().err


def test_quiet_silences_the_bars(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    assert train(tmp_path, "quiet", "--quiet") == 0
    assert "train quiet" not in capsys.readouterr().err
    monkeypatch.delenv("TQDM_DISABLE", raising=False)  # main.py --quiet set it for this process


def test_tqdm_disable_silences_the_bars(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TQDM_DISABLE", "1")
    assert train(tmp_path, "env") == 0
    assert "train env" not in capsys.readouterr().err


SCRIPT_ERRORS = [
    ("tune.py", ["--runner", "restore", "--config", "no_such.yml", "--prior", "p.pth", "-o", "{tmp}/t"], "config"),
    ("tune.py", ["--runner", "restore", "--config", "tiny.yml", "--prior", "p.pth", "--grid", "test.step_lr",
                 "-o", "{tmp}/t"], "--grid"),
    # every --set counts (a second one once silently replaced the first)
    ("tune.py", ["--runner", "restore", "--config", "tiny.yml", "--prior", "pretrained/cpu_3ch.pth", "--set",
                 "data.path={tmp}/none",
                 "--set", "test.step_lr=1e-5", "-o", "{tmp}/t"], "none' does not exist"),
    ("make_table.py", ["a={tmp}/nothing"], "metrics.csv"),
    ("run_baseline.py", ["--method", "malvar", "--task", "demosaic", "--data", "{tmp}/none", "-o", "{tmp}/o"],
     "does not exist"),
    ("export_prior.py", ["{tmp}/none.pth", "{tmp}/out.pth"], "none.pth"),
    ("benchmark.py", ["--checkpoint", "{tmp}/none.pth", "--size", "16", "--nfe", "1"], "none.pth"),
]


@pytest.mark.parametrize("script,args,words", SCRIPT_ERRORS, ids=[f"{s}-{i}" for i, (s, *_) in
                                                                  enumerate(SCRIPT_ERRORS)])
def test_scripts_fail_with_one_line(script, args, words, tmp_path):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    proc = subprocess.run([sys.executable, os.path.join("scripts", script), *args], cwd=REPO,
                          env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error") and "Traceback" not in proc.stderr, proc.stderr
    assert words in lines[0]
