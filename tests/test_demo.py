"""The README's main command, `python scripts/demo.py`, run as a user runs it: a separate
process, from another folder, with the shipped presets and the shipped prior they name. Only
the image size and the steps per level are shrunk (--size, --steps); files and code path are
the user's."""
import os
import re
import subprocess
import sys

from conftest import REPO

DEMO = os.path.join(REPO, "scripts", "demo.py")


def run_demo(cwd, *args, timeout=900):
    env = {**os.environ, "TQDM_DISABLE": "1"}
    return subprocess.run([sys.executable, DEMO, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def table_rows(text, task):
    """{method: PSNR} of the table under `## task` in results.md."""
    section = text.split(f"## {task}", 1)[1].split("## ", 1)[0]
    rows = re.findall(r"^\| (\w[\w ]*?) \| (\d+) \| ([\d.]+) \|", section, re.M)
    return {name: (int(n), float(p)) for name, n, p in rows}


def test_the_demo_runs_with_the_shipped_presets_and_writes_both_tables(tmp_path):
    r = run_demo(tmp_path, "--size", "48", "--steps", "1")
    assert r.returncode == 0, r.stderr[-2000:]
    out = tmp_path / "demo_out"  # the default output folder, relative to where the user stands
    text = (out / "results.md").read_text()
    assert (r.stdout.strip().splitlines()[-1]).endswith(str(out))
    demosaic, inpaint = table_rows(text, "demosaic"), table_rows(text, "inpaint")
    assert set(demosaic) == {"menon", "HGM"} and set(inpaint) == {"biharmonic", "HGM"}
    for rows in (demosaic, inpaint):
        for n, psnr in rows.values():
            assert n == 3 and 20 < psnr < 60
    for task in ("demosaic", "inpaint"):
        assert sorted(os.listdir(out / task / "compare")) == ["astronaut.png", "chelsea.png", "coffee.png"]
        with open(out / task / "hgm" / "config.yml") as f:
            used = f.read()
        assert "cpu_12ch_64.pth" in used  # the prior the preset names


def test_a_second_demo_moves_the_first_aside(tmp_path):
    (tmp_path / "demo_out").mkdir()
    (tmp_path / "demo_out" / "keep.txt").write_text("x")
    r = run_demo(tmp_path, "--size", "32", "--steps", "1")
    assert r.returncode == 0, r.stderr[-2000:]
    aside = [d for d in os.listdir(tmp_path) if d.startswith("demo_out") and d != "demo_out"]
    assert len(aside) == 1 and (tmp_path / aside[0] / "keep.txt").exists()


def test_the_demo_refuses_a_prior_that_is_not_there(tmp_path):
    r = run_demo(tmp_path, "--prior", str(tmp_path / "none.pth"))
    assert r.returncode == 1 and "no prior" in r.stderr
