"""Owns the runner names: each maps to a generic runner and the config options the name fixes.

The paper's names (with its spelling, "demoscaicking") are aliases of two
generic runners; names are matched case-insensitively. No eval.
"""
from datasets.errors import HGMError
from datasets.transforms import VARIANTS


def variant_options(variant: str) -> dict:
    """The config options a variant (3ch, 6ch, 12ch) fixes: its transform, and its factor where it takes one."""
    name, factor = VARIANTS[variant]
    return {"data.transform": name, **({} if factor is None else {"data.transform_factor": factor})}


IDENTITY, COPY, POOL = variant_options("3ch"), variant_options("6ch"), variant_options("12ch")
INPAINT = {"test.task": "inpaint"}
DEMOSAIC = {"test.task": "demosaic"}
PROGRESSIVE = {"test.progressive.enabled": True}

RUNNERS = {
    # generic names: everything comes from the config
    "train": ("train", {}),
    "restore": ("restore", {}),
    "train_3ch": ("train", IDENTITY),
    "train_6ch": ("train", COPY),
    "train_12ch": ("train", POOL),
    # the paper's training names
    "train_3ch_rgb": ("train", IDENTITY),
    "train_6ch_rgbrgb": ("train", COPY),
    "train_12ch_pool": ("train", POOL),
    "Anneal_runner_train_6ch_demoscaicking": ("train", COPY),
    "Anneal_runner_train_12ch_demoscaicking": ("train", POOL),
    # the paper's restoration names
    "Test_3ch_inpainting_rgbrgb_256": ("restore", {**IDENTITY, **INPAINT}),
    "Test_6ch_inpainting_rgbrgb_256": ("restore", {**COPY, **INPAINT}),
    "Test_12ch_inpainting_pool": ("restore", {**POOL, **INPAINT}),
    "Test_6ch_inpainting_rgbrgb_p": ("restore", {**COPY, **INPAINT, **PROGRESSIVE}),
    "Test_12ch_inpainting_pool_p": ("restore", {**POOL, **INPAINT, **PROGRESSIVE}),
    "Test_6ch_demoscaicking_copy": ("restore", {**COPY, **DEMOSAIC}),
    "Test_6ch_demoscaicking_copy_p": ("restore", {**COPY, **DEMOSAIC, **PROGRESSIVE}),
    "Test_12ch_demoscaicking_pool": ("restore", {**POOL, **DEMOSAIC}),
    "Test_12ch_demoscaicking_pool_p": ("restore", {**POOL, **DEMOSAIC, **PROGRESSIVE}),
}
_BY_LOWER = {k.lower(): k for k in RUNNERS}


def resolve_runner(name: str) -> tuple[str, str, dict]:
    """Return (canonical name, kind, fixed options) or raise listing the valid names."""
    key = _BY_LOWER.get(str(name).lower())
    if key is None:
        raise HGMError(f"unknown runner {name!r}; valid runners: {', '.join(RUNNERS)}")
    kind, fixed = RUNNERS[key]
    return key, kind, dict(fixed)
