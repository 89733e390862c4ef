"""Owns the runs' progress bars: whether they are shown, and the per-image bar of restoration."""
from __future__ import annotations

import os

from tqdm import tqdm


def bars_disabled() -> bool:
    """Progress bars are off: TQDM_DISABLE is set to anything but 0/false (main.py --quiet sets it)."""
    return os.environ.get("TQDM_DISABLE", "").strip().lower() not in ("", "0", "false", "no")


def level_bar(desc: str) -> tqdm:
    """A per-image bar; restore_image sets its total (levels × steps × chunks, or tile evaluations)."""
    return tqdm(desc=desc, leave=False, dynamic_ncols=True, mininterval=1.0, disable=bars_disabled())
