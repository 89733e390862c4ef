from losses.dsm import anneal_dsm_loss

__all__ = ["anneal_dsm_loss"]
