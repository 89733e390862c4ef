"""What only a GPU can show: the sampler, restoration and a training step on CUDA agree with the
CPU. Skipped without a GPU; `bash scripts/gpu_check.sh` runs them (pytest -m cuda)."""
import pytest
import torch

from datasets.masks import bayer_mask
from datasets.transforms import make_transform
from losses.dsm import anneal_dsm_loss
from models.ncsn import CondRefineNetDilated, get_sigmas
from sampling import Prior, SamplerSettings, annealed_langevin, restore_image

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
CUDA = torch.device("cuda")


def tiny_prior(device, channels=12, transform="pixel_scale"):
    torch.manual_seed(0)
    model = CondRefineNetDilated(channels, 8, 4)
    cfg = {"model": {"ngf": 8, "num_classes": 4, "sigma_begin": 0.5, "sigma_end": 0.05},
           "data": {"transform": transform, "transform_factor": 2}}
    return Prior({"model": model.state_dict(), "step": 0}, cfg, device)


def test_sampler_on_cuda_keeps_a_gaussian_stationary():
    """Langevin on N(0, v): after many steps the sample variance is v (as on the CPU)."""
    v = 0.3
    x = torch.zeros(4096, 1, 1, 1, device=CUDA)
    schedule = SamplerSettings(1e-2, 2000, update="langevin")
    out = annealed_langevin(lambda z, lab: -z / v, x, torch.tensor([1.0]), schedule)
    assert abs(float(out.var()) - v) < 0.05


def test_restoration_on_cuda_matches_the_cpu_without_injected_noise():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(1, 3, 32, 32, generator=g)
    mask = bayer_mask("rggb", 32, 32)[None]
    settings = SamplerSettings(step_lr=1e-4, n_steps_each=2, init="menon", start_level=2, denoise=True,
                               temperature=0.0)
    outs = [restore_image(tiny_prior(d), (x * mask).to(d), mask.to(d), settings).cpu() for d in ("cpu", CUDA)]
    assert torch.allclose(outs[0], outs[1], atol=1e-3)
    assert torch.equal(outs[1][mask > 0.5], x[mask > 0.5])


def test_a_training_step_on_cuda_in_bf16_is_finite_and_lowers_the_loss():
    t = make_transform("pixel_scale", 2)
    torch.manual_seed(0)
    model = CondRefineNetDilated(12, 8, 4).to(CUDA)
    sigmas = get_sigmas(0.5, 0.05, 4, CUDA)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = t.forward(torch.rand(8, 3, 16, 16, device=CUDA))
    labels = torch.arange(8, device=CUDA) % 4
    noise = torch.randn_like(x)
    losses = []
    for _ in range(20):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = anneal_dsm_loss(model, x, sigmas, labels, noise=noise)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]
