"""Owns the score network: the conditional RefineNet with dilations (the NCSN of Song & Ermon, 2019),
its noise levels, and `build_model`, the one place a config becomes a network.

The network s(x, i) estimates the score of the data perturbed with noise level
sigma_i. It downsamples once and then widens its receptive field with dilated
convolutions, so its cost grows with H*W*ngf^2; the channel count of the
(lifted) input touches only the first and last convolution.
"""
from __future__ import annotations

from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F


def get_sigmas(sigma_begin: float, sigma_end: float, num_classes: int,
               device: torch.device | str | None = None) -> torch.Tensor:
    """The paper's noise levels: geometric from sigma_begin down to sigma_end."""
    return torch.exp(torch.linspace(torch.log(torch.tensor(float(sigma_begin))),
                                    torch.log(torch.tensor(float(sigma_end))),
                                    int(num_classes))).to(device)


def trained_levels(sigmas: torch.Tensor, sigma_min: float | None) -> int:
    """How many of the levels (largest σ first) a run trains: those with σ ≥ sigma_min (a small
    tolerance for levels printed rounded, e.g. 0.31 for 0.3089), all when it is null."""
    if sigma_min is None:
        return len(sigmas)
    return max(1, int((sigmas >= sigma_min * (1 - 1e-3)).sum()))


class CondInstanceNorm2dPlus(nn.Module):
    """Conditional instance norm++: instance norm that keeps the per-channel means'
    spread via a learned alpha, with gamma/alpha/beta embedded per noise level."""

    def __init__(self, num_features, num_classes):
        super().__init__()
        self.num_features = num_features
        self.embed = nn.Embedding(num_classes, 3 * num_features)
        self.embed.weight.data[:, :2 * num_features].normal_(1, 0.02)
        self.embed.weight.data[:, 2 * num_features:].zero_()

    def forward(self, x, y):
        # statistics in float32 whatever the activations' dtype: under bf16 autocast the channel
        # means, rounded to bf16, lose their spread when it is small next to their common offset
        means = x.mean(dim=(2, 3), dtype=torch.float32)
        m = means.mean(dim=-1, keepdim=True)
        v = means.var(dim=-1, keepdim=True)
        means = (means - m) / torch.sqrt(v + 1e-5)
        gamma, alpha, beta = self.embed(y).chunk(3, dim=-1)
        # gamma·(instance_norm(x) + alpha·means) + beta in one normalisation kernel: batch norm over
        # the (sample, channel) planes with per-plane weight gamma and bias gamma·alpha·means + beta
        # (2.6× faster on CPU than norm, add, multiply, add; the same within float rounding)
        b, c = x.shape[:2]
        bias = torch.addcmul(beta, gamma, alpha * means)
        h = F.batch_norm(x.reshape(1, b * c, *x.shape[2:]), None, None, gamma.reshape(-1),
                         bias.reshape(-1), True, 0.0, 1e-5)
        return h.reshape(x.shape)


class _ExpELU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        out = x.clamp(max=0).exp_().sub_(1)
        torch.maximum(out, x, out=out)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad):
        (out,) = ctx.saved_tensors
        return grad * out.clamp(max=0).add_(1)  # ELU'(x) = 1 for x > 0, e^x = out + 1 below


class ELU(nn.Module):
    """ELU (alpha 1), on CPU written as max(x, e^min(x,0) − 1), the same function since e^x − 1 ≥ x:
    torch's CPU expm1 (which F.elu uses) runs about 10× slower than its exp, and this form made the
    activations 5.5× faster (docs/studies.md, Speed), equal to F.elu within float rounding (about 1e-7
    absolute, tests/test_network.py). Other devices keep F.elu, one pass over memory instead of four."""

    def forward(self, x):
        return _ExpELU.apply(x) if x.device.type == "cpu" else F.elu(x)


def conv3x3(cin, cout, bias=True, dilation=1):
    return nn.Conv2d(cin, cout, 3, padding=dilation, dilation=dilation, bias=bias)


class ConvMeanPool(nn.Module):
    """Convolution followed by 2x2 average pooling (the network's one downsampling)."""

    def __init__(self, cin, cout, kernel_size=3):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size, padding=kernel_size // 2)

    def forward(self, x):
        return F.avg_pool2d(self.conv(x), 2)


class CondResidualBlock(nn.Module):
    def __init__(self, cin, cout, num_classes, act, resample=None, dilation=1):
        super().__init__()
        self.act = act
        self.norm1 = CondInstanceNorm2dPlus(cin, num_classes)
        if resample == "down" and dilation == 1:
            self.conv1 = conv3x3(cin, cin)
            self.norm2 = CondInstanceNorm2dPlus(cin, num_classes)
            self.conv2 = ConvMeanPool(cin, cout, 3)
            shortcut = partial(ConvMeanPool, kernel_size=1)
        elif resample == "down":  # dilated "down" keeps the size, as in NCSN
            self.conv1 = conv3x3(cin, cin, dilation=dilation)
            self.norm2 = CondInstanceNorm2dPlus(cin, num_classes)
            self.conv2 = conv3x3(cin, cout, dilation=dilation)
            shortcut = partial(conv3x3, dilation=dilation)
        else:
            self.conv1 = conv3x3(cin, cout, dilation=dilation)
            self.norm2 = CondInstanceNorm2dPlus(cout, num_classes)
            self.conv2 = conv3x3(cout, cout, dilation=dilation)
            shortcut = partial(conv3x3, dilation=dilation) if dilation > 1 else partial(nn.Conv2d, kernel_size=1)
        self.shortcut = shortcut(cin, cout) if (cin != cout or resample is not None) else None

    def forward(self, x, y):
        h = self.conv1(self.act(self.norm1(x, y)))
        h = self.conv2(self.act(self.norm2(h, y)))
        return h + (x if self.shortcut is None else self.shortcut(x))


class CondRCUBlock(nn.Module):
    """Residual conv units: n_blocks residual blocks of n_stages (norm, act, conv)."""

    def __init__(self, features, n_blocks, n_stages, num_classes, act):
        super().__init__()
        self.act, self.n_blocks, self.n_stages = act, n_blocks, n_stages
        self.norms = nn.ModuleList(CondInstanceNorm2dPlus(features, num_classes) for _ in range(n_blocks * n_stages))
        self.convs = nn.ModuleList(conv3x3(features, features, bias=False) for _ in range(n_blocks * n_stages))

    def forward(self, x, y):
        k = 0
        for _ in range(self.n_blocks):
            residual = x
            for _ in range(self.n_stages):
                x = self.convs[k](self.act(self.norms[k](x, y)))
                k += 1
            x = x + residual
        return x


class CondMSFBlock(nn.Module):
    """Multi-resolution fusion: bring every input to the output size and sum."""

    def __init__(self, in_planes, features, num_classes):
        super().__init__()
        self.norms = nn.ModuleList(CondInstanceNorm2dPlus(p, num_classes) for p in in_planes)
        self.convs = nn.ModuleList(conv3x3(p, features) for p in in_planes)

    def forward(self, xs, y, shape):
        out = 0
        for x, norm, conv in zip(xs, self.norms, self.convs):
            h = conv(norm(x, y))
            if h.shape[-2:] != shape:
                h = F.interpolate(h, size=shape, mode="bilinear", align_corners=True)
            out = out + h
        return out


def box_mean5(x: torch.Tensor) -> torch.Tensor:
    """The 5×5 mean of every pixel's neighbourhood, zero-padded (avg_pool2d 5, stride 1, padding 2).
    On CPU torch pools channels-last tensors about 7× faster than plain ones, so the tensor is pooled
    in that layout and returned in its own (2.5× faster with both copies, bit for bit the same)."""
    if x.device.type != "cpu" or x.is_contiguous(memory_format=torch.channels_last):
        return F.avg_pool2d(x, 5, stride=1, padding=2)
    return F.avg_pool2d(x.contiguous(memory_format=torch.channels_last), 5, stride=1, padding=2).contiguous()


class CondCRPBlock(nn.Module):
    """Chained residual pooling."""

    def __init__(self, features, n_stages, num_classes, act):
        super().__init__()
        self.act = act
        self.norms = nn.ModuleList(CondInstanceNorm2dPlus(features, num_classes) for _ in range(n_stages))
        self.convs = nn.ModuleList(conv3x3(features, features, bias=False) for _ in range(n_stages))

    def forward(self, x, y):
        x = self.act(x)
        path = x
        for norm, conv in zip(self.norms, self.convs):
            path = conv(box_mean5(norm(path, y)))
            x = path + x
        return x


class CondRefineBlock(nn.Module):
    def __init__(self, in_planes, features, num_classes, act, start=False, end=False):
        super().__init__()
        self.adapt = nn.ModuleList(CondRCUBlock(p, 2, 2, num_classes, act) for p in in_planes)
        self.output = CondRCUBlock(features, 3 if end else 1, 2, num_classes, act)
        self.msf = None if start else CondMSFBlock(in_planes, features, num_classes)
        self.crp = CondCRPBlock(features, 2, num_classes, act)

    def forward(self, xs, y, shape):
        hs = [block(x, y) for block, x in zip(self.adapt, xs)]
        h = hs[0] if self.msf is None else self.msf(hs, y, shape)
        return self.output(self.crp(h, y), y)


class CondRefineNetDilated(nn.Module):
    """s(x, i): input and output have `channels` channels (3, 6 or 12 for HGM).

    Inputs are images in [0, 1] (lifted); like NCSN the network maps them to
    [-1, 1] first. Any spatial size works; sides that are multiples of `size_multiple`
    avoid interpolation (it halves its input once).
    """
    size_multiple = 2

    def __init__(self, channels: int, ngf: int, num_classes: int):
        super().__init__()
        self.channels, self.ngf, self.num_classes = channels, ngf, num_classes
        act = ELU()
        n = num_classes
        self.begin_conv = nn.Conv2d(channels, ngf, 3, padding=1)
        self.res1 = nn.ModuleList([CondResidualBlock(ngf, ngf, n, act), CondResidualBlock(ngf, ngf, n, act)])
        self.res2 = nn.ModuleList([CondResidualBlock(ngf, 2 * ngf, n, act, "down"),
                                   CondResidualBlock(2 * ngf, 2 * ngf, n, act)])
        self.res3 = nn.ModuleList([CondResidualBlock(2 * ngf, 2 * ngf, n, act, "down", dilation=2),
                                   CondResidualBlock(2 * ngf, 2 * ngf, n, act, dilation=2)])
        self.res4 = nn.ModuleList([CondResidualBlock(2 * ngf, 2 * ngf, n, act, "down", dilation=4),
                                   CondResidualBlock(2 * ngf, 2 * ngf, n, act, dilation=4)])
        self.refine1 = CondRefineBlock([2 * ngf], 2 * ngf, n, act, start=True)
        self.refine2 = CondRefineBlock([2 * ngf, 2 * ngf], 2 * ngf, n, act)
        self.refine3 = CondRefineBlock([2 * ngf, 2 * ngf], ngf, n, act)
        self.refine4 = CondRefineBlock([ngf, ngf], ngf, n, act, end=True)
        self.end_norm = CondInstanceNorm2dPlus(ngf, n)
        self.act = act
        self.end_conv = nn.Conv2d(ngf, channels, 3, padding=1)

    @staticmethod
    def _run(blocks, x, y):
        for block in blocks:
            x = block(x, y)
        return x

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # the first convolution reads the input at the weights' precision even under bf16 autocast: at
        # the smallest noise levels (σ 0.005) the noise is finer than bf16's resolution of pixel values
        # (2^-8 of them), and the score's error there fell from 7.5 % to 1.3 % (docs/studies.md, Speed)
        with torch.autocast(x.device.type, enabled=False):
            h = self.begin_conv(2 * x.to(self.begin_conv.weight.dtype) - 1)
        l1 = self._run(self.res1, h, y)
        l2 = self._run(self.res2, l1, y)
        l3 = self._run(self.res3, l2, y)
        l4 = self._run(self.res4, l3, y)
        r = self.refine1([l4], y, l4.shape[-2:])
        r = self.refine2([l3, r], y, l3.shape[-2:])
        r = self.refine3([l2, r], y, l2.shape[-2:])
        r = self.refine4([l1, r], y, l1.shape[-2:])
        return self.end_conv(self.act(self.end_norm(r, y)))


def build_model(cfg: dict, channels: int,
                device: torch.device | str | None = None) -> tuple[CondRefineNetDilated, torch.Tensor]:
    """The score network that cfg["model"] describes, for a lifting with `channels` channels
    (the transform's), and its noise levels, both on `device`."""
    m = cfg["model"]
    model = CondRefineNetDilated(channels, m["ngf"], m["num_classes"]).to(device)
    return model, get_sigmas(m["sigma_begin"], m["sigma_end"], m["num_classes"], device)
