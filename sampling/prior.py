"""Owns the prior: a trained score network with its transform and noise levels, built from a
checkpoint (the checkpoint is the source of truth for its architecture, transform and levels)."""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from datasets.errors import HGMError
from datasets.transforms import Transform, transform_from_config
from models.checkpoint import check_requested, load_checkpoint, prior_config, strip_module_prefix
from models.ncsn import build_model, trained_levels

log = logging.getLogger("hgm")


@dataclass(frozen=True)
class PriorOptions:
    """How a prior runs: EMA weights if the checkpoint has them, bf16 autocast, torch.compile, channels-last."""
    use_ema: bool = True
    bf16: bool = False
    compile: bool = False
    channels_last: bool = False

    @classmethod
    def from_config(cls, tcfg: dict, device: torch.device | None = None) -> PriorOptions:
        """test.compile "auto" loads the prior uncompiled: the run calls Prior.compile() if it pays.
        test.bf16 "auto": bf16 autocast where `device` computes in bf16 natively (`native_bf16`)."""
        bf16 = resolve_bf16(tcfg["bf16"], device or torch.device("cpu"), "test.bf16")
        return cls(tcfg["use_ema"], bf16, tcfg["compile"] is True, tcfg["channels_last"])


def resolve_bf16(value: bool | str, device: torch.device, name: str = "bf16") -> bool:
    """A bf16 setting (true, false or "auto") as a yes or no for `device`; `name` says it in the error."""
    if value == "auto":
        return native_bf16(device)
    if value is True or value is False:
        return value
    raise HGMError(f"{name}={value!r} must be true, false or auto")


def native_bf16(device: torch.device) -> bool:
    """Whether `device` has bf16 arithmetic in hardware: a GPU that supports it, or a CPU with AVX-512 BF16
    or AMX (elsewhere bf16 is emulated, and slower than fp32)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        return any(getattr(torch.cpu, name, lambda: False)() for name in checks)
    return False


class Prior:
    """A trained score network with its transform and noise levels."""

    def __init__(self, ckpt: dict, cfg: dict, device: torch.device, options: PriorOptions = PriorOptions(),
                 transform: Transform | None = None):
        self.cfg = cfg
        self.transform = transform or transform_from_config(cfg)
        self.model, self.sigmas = build_model(cfg, self.transform.channels, device)
        self.model.eval()
        weights = ckpt["ema"] if (options.use_ema and "ema" in ckpt) else ckpt["model"]
        self.model.load_state_dict(strip_module_prefix({k: v.float() for k, v in weights.items()}), strict=True)
        self.device, self.bf16, self.channels_last = device, options.bf16, options.channels_last
        self.step = int(ckpt.get("step", -1))
        self.training_crop = training_crop(ckpt)
        # trained on flipped crops (data.augment, the default): test.flips reads it on flips it has seen
        self.trained_on_flips = bool(((ckpt.get("config") or {}).get("data") or {}).get("augment", True))
        # trained on the levels with σ ≥ this only (training.sigma_min; None: all of them)
        self.trained_sigma_min = ((ckpt.get("config") or {}).get("training") or {}).get("sigma_min")
        self.net = self.model
        self.ran_compiled = False  # whether the network has run compiled (sampling/compiled.py records it)
        if options.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        if options.compile:
            self.compile()

    def untrained_below(self, last_level: int) -> bool:
        """Whether levels up to `last_level` reach below the ones this prior was trained on."""
        return last_level >= trained_levels(self.sigmas, self.trained_sigma_min)

    def compile(self) -> None:
        """Evaluate the network through torch.compile (compiled once per input shape, on first use)."""
        self.net = torch.compile(self.model, dynamic=False)

    @property
    def size_multiple(self) -> int:
        """Image sides the prior takes without padding: multiples of the transform's block size
        times the network's own multiple."""
        return self.transform.size_multiple * self.model.size_multiple

    def score(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            if self.net is self.model:
                return self.net(x, labels).float()
            try:
                out = self.net(x, labels).float()
                self.ran_compiled = True
                return out
            except Exception as e:  # no C compiler, an unsupported op...: the same results, uncompiled
                log.warning("torch.compile failed (%s); the network runs uncompiled",
                            str(e).splitlines()[0] if str(e) else type(e).__name__)
                self.net = self.model
                return self.net(x, labels).float()


def training_crop(ckpt: dict) -> int | None:
    """The side of the crops a checkpoint's network was trained on (its own config's data.image_size),
    if recorded. Read from the checkpoint, never from the run's config, whose data section is not the prior's."""
    saved = ckpt.get("config")
    size = saved.get("data", {}).get("image_size") if isinstance(saved, dict) else None
    return int(size) if isinstance(size, int) and size > 0 else None


def load_prior(path: str, device: torch.device, options: PriorOptions = PriorOptions(),
               requested: dict | None = None, base: dict | None = None) -> Prior:
    """The prior at `path`, built from the checkpoint's own config (architecture, transform, noise
    levels). `requested` (flat keys of checkpoint.MODEL_KEYS) are values the user set; one that
    disagrees with the checkpoint is refused, naming both. `base`: the run's config, whose other
    sections the prior's config keeps (default: none, only the model's keys)."""
    ckpt = load_checkpoint(path, map_location=device)
    cfg = prior_config(ckpt, path, base if base is not None else {"data": {}, "model": {}})
    check_requested(cfg, requested or {}, path)
    return Prior(ckpt, cfg, device, options)


