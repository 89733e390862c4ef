"""hgm_api: the README's example runs as written; kinds in = kinds out; measured samples kept; no autograd."""
import contextlib
import io
import os
import re

import numpy as np
import pytest
import torch

import hgm_api
from tests.conftest import REPO
from tests.test_readme import blocks


def api_example():
    text = [b for b in blocks("python") if "hgm_api" in b]
    assert len(text) == 1, "the README has one Python API example"
    return text[0]


def test_readme_api_example_runs():
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(api_example(), "README.md (Python API)", "exec"), {"__name__": "readme_example"})
    psnrs = [float(v) for v in re.findall(r"'psnr': ([0-9.]+)", out.getvalue())]
    assert len(psnrs) == 2 and all(p > 25 for p in psnrs), out.getvalue()


@pytest.fixture(scope="module")
def prior():
    return hgm_api.load_prior("cpu_12ch_64")


def image(h=24, w=28):
    from tests.helpers import smooth_image
    return smooth_image(h, w)


def test_uint8_in_uint8_out_and_measurements_kept(prior):
    x = image()
    out = hgm_api.demosaic(prior, x, pattern="grbg", n_steps_each=1)
    assert out.dtype == np.uint8 and out.shape == x.shape
    m = hgm_api.bayer_mask("grbg", *x.shape[:2]).permute(1, 2, 0).numpy() > 0
    assert np.array_equal(out[m], x[m])


def test_tensor_in_tensor_out_no_graph(prior):
    x = torch.from_numpy(image()).permute(2, 0, 1).float() / 255
    x.requires_grad_(True)
    out = hgm_api.inpaint(prior, x, np.ones((24, 28), bool) & (np.arange(28) % 2 == 0), n_steps_each=1)
    assert isinstance(out, torch.Tensor) and out.shape == (3, 24, 28)
    assert not out.requires_grad and not out.is_inference()
    out.add_(0)  # an ordinary tensor: in-place works outside inference mode


def test_raw_mosaic_and_float_arrays(prior):
    x = image().astype(np.float32) / 255
    mosaic = (x * hgm_api.bayer_mask("rggb", 24, 28).permute(1, 2, 0).numpy()).sum(-1)
    out = hgm_api.demosaic(prior, mosaic, n_steps_each=1)
    assert out.dtype == np.float32 and out.shape == (24, 28, 3)
    a = hgm_api.demosaic(prior, x, n_steps_each=1, seed=3)
    b = hgm_api.demosaic(prior, x, n_steps_each=1, seed=3)
    assert np.array_equal(a, b)
    assert hgm_api.metrics(a, x)["psnr"] > 20


def test_api_errors_are_hgm_errors(prior):
    with pytest.raises(hgm_api.HGMError, match="mask"):
        hgm_api.inpaint(prior, image(), np.ones((5, 5)))
    with pytest.raises(hgm_api.HGMError, match="task"):
        hgm_api.restore(prior, image(), "denoise")
    with pytest.raises(hgm_api.HGMError, match="no prior"):
        hgm_api.load_prior("no_such_prior")
    with pytest.raises(hgm_api.HGMError, match="step_lr"):
        hgm_api.demosaic(prior, image(), step_lr=-1)


def test_any_prior_restores_with_the_recommended_presets(tmp_path):
    from tests.helpers import write_prior
    p = hgm_api.load_prior(write_prior(tmp_path / "p.pth", "channel_copy"))
    assert p.channels == 6 and p.presets == {"demosaic": "demosaic.yml", "inpaint": "inpaint.yml"}
    s = hgm_api.settings_of(p, "demosaic")
    assert s.n_steps_each == 5 and s.init == "menon"  # the preset, resolved for this prior's levels
    out = hgm_api.demosaic(p, image(), n_steps_each=1)
    assert out.shape == (24, 28, 3)


@pytest.mark.parametrize("task", ["demosaic", "inpaint"])
def test_a_bundled_prior_by_name_or_by_path_restores_the_same_way(task):
    by_name = hgm_api.load_prior("cpu_6ch")
    by_path = hgm_api.load_prior(os.path.join(REPO, "pretrained", "cpu_6ch.pth"))
    by_relative_path = hgm_api.load_prior("pretrained/cpu_6ch.pth")
    settings = {hgm_api.settings_of(p, task) for p in (by_name, by_path, by_relative_path)}
    assert len(settings) == 1
    assert by_name.presets == by_path.presets


@pytest.mark.parametrize("where", ["clone", "elsewhere"])
def test_importable_from_the_clone_or_with_pythonpath(where, tmp_path):
    import subprocess
    import sys

    from tests.conftest import REPO, subprocess_env
    env = subprocess_env()
    env.pop("PYTHONPATH", None)
    if where == "elsewhere":
        env["PYTHONPATH"] = REPO
    proc = subprocess.run([sys.executable, "-c", "import hgm_api; print(hgm_api.load_prior('cpu_3ch').channels)"],
                          cwd=REPO if where == "clone" else str(tmp_path), env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "3", proc.stderr


def test_a_noisy_measurement_is_weighed_not_kept(prior):
    x = image().astype(np.float32) / 255
    m = hgm_api.bayer_mask("rggb", 24, 28).permute(1, 2, 0).numpy()
    noisy = np.clip(x + np.random.default_rng(0).normal(0, 10 / 255, x.shape).astype(np.float32), 0, 1)
    kept = hgm_api.demosaic(prior, noisy, n_steps_each=1)
    weighed = hgm_api.demosaic(prior, noisy, n_steps_each=1, noise_sigma=10)
    assert np.array_equal(kept[m > 0], noisy[m > 0])  # noiseless: the measurement exactly
    assert not np.allclose(weighed[m > 0], noisy[m > 0])  # noisy: the measured samples are estimates
    assert hgm_api.metrics(weighed, x)["psnr"] > hgm_api.metrics(kept, x)["psnr"]
