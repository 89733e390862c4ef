"""Score networks."""
from models.ncsn import CondRefineNetDilated, get_sigmas

__all__ = ["CondRefineNetDilated", "get_sigmas"]
