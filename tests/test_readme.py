"""The README cannot drift from the code: every command of its bash blocks names a runner, config,
config key and script that exist and validate (data paths pointed at tiny temporary data), and the
cheap ones run; every config file, script, runner and config key it names in backticks exists.

New README commands are picked up automatically. A command whose data or prior is not here (a run
folder of an earlier command, a GPU-sized output) is validated but not run; a missing config,
runner, key or script always fails.
"""
import argparse
import importlib
import os
import re
import shlex

import pytest

import main as hgm_main
from datasets.errors import HGMError
from runners.config import flatten, load_config, parse_set, resolve_config_path, schema
from runners.registry import RUNNERS, resolve_runner
from tests.conftest import REPO
from tests.helpers import write_images

README = os.path.join(REPO, "README.md")
OUTPUT_FILES = {"config.yml"}  # written by runs, not shipped configs
SECTIONS = ("training", "data", "model", "optim", "test")
TINY_TRAIN = ["training.n_iters=1", "model.ngf=8", "data.image_size=16", "training.batch_size=2",
              "data.val_images=1", "training.val_batches=1", "data.num_workers=0", "training.tb_images=1",
              "training.tb_sample_steps=1"]


def readme():
    with open(README) as f:
        return f.read()


def blocks(lang):
    return [m.group(2) for m in re.finditer(r"```(\w*)\n(.*?)```", readme(), re.S) if m.group(1) == lang]


def commands():
    """Every command line of the README's bash blocks (continuations joined, comments dropped)."""
    out = []
    for block in blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            tokens = shlex.split(line, comments=True)
            if tokens:
                out.append(tokens)
    return out


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_images(root / "kodak24", names=("kodim01", "kodim07"), size=(24, 28))
    write_images(root / "cbsd432", names=[f"b{i:02d}" for i in range(6)], size=(40, 48))
    write_images(root / "cbsd68", names=("c0",), size=(24, 28))
    write_images(root / "mcmaster", names=("m0",), size=(24, 28))
    return str(root)


def substitute(tokens, root):
    return [t.replace("$DATA", root).replace("/path/to/data", root) for t in tokens]


class Parsed(BaseException):
    """Raised by the patched parse_args: the arguments parsed, the script does not run."""

    def __init__(self, parsed):
        super().__init__()
        self.parsed = parsed


def parse_script_args(module, argv, monkeypatch):
    real = argparse.ArgumentParser.parse_args

    def parse(self, args=None, namespace=None):
        raise Parsed(real(self, args, namespace))
    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse)
    try:
        module.main(argv)
    except Parsed as p:
        return p.parsed
    finally:
        monkeypatch.setattr(argparse.ArgumentParser, "parse_args", real)
    raise AssertionError(f"{module.__name__}.main did not parse its arguments")


def fix_data_overrides(overrides, root):
    """Data folders of the README that are not here -> the tiny data."""
    out = dict(overrides)
    if "data.path" in out and not os.path.isdir(str(out["data.path"])):
        out["data.path"] = os.path.join(root, "cbsd432")
    if "test.data_path" in out and not os.path.isdir(str(out["test.data_path"])):
        out["test.data_path"] = os.path.join(root, "kodak24")
    return out


def check_main(argv, root, tmp_path, run=True):
    """Validate a main.py command; run it on tiny data when that is cheap. Returns 'ran' or 'checked'."""
    args = hgm_main.parse_args(argv)
    name, kind, fixed = resolve_runner(args.runner)
    resolve_config_path(args.config)
    overrides = fix_data_overrides(parse_set(args.overrides), root)
    if kind == "train":
        overrides.setdefault("data.path", os.path.join(root, "cbsd432"))
    cfg = load_config(args.config, overrides, fixed)
    if not run:
        return "checked"
    sets = [f"{k}={v}" for k, v in overrides.items()]
    if kind == "train":
        # the cheap run trains a tiny network: a warm start's full-size weights cannot load into it
        # (the warm start itself is tested in tests/test_train_cli.py)
        sets = [s for s in sets if not s.startswith("training.init_from=")]
        rc = hgm_main.main(["--runner", args.runner, "--config", args.config, "--doc", args.doc or "d",
                            "--run", str(tmp_path / "run"), "--quiet", "--overwrite",
                            "--set", *sets, *TINY_TRAIN])
        assert rc == 0, argv
        return "ran"
    t = cfg["test"]
    ckpt = t["checkpoint"]
    mask = str(t["mask"])
    if (not ckpt or not os.path.isfile(os.path.join(REPO, ckpt)) or t["progressive"]["enabled"] or t["degraded_input"]
            or (t["task"] == "inpaint" and mask not in ("random", "box")) or t["image_size"]):
        return "checked"  # its prior is a run folder of another command, or its mask/crop needs real images
    sets.append(f"test.data_path={os.path.join(root, 'kodak24')}")
    rc = hgm_main.main(["--runner", args.runner, "--config", args.config, "--test", "--quiet",
                        "-o", str(tmp_path / "out"), "--set", *sets])
    assert rc == 0, argv
    assert os.listdir(tmp_path / "out" / "compare")
    return "ran"


def check_script(script, argv, root, tmp_path, monkeypatch):
    path = os.path.join(REPO, script)
    assert os.path.isfile(path), f"README names {script}, which does not exist"
    if script.endswith(".sh"):
        return "checked"
    module = importlib.import_module(script[:-3].replace("/", "."))
    args = parse_script_args(module, argv, monkeypatch)
    name = os.path.basename(script)
    if name == "tune.py":
        fixed = resolve_runner(args.runner)[2]
        grid = {k: parse_set([f"{k}={v.split(',')[0]}"])[k] for k, v in (g.split("=", 1) for g in args.grid)}
        load_config(args.config, {**fix_data_overrides(parse_set(args.overrides), root), **grid}, fixed)
        # a bundled prior must exist; a run folder (run/logs/<doc>/...) is made by an earlier README command
        assert args.prior.startswith("run/") or os.path.isfile(os.path.join(REPO, args.prior)), args.prior
    if name == "run_baseline.py" and os.path.isdir(args.data):
        out = str(tmp_path / "baseline")
        assert module.main([*[a if a != args.out else out for a in argv], "--overwrite"]) == 0
        return "ran"
    return "checked"


def test_readme_commands_exist_validate_and_the_cheap_ones_run(data_root, tmp_path, monkeypatch):
    monkeypatch.setenv("TQDM_DISABLE", "1")
    monkeypatch.chdir(REPO)
    done = {"ran": 0, "checked": 0}
    for k, raw in enumerate(commands()):
        tokens = substitute(raw, data_root)
        while tokens and re.match(r"^[A-Za-z_]\w*=", tokens[0]):  # VAR=value prefixes
            tokens = tokens[1:]
        if not tokens or tokens[0] in ("pip", "export", "tensorboard", "cd", "git"):
            continue
        where = tmp_path / f"cmd{k}"
        where.mkdir()
        if tokens[0] == "torchrun" or tokens[:3] == ["python", "-m", "torch.distributed.run"]:
            i = tokens.index("main.py")
            done[check_main(tokens[i + 1:], data_root, where, run=False)] += 1
        elif tokens[0] == "python" and tokens[1] == "main.py":
            done[check_main(tokens[2:], data_root, where)] += 1
        elif tokens[0] in ("python", "bash") and tokens[1].startswith("scripts/"):
            done[check_script(tokens[1], tokens[2:], data_root, where, monkeypatch)] += 1
        elif tokens[0] in ("python", "bash"):
            pytest.fail(f"README command of an unknown form: {' '.join(raw)}")
    assert done["ran"] >= 3 and done["checked"] >= 10, done


def test_readme_names_only_configs_scripts_runners_and_keys_that_exist():
    text = readme()
    named = set(re.findall(r"`(?:configs/)?([\w.-]+\.yml)`", text)) | set(re.findall(r"--config ([\w.-]+\.yml)", text))
    for name in named - OUTPUT_FILES:
        try:
            resolve_config_path(name)
        except HGMError:
            pytest.fail(f"README names config {name}, which does not exist")
    for script in set(re.findall(r"\b(scripts/[\w]+\.(?:py|sh))", text)):
        assert os.path.isfile(os.path.join(REPO, script)), f"README names {script}, which does not exist"
    keys = flatten(schema())
    for key in set(re.findall(r"`((?:" + "|".join(SECTIONS) + r")\.[a-z_.]+[a-z_])(?:=[^`]*)?`", text)):
        assert key in keys or any(k.startswith(key + ".") for k in keys), f"README names config key {key}"
    table = text[text.index("## Runner names"):]
    table = table[:table.index("\n## ", 5)]
    for name in re.findall(r"`(\w+)`", table.split("Names are case-insensitive")[0]):
        if name not in ("train", "restore") or name in RUNNERS:
            resolve_runner(name)
    registered = set(re.findall(r"`(\w+)`", table))
    assert set(RUNNERS) <= registered, f"runners missing from the README table: {set(RUNNERS) - registered}"
