"""The HGM algorithm: a prior (score network, transform, noise levels), the annealed Langevin
sampler with its update rules, data consistency, and the restoration of one image (initial state,
padding, patches or tiles). Runs (runners/) and the API (hgm_api.py) call it; it reads no config
file and writes nothing.

- langevin.py: annealed_langevin, the update rules, step sizes
- settings.py: SamplerSettings (the test.* keys of one image)
- consistency.py: the measurement operator and data consistency, noiseless and noisy
- prior.py: Prior, load_prior
- restore_image.py: restore_image (one image, Alg. 1)
- patches.py, tiles.py: images too large for one pass
"""
from sampling.langevin import SamplerDiverged, annealed_langevin, nfe
from sampling.prior import Prior, PriorOptions, load_prior
from sampling.restore_image import restore_image
from sampling.settings import SamplerSettings

__all__ = ["Prior", "PriorOptions", "SamplerDiverged", "SamplerSettings", "annealed_langevin", "load_prior", "nfe",
           "restore_image"]
