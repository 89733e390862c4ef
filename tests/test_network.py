"""The score network's layers against their definitions."""
import torch
import torch.nn.functional as F

from models.ncsn import CondInstanceNorm2dPlus


def instance_norm_plus_by_definition(norm, x, y):
    """Conditional instance norm++ (Song & Ermon 2019, eq. in app. A) written step by step."""
    means = x.mean(dim=(2, 3))
    standard = (means - means.mean(dim=-1, keepdim=True)) / torch.sqrt(means.var(dim=-1, keepdim=True) + 1e-5)
    gamma, alpha, beta = norm.embed(y).chunk(3, dim=-1)
    h = F.instance_norm(x, eps=1e-5) + standard[..., None, None] * alpha[..., None, None]
    return gamma[..., None, None] * h + beta[..., None, None]


def test_instance_norm_plus_is_its_definition_as_one_affine_map():
    torch.manual_seed(0)
    norm = CondInstanceNorm2dPlus(16, 10)
    norm.embed.weight.data.normal_()  # α and β are zero at initialisation: make every term count
    x = (torch.randn(3, 16, 12, 10) * 3 + torch.randn(1, 16, 1, 1)).requires_grad_(True)
    y = torch.tensor([0, 4, 9])
    ours, ref = norm(x, y), instance_norm_plus_by_definition(norm, x, y)
    assert torch.allclose(ours.detach(), ref.detach(), atol=1e-5 * float(ref.detach().abs().max()))
    g_ours, = torch.autograd.grad(ours.square().sum(), x)
    g_ref, = torch.autograd.grad(ref.square().sum(), x)
    assert torch.allclose(g_ours, g_ref, atol=1e-5 * float(g_ref.abs().max()))


def test_instance_norm_plus_keeps_its_statistics_in_float32_under_bf16():
    torch.manual_seed(1)
    norm = CondInstanceNorm2dPlus(8, 4)
    norm.embed.weight.data.normal_()
    x, y = torch.randn(2, 8, 16, 16) + 50, torch.tensor([1, 2])  # a large mean: bf16 statistics would lose it
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = norm(x.bfloat16(), y)
    ref = instance_norm_plus_by_definition(norm, x, y)
    assert out.dtype == torch.bfloat16
    assert (out.float() - ref).abs().max() < 0.05 * ref.abs().max()
