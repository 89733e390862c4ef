"""Classical demosaicking: bilinear interpolation, Malvar–He–Cutler (ICASSP 2004) gradient-corrected
linear interpolation and Menon et al. 2007 (directional filtering with a posteriori decision), for every
Bayer pattern. Each takes a mosaic 3×H×W or B×3×H×W in [0, 1] (measured samples in their channels) and
returns the same shape, clipped to [0, 1], with every measured sample unchanged."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from classical.shapes import as_batch, check_size
from datasets.errors import HGMError
from datasets.masks import PATTERNS, bayer_mask

_K_RB = torch.tensor([[1., 2., 1.], [2., 4., 2.], [1., 2., 1.]]) / 4
_K_G = torch.tensor([[0., 1., 0.], [1., 4., 1.], [0., 1., 0.]]) / 4


def bilinear_demosaic(mosaic: torch.Tensor, pattern: str = "rggb") -> torch.Tensor:
    """Bilinear demosaicking as normalised convolution (weighted mean of the
    measured neighbours); reflect padding keeps the Bayer parity at borders."""
    x, single = as_batch(mosaic, "mosaic")
    b, _, h, w = x.shape
    check_size(h, w, 1, "bilinear_demosaic")
    m = bayer_mask(pattern, h, w, device=x.device).to(x.dtype).expand(b, 3, h, w)
    k = torch.stack([_K_RB, _K_G, _K_RB]).unsqueeze(1).to(device=x.device, dtype=x.dtype)
    num = F.conv2d(F.pad(x * m, (1, 1, 1, 1), mode="reflect"), k, groups=3)
    den = F.conv2d(F.pad(m, (1, 1, 1, 1), mode="reflect"), k, groups=3)
    out = torch.where(m > 0.5, x, num / den).clamp(0, 1)
    return out[0] if single else out


# ---------------------------------------------------------------- Malvar–He–Cutler

# The paper's filters (coefficients ×8). Each is a bilinear estimate plus a
# zero-sum correction from the channel measured at the centre, so linear
# gradients are reproduced exactly.
_G_AT_RB = [[0, 0, -1, 0, 0],
            [0, 0, 2, 0, 0],
            [-1, 2, 4, 2, -1],
            [0, 0, 2, 0, 0],
            [0, 0, -1, 0, 0]]
# R (or B) at a green site whose row holds R (or B): neighbours left/right
_ROW = [[0, 0, 0.5, 0, 0],
        [0, -1, 0, -1, 0],
        [-1, 4, 5, 4, -1],
        [0, -1, 0, -1, 0],
        [0, 0, 0.5, 0, 0]]
# R at B and B at R: neighbours on the diagonals
_DIAG = [[0, 0, -1.5, 0, 0],
         [0, 2, 0, 2, 0],
         [-1.5, 0, 6, 0, -1.5],
         [0, 2, 0, 2, 0],
         [0, 0, -1.5, 0, 0]]
_MHC = torch.stack([torch.tensor(_G_AT_RB), torch.tensor(_ROW),
                    torch.tensor(_ROW).t(), torch.tensor(_DIAG)]).unsqueeze(1) / 8
# index into [cfa, G_AT_RB, ROW, COL, DIAG] responses
_IDENTITY, _G_RB, _ROWF, _COLF, _DIAGF = range(5)


def _malvar_roles(pattern):
    """For each 2×2 tile position, which response each channel takes (3×2×2)."""
    pattern = str(pattern).lower()
    if pattern not in PATTERNS:
        raise HGMError(f"unknown Bayer pattern {pattern!r}; choose one of {', '.join(PATTERNS)}")
    r_row = pattern.index("r") // 2
    b_row = pattern.index("b") // 2
    roles = torch.zeros(3, 2, 2, dtype=torch.long)
    for k, c in enumerate(pattern):
        i, j = divmod(k, 2)
        if c == "r":
            roles[:, i, j] = torch.tensor([_IDENTITY, _G_RB, _DIAGF])
        elif c == "b":
            roles[:, i, j] = torch.tensor([_DIAGF, _G_RB, _IDENTITY])
        else:
            roles[0, i, j] = _ROWF if i == r_row else _COLF
            roles[1, i, j] = _IDENTITY
            roles[2, i, j] = _ROWF if i == b_row else _COLF
    return roles


def malvar_demosaic(mosaic: torch.Tensor, pattern: str = "rggb") -> torch.Tensor:
    """Malvar–He–Cutler 2004 demosaicking: the four 5×5 gradient-corrected
    filters run on the single-plane CFA; each pixel/channel picks its filter by
    its position in the 2×2 tile. Reflect padding (2 px) keeps the tile parity."""
    x, single = as_batch(mosaic, "mosaic")
    b, _, h, w = x.shape
    check_size(h, w, 2, "malvar_demosaic")
    m = bayer_mask(pattern, h, w, device=x.device).to(x.dtype)
    cfa = (x * m).sum(1, keepdim=True)
    k = _MHC.to(device=x.device, dtype=x.dtype)
    resp = torch.cat([cfa, F.conv2d(F.pad(cfa, (2, 2, 2, 2), mode="reflect"), k)], 1)
    idx = _malvar_roles(pattern).to(x.device).repeat(1, (h + 1) // 2, (w + 1) // 2)[:, :h, :w]
    out = torch.gather(resp, 1, idx.expand(b, 3, h, w)).clamp(0, 1)
    return out[0] if single else out


# ---------------------------------------------------------------- Menon 2007 (DDFAPD)

def _conv1d(x, k, dim):
    """1-D correlation of B×1×H×W planes along H (dim=2) or W (dim=3), mirrored borders
    (a b c | b a: reflect without repeating the edge sample). Symmetric kernels only."""
    n = len(k) // 2
    w = torch.tensor(k, dtype=x.dtype, device=x.device)
    if dim == 3:
        return F.conv2d(F.pad(x, (n, n, 0, 0), mode="reflect"), w.view(1, 1, 1, -1))
    return F.conv2d(F.pad(x, (0, 0, n, n), mode="reflect"), w.view(1, 1, -1, 1))


_H0 = [0.0, 0.5, 0.0, 0.5, 0.0]        # green: mean of the two greens along the direction
_H1 = [-0.25, 0.0, 0.5, 0.0, -0.25]    # plus the Laplacian of the centre channel
_KB = [0.5, 0.0, 0.5]                  # mean of the two neighbours
_FIR = [1 / 3, 1 / 3, 1 / 3]
# The a-posteriori classifier: sums of chrominance gradients over a 5×5 window,
# weighted towards the centre row (for the horizontal decision; transposed for vertical).
_CLASSIFIER = torch.tensor([[0., 0., 1., 0., 1.],
                            [0., 0., 0., 1., 0.],
                            [0., 0., 3., 0., 3.],
                            [0., 0., 0., 1., 0.],
                            [0., 0., 1., 0., 1.]])


def menon_demosaic(mosaic: torch.Tensor, pattern: str = "rggb", refine: bool = True) -> torch.Tensor:
    """Menon, Andriani & Calvagno 2007, "Demosaicing with directional filtering and a
    posteriori decision" (DDFAPD): green interpolated horizontally and vertically, the
    direction chosen per pixel by the smaller sum of chrominance gradients, then red and
    blue from colour differences along that direction, then (refine) the paper's
    refining step. Batched torch; the same conventions as the `colour-demosaicing`
    package's implementation (mirrored borders, zero-padded classifier)."""
    x, single = as_batch(mosaic, "mosaic")
    b, _, h, w = x.shape
    check_size(h, w, 2, "menon_demosaic")
    m = bayer_mask(pattern, h, w, device=x.device).to(x.dtype).unsqueeze(0)
    rm, gm, bm = (m[:, c:c + 1] > 0.5 for c in range(3))
    cfa = (x * m).sum(1, keepdim=True)
    R, G, B = (cfa * m[:, c:c + 1] for c in range(3))
    hz = lambda t, k: _conv1d(t, k, 3)  # noqa: E731
    vt = lambda t, k: _conv1d(t, k, 2)  # noqa: E731

    g_h = torch.where(gm, G, hz(cfa, _H0) + hz(cfa, _H1))
    g_v = torch.where(gm, G, vt(cfa, _H0) + vt(cfa, _H1))
    zero = torch.zeros_like(cfa)
    c_h = torch.where(rm, R - g_h, torch.where(bm, B - g_h, zero))
    c_v = torch.where(rm, R - g_v, torch.where(bm, B - g_v, zero))
    # |C(i, j) - C(i, j+2)| (and i+2), mirrored at the far border
    d_h = (c_h - F.pad(c_h, (0, 2, 0, 0), mode="reflect")[..., :, 2:]).abs()
    d_v = (c_v - F.pad(c_v, (0, 0, 0, 2), mode="reflect")[..., 2:, :]).abs()
    k = _CLASSIFIER.to(device=x.device, dtype=x.dtype)
    # a true convolution (kernel flipped), zero padding
    s_h = F.conv2d(F.pad(d_h, (2, 2, 2, 2)), k.flip(0, 1).view(1, 1, 5, 5))
    s_v = F.conv2d(F.pad(d_v, (2, 2, 2, 2)), k.t().flip(0, 1).reshape(1, 1, 5, 5))
    horiz = s_v >= s_h
    G = torch.where(horiz, g_h, g_v)

    r_rows = rm.any(-1, keepdim=True).expand_as(rm)
    b_rows = bm.any(-1, keepdim=True).expand_as(bm)
    R = torch.where(gm & r_rows, G + hz(R, _KB) - hz(G, _KB), R)
    R = torch.where(gm & b_rows, G + vt(R, _KB) - vt(G, _KB), R)
    B = torch.where(gm & b_rows, G + hz(B, _KB) - hz(G, _KB), B)
    B = torch.where(gm & r_rows, G + vt(B, _KB) - vt(G, _KB), B)
    R = torch.where(bm, torch.where(horiz, B + hz(R, _KB) - hz(B, _KB), B + vt(R, _KB) - vt(B, _KB)), R)
    B = torch.where(rm, torch.where(horiz, R + hz(B, _KB) - hz(R, _KB), R + vt(B, _KB) - vt(R, _KB)), B)

    if refine:
        along = lambda t, k: torch.where(horiz, hz(t, k), vt(t, k))  # noqa: E731
        # green at red/blue sites from the smoothed colour difference along the chosen direction
        rg_m = torch.where(rm, along(R - G, _FIR), zero)
        bg_m = torch.where(bm, along(B - G, _FIR), zero)
        G = torch.where(rm, R - rg_m, G)
        G = torch.where(bm, B - bg_m, G)
        # red and blue at green sites from the colour difference of the two measured neighbours
        r_cols = rm.any(-2, keepdim=True).expand_as(rm)
        b_cols = bm.any(-2, keepdim=True).expand_as(bm)
        rg, bg = R - G, B - G
        rg_m = torch.where(gm & b_rows, vt(rg, _KB), rg_m)
        R = torch.where(gm & b_rows, G + rg_m, R)
        rg_m = torch.where(gm & b_cols, hz(rg, _KB), rg_m)
        R = torch.where(gm & b_cols, G + rg_m, R)
        bg_m = torch.where(gm & r_rows, vt(bg, _KB), bg_m)
        B = torch.where(gm & r_rows, G + bg_m, B)
        bg_m = torch.where(gm & r_cols, hz(bg, _KB), bg_m)
        B = torch.where(gm & r_cols, G + bg_m, B)
        # red at blue sites and blue at red sites from the smoothed red-blue difference
        rb = along(R - B, _FIR)
        R = torch.where(bm, B + rb, R)
        B = torch.where(rm, R - rb, B)

    out = torch.cat([R, G, B], 1)
    out = torch.where(m.expand_as(out) > 0.5, x, out).clamp(0, 1)
    return out[0] if single else out
