"""Regenerates menon2007_reference.npz: the `colour-demosaicing` package's Menon 2007
output (refining step on, its defaults) for two small synthetic images and every Bayer
pattern. Needs `pip install colour-demosaicing`; the tests only read the file."""
import numpy as np
from colour_demosaicing import demosaicing_CFA_Bayer_Menon2007, masks_CFA_Bayer
from PIL import Image

h, w = 24, 30
i, j = np.mgrid[0:h, 0:w].astype(np.float64)
zone = 0.5 + 0.4 * np.cos(0.012 * ((i - 3) ** 2 + (j - 5) ** 2))  # a zone plate: aliasing-prone
noise = np.random.default_rng(0).random((h // 3 + 2, w // 3 + 2, 3))
field = np.asarray(Image.fromarray((noise * 255).astype(np.uint8)).resize((w, h), Image.BICUBIC)) / 255.0
imgs = np.round(np.stack([np.stack([zone, 0.8 * zone + 0.1, 1 - zone], -1), field]) * 255) / 255
out = {}
for pat in ["RGGB", "BGGR", "GRBG", "GBRG"]:
    m = np.stack(masks_CFA_Bayer((h, w), pat), -1)
    out[pat.lower()] = np.stack([demosaicing_CFA_Bayer_Menon2007((im * m).sum(-1), pat)
                                 for im in imgs]).astype(np.float32)
np.savez_compressed("menon2007_reference.npz", images=imgs.astype(np.float32), **out)
