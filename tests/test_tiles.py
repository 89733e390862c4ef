"""Tiled score evaluation for large images: every Langevin step covers the whole image, the network
sees one tile at a time and the tiles' scores are blended (sampling/tiles.py)."""
from dataclasses import replace

import pytest
import torch

from datasets.masks import bayer_mask, random_mask
from datasets.transforms import make_transform
from models.ncsn import CondRefineNetDilated
from sampling import SamplerSettings, restore_image
from sampling.tiles import TiledScore, _ramps, tile_starts
from tests.test_sampler import FakePrior

torch.set_num_threads(1)
SETTINGS = SamplerSettings(step_lr=1e-4, n_steps_each=2, denoise=True, temperature=0.5)


@pytest.mark.parametrize("size,tile,overlap", [(100, 32, 8), (64, 32, 16), (33, 16, 4), (10, 32, 8), (200, 64, 0)])
def test_tiles_cover_the_image_with_the_overlap_asked_and_weights_sum_to_one(size, tile, overlap):
    starts = tile_starts(size, tile, overlap)
    assert starts[0] == 0 and min(starts[-1] + tile, size) == size
    assert all(b % 2 == 0 or b == size - tile for b in starts)  # the network's stride-2 grid
    assert all(a + tile - b >= overlap for a, b in zip(starts, starts[1:]))
    total = torch.zeros(size)
    for a, w in zip(starts, _ramps(size, starts, tile, torch.float64)):
        assert w.min() > 0
        total[a:a + len(w)] += w
    assert total.min() > 0


def test_a_blended_local_score_equals_the_whole_image_score():
    """Where every tile computes the same value (a pointwise score), blending returns it exactly
    (up to rounding): the weights are a partition of unity."""
    x = torch.randn(2, 12, 50, 70)
    tiled = TiledScore(lambda v, lab: torch.tanh(v) * 3, (50, 70), tile=16, overlap=6)
    assert len(tiled) > 4
    assert torch.allclose(tiled(x, torch.zeros(2, dtype=torch.long)), torch.tanh(x) * 3, atol=1e-6)


@pytest.mark.parametrize("transform", ["identity", "pixel_scale"])
@pytest.mark.parametrize("noise", [0.0, 0.04])
def test_tiled_restoration_with_a_local_score_equals_whole_image_restoration(transform, noise):
    torch.manual_seed(0)
    h, w = 37, 58
    y, mask = torch.rand(1, 3, h, w), bayer_mask("rggb", h, w)[None]
    prior = FakePrior(make_transform(transform), score=lambda v, lab: 0.5 - v ** 3)
    outs = []
    for tile in (None, 16):
        torch.manual_seed(1)
        outs.append(restore_image(prior, y * mask, mask, replace(SETTINGS, tile_size=tile, tile_overlap=6),
                                  noise_sigma=noise))
    assert torch.allclose(outs[0], outs[1], atol=1e-5)


def tiny_network_prior(transform="pixel_scale"):
    t = make_transform(transform)
    torch.manual_seed(7)
    net = CondRefineNetDilated(t.channels, 8, 4).eval()
    prior = FakePrior(t, sigmas=(0.2, 0.1, 0.05, 0.02))
    prior._score = lambda v, lab: net(v, lab)
    return prior


def test_tiled_and_whole_image_restoration_agree_with_a_real_network():
    """A convolutional network sees less context in a tile (its receptive field and its instance
    norms are cut at the tile's edge), so small tiles change the result a little: with tiles of
    32 pixels sharing 16 on a 48×64 image the two results are within 40 dB PSNR of each other and
    their PSNR against the image differs by under 0.05 dB; one tile covering the image changes nothing."""
    from evaluation.metrics import psnr
    h, w = 48, 64
    g = torch.Generator().manual_seed(3)
    gt, mask = torch.rand(1, 3, h, w, generator=g), random_mask(h, w, 0.5, generator=g)[None]
    prior, settings = tiny_network_prior(), replace(SETTINGS, init="measurement")
    outs = {}
    with torch.inference_mode():
        for tile in (None, 64, 32):
            torch.manual_seed(1)
            outs[tile] = restore_image(prior, gt * mask, mask, replace(settings, tile_size=tile, tile_overlap=16))
    assert torch.equal(outs[None], outs[64])
    assert not torch.equal(outs[None], outs[32])  # 3×2 tiles did run
    assert psnr(outs[32][0], outs[None][0]) > 40
    assert abs(psnr(outs[32][0], gt[0]) - psnr(outs[None][0], gt[0])) < 0.05


@pytest.mark.parametrize("batch", [2, 4, 100])
def test_tiles_through_the_network_together_give_the_same_score_as_one_at_a_time(batch):
    """The network normalises every sample on its own, so stacking tiles along the batch axis (of an
    image batch of 2, whose labels must follow their tiles) changes the passes, not the score."""
    prior = tiny_network_prior()
    x = torch.rand(2, 12, 40, 52)
    labels = torch.tensor([1, 3])
    calls = []

    def score(v, lab):
        calls.append(v.shape[0])
        return prior.score(v, lab)
    with torch.inference_mode():
        one = TiledScore(score, (40, 52), tile=16, overlap=4)(x, labels)
        n = len(calls)
        together = TiledScore(score, (40, 52), tile=16, overlap=4, batch=batch)(x, labels)
    passes = calls[n:]
    assert n == 3 * 4 and sum(passes) == 2 * n and len(passes) == -(-n // batch)
    assert max(passes) - min(passes) <= 2  # near-equal passes: few shapes for a compiled network
    assert torch.allclose(one, together, atol=1e-5)


def test_tiles_per_pass_fills_the_pixels_of_one_default_tile_unless_given():
    assert replace(SETTINGS, tile_size=1024).tiles_per_pass() == 1
    assert replace(SETTINGS, tile_size=128).tiles_per_pass() == 64
    assert replace(SETTINGS, tile_size=128, tile_batch=3).tiles_per_pass() == 3


def test_auto_tiles_follow_the_prior_training_crop_and_a_bad_size_is_named():
    from datasets.errors import HGMError
    from sampling.settings import AUTO_TILE_FALLBACK, TILES_PER_TRAINING_CROP
    auto = replace(SETTINGS, tile_size="auto")
    assert auto.with_tiles_for(64).tile_size == round(TILES_PER_TRAINING_CROP * 64)
    assert auto.with_tiles_for(256).tile_size == round(TILES_PER_TRAINING_CROP * 256)
    assert auto.with_tiles_for(None).tile_size == AUTO_TILE_FALLBACK
    assert replace(SETTINGS, tile_size=300).with_tiles_for(64).tile_size == 300
    auto.validate()
    for bad in ("big", -5):
        with pytest.raises(HGMError, match="test.tile_size"):
            replace(SETTINGS, tile_size=bad).validate()


def test_restore_image_resolves_auto_tiles_from_the_prior():
    """A prior trained on 16-pixel crops restores a 40×40 image in tiles under auto (the bar counts
    tile evaluations), and in one piece when its crop size is unknown."""
    h, w = 40, 40
    y, mask = torch.rand(1, 3, h, w), bayer_mask("rggb", h, w)[None]
    counts = []
    for crop in (16, None):
        prior, bar = FakePrior(make_transform("identity")), Bar()
        prior.training_crop = crop
        restore_image(prior, y * mask, mask, replace(SETTINGS, tile_size="auto", tile_overlap=4), progress=bar)
        counts.append(bar.n)
    assert counts[0] > 2 * counts[1] and counts[1] == 2 * 2  # 2 levels × 2 steps, whole image


def test_the_training_crop_is_the_checkpoints_own_not_the_runs(tmp_path):
    """auto tiles must follow the prior: its crop comes from the checkpoint's config, whatever the
    run's data section says, and is unknown when the checkpoint does not record it."""
    from helpers import write_prior

    from runners.config import load_config
    from sampling import load_prior
    path = write_prior(tmp_path / "p.pth")
    ckpt = torch.load(path, weights_only=False)
    ckpt["config"]["data"]["image_size"] = 48
    torch.save(ckpt, path)
    run_cfg = load_config("demosaic.yml", {"data.image_size": 96})
    assert load_prior(path, torch.device("cpu"), base=run_cfg).training_crop == 48
    assert load_prior(path, torch.device("cpu")).training_crop == 48
    del ckpt["config"]["data"]["image_size"]
    torch.save(ckpt, path)
    assert load_prior(path, torch.device("cpu"), base=run_cfg).training_crop is None


class Bar:
    """The part of a tqdm bar restore_image uses."""
    total, n = None, 0

    def update(self, k):
        self.n += k

    def refresh(self):
        pass


def test_the_progress_bar_counts_tile_evaluations():
    h, w = 40, 40
    y, mask = torch.rand(1, 3, h, w), bayer_mask("rggb", h, w)[None]
    prior, bar = FakePrior(make_transform("identity")), Bar()
    restore_image(prior, y * mask, mask, replace(SETTINGS, tile_size=16, tile_overlap=4), progress=bar)
    assert bar.total == bar.n == 9 * (2 * 2 + 1)  # 3×3 tiles × (2 levels × 2 steps + denoising)


def test_the_benchmark_reads_its_sizes_and_names_a_bad_one():
    from datasets.errors import HGMError
    from scripts.benchmark_tiles import parse_sizes, synthetic
    assert parse_sizes("500x500,4000x3000") == [(500, 500), (4000, 3000)]
    with pytest.raises(HGMError, match="'4000by3000'"):
        parse_sizes("4000by3000")
    x = synthetic(30, 40)
    assert x.shape == (3, 30, 40) and 0 <= float(x.min()) and float(x.max()) <= 1


def test_the_benchmark_runs_end_to_end_on_a_small_image():
    """The table's row for one small size: the tiled and the whole-image restoration both ran, each in
    its own process, with the shipped preset and prior."""
    import subprocess
    import sys

    from conftest import REPO
    proc = subprocess.run([sys.executable, "scripts/benchmark_tiles.py", "--sizes", "48x40", "--tile", "32",
                           "--overlap", "8", "--whole_max", "100000"], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    row = proc.stdout.strip().splitlines()[-1].split("|")
    assert row[1].strip() == "48×40" and row[3].strip() == "32" and row[4].strip() == "31"  # the preset's NFE
    tiled, whole, diff = (float(v) for v in row[8:11])
    assert 20 < tiled < 60 and 20 < whole < 60 and abs(diff) < 1.0


def test_the_benchmark_takes_auto_tiles_and_a_shorter_schedule():
    import subprocess
    import sys

    from conftest import REPO
    proc = subprocess.run([sys.executable, "scripts/benchmark_tiles.py", "--sizes", "80x72", "--tile", "auto",
                           "--overlap", "8", "--whole_max", "0", "--set", "test.n_steps_each=1"], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    row = [v.strip() for v in proc.stdout.strip().splitlines()[-1].split("|")]
    assert row[3] == "64" and row[4] == "7"  # the bundled prior's training crop; 6 levels × 1 step + 1
    assert float(row[7]) == pytest.approx(float(row[6]) / 7, rel=0.02) and row[9] == "–"
    bad = subprocess.run([sys.executable, "scripts/benchmark_tiles.py", "--tile", "big"], cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "a number of pixels or auto, got 'big'" in bad.stderr
