"""The score network's building blocks against their textbook definitions."""
import torch
import torch.nn.functional as F

from models.ncsn import ELU, CondInstanceNorm2dPlus, CondRefineNetDilated, box_mean5


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


def tiny_network_and_input():
    """An untrained 12-channel network (ngf 8, 4 levels) and a 2×12×16×16 input, both seeded."""
    torch.manual_seed(0)
    return CondRefineNetDilated(12, 8, 4).eval(), torch.rand(2, 12, 16, 16)


def test_network_matches_torch_elu_network():
    net, x = tiny_network_and_input()
    y = torch.tensor([0, 3])
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


def instance_norm_plus(norm, x, y):
    """Conditional instance norm++ as NCSN writes it: normalise, add back alpha × the
    standardised channel means, scale by gamma, shift by beta."""
    means = x.mean(dim=(2, 3))
    means = (means - means.mean(-1, keepdim=True)) / torch.sqrt(means.var(-1, keepdim=True) + 1e-5)
    gamma, alpha, beta = norm.embed(y).chunk(3, dim=-1)
    h = F.instance_norm(x, eps=1e-5) + means[..., None, None] * alpha[..., None, None]
    return gamma[..., None, None] * h + beta[..., None, None]


def test_instance_norm_plus_matches_its_definition_and_gradients():
    torch.manual_seed(0)
    norm = CondInstanceNorm2dPlus(6, 4)
    norm.embed.weight.data.normal_()
    x = (torch.randn(3, 6, 9, 7) * 3 + 2).requires_grad_()
    y = torch.tensor([0, 2, 3])
    ours, reference = norm(x, y), instance_norm_plus(norm, x, y)
    assert torch.allclose(ours, reference, atol=1e-5)
    g = torch.randn_like(ours)
    grads = torch.autograd.grad((ours * g).sum(), (x, norm.embed.weight))
    expected = torch.autograd.grad((reference * g).sum(), (x, norm.embed.weight))
    for a, b in zip(grads, expected):
        assert torch.allclose(a, b, atol=1e-4)


def test_box_mean_equals_average_pooling_in_any_layout():
    x = torch.randn(2, 5, 11, 8)
    expected = F.avg_pool2d(x, 5, stride=1, padding=2)
    assert torch.equal(box_mean5(x), expected)
    assert box_mean5(x).is_contiguous()
    last = x.contiguous(memory_format=torch.channels_last)
    assert torch.equal(box_mean5(last), expected)
    assert box_mean5(last).is_contiguous(memory_format=torch.channels_last)


def test_network_runs_under_bf16_autocast_close_to_fp32():
    net, x = tiny_network_and_input()
    y = torch.tensor([1, 2])
    with torch.no_grad():
        full = net(x, y)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            half = net(x, y).float()
    assert torch.isfinite(half).all()
    assert (half - full).norm() < 0.05 * full.norm()


def test_first_convolution_reads_the_input_in_fp32_under_bf16_autocast():
    net = CondRefineNetDilated(12, 8, 4).eval()
    seen = []
    net.begin_conv.register_forward_hook(lambda m, i, o: seen.append((i[0].dtype, o.dtype)))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        net(torch.rand(1, 12, 8, 8), torch.tensor([3]))
    assert seen == [(torch.float32, torch.float32)]


def test_instance_norm_plus_takes_its_statistics_in_float32_from_bf16_activations():
    """bf16 activations with a large common offset and a small spread of channel means: the
    standardised means (and so the output) must come from float32 statistics, not bf16-rounded ones."""
    torch.manual_seed(0)
    norm = CondInstanceNorm2dPlus(16, 2)
    norm.embed.weight.data.normal_()
    x = (torch.randn(2, 16, 12, 12) * 0.5 + 40 + 0.05 * torch.randn(2, 16, 1, 1)).bfloat16()
    y = torch.tensor([0, 1])
    reference = instance_norm_plus(norm, x.float(), y)
    ours = norm(x, y).float()
    assert (ours - reference).norm() < 0.02 * reference.norm()
