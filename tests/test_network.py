"""The score network's building blocks against their textbook definitions."""
import torch
import torch.nn.functional as F

from models.ncsn import ELU, CondRefineNetDilated


def test_elu_equals_torch_elu():
    x = torch.cat([torch.linspace(-30, 30, 20001), torch.randn(10000) * 1e-4, torch.tensor([0.0, -0.0])])
    assert torch.allclose(ELU()(x), F.elu(x), rtol=0, atol=2e-7)


def test_elu_keeps_infinities_and_nan():
    x = torch.tensor([float("inf"), float("-inf"), float("nan")])
    out = ELU()(x)
    assert out[0] == float("inf") and out[1] == -1 and torch.isnan(out[2])


def test_elu_gradient_is_analytic():
    x = torch.randn(64, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(ELU(), (x,))
    x = torch.linspace(-5, 5, 101, requires_grad=True)
    ELU()(x).sum().backward()
    expected = torch.where(x > 0, torch.ones_like(x), torch.exp(x)).detach()
    assert torch.allclose(x.grad, expected, atol=1e-6)


def test_network_matches_torch_elu_network():
    torch.manual_seed(0)
    net = CondRefineNetDilated(12, 8, 4).eval()
    x, y = torch.rand(2, 12, 16, 16), torch.tensor([0, 3])
    with torch.no_grad():
        ours = net(x, y)
        for m in net.modules():
            if hasattr(m, "act"):
                m.act = torch.nn.ELU()
        reference = net(x, y)
    assert torch.allclose(ours, reference, rtol=1e-5, atol=1e-5)


def test_elu_under_bf16_autocast_keeps_the_dtype():
    x = torch.randn(8, dtype=torch.bfloat16)
    assert ELU()(x).dtype == torch.bfloat16
