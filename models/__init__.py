"""Score networks: the NCSN (models/ncsn.py) and the EMA of its weights (models/ema.py)."""
from models.ncsn import CondRefineNetDilated, build_model, get_sigmas

__all__ = ["CondRefineNetDilated", "build_model", "get_sigmas"]
