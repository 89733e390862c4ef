"""Training objectives: annealed denoising score matching (losses/dsm.py)."""
from losses.dsm import anneal_dsm_loss

__all__ = ["anneal_dsm_loss"]
