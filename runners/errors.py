"""Re-export of `datasets.errors.HGMError` for code that imported it from here."""
from datasets.errors import HGMError

__all__ = ["HGMError"]
