"""Owns a training run: one runner for every transform, annealed DSM on lifted image crops.

The run is set up (checks, run folder, resume or warm start, data, model), then
`TrainRunner.train_loop` calls `train_step` once per batch and writes logs, validation
losses and checkpoints.

Under torchrun (see runners/distributed.py) the model is wrapped in
DistributedDataParallel, training.batch_size is the global batch (split evenly
over the ranks), each rank draws its own crops from a DistributedSampler shard,
and only rank 0 writes logs, tensorboard, validation and checkpoints (of the
unwrapped model, so they are the same as single-process ones). Every step that
can fail before training (run folder, checkpoint, data) is agreed on by all
ranks, so an error on one rank stops them all instead of leaving them waiting.
"""
from __future__ import annotations

import argparse
import logging
import math
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from tqdm import tqdm

from datasets.errors import HGMError
from datasets.files import FolderLock, check_output_location, move_aside, remove_stale_temporaries
from datasets.training_data import RandomCrops, as_float, training_images
from datasets.transforms import Transform, transform_from_config
from losses.dsm import anneal_dsm_loss
from models.checkpoint import (
    ARCHITECTURE,
    check_compatible,
    existing_checkpoints,
    load_checkpoint,
    model_signature,
    save_checkpoint,
    strip_module_prefix,
)
from models.ema import EMA
from models.ncsn import CondRefineNetDilated, build_model, trained_levels
from runners import distributed
from runners.config import dump_config
from runners.progress import bars_disabled
from runners.signals import StopSignals
from runners.tb_images import SnapshotPictures

if TYPE_CHECKING:
    from tensorboardX import SummaryWriter

log = logging.getLogger("hgm")


def make_optimizer(cfg: dict, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    o = cfg["optim"]
    name = o["optimizer"].lower()
    if name == "adam":
        return torch.optim.Adam(params, lr=o["lr"], betas=(o["beta1"], 0.999), eps=o["eps"],
                                weight_decay=o["weight_decay"], amsgrad=o["amsgrad"])
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=o["lr"], weight_decay=o["weight_decay"], eps=o["eps"])
    if name == "sgd":
        return torch.optim.SGD(params, lr=o["lr"], momentum=0.9, weight_decay=o["weight_decay"])
    raise HGMError(f"unknown optim.optimizer {o['optimizer']!r}; choose Adam, RMSProp or SGD")


def dequantize(x: torch.Tensor) -> torch.Tensor:
    """8-bit values to a continuous density: x·255/256 + U(0, 1/256)."""
    return x * 255.0 / 256.0 + torch.rand_like(x) / 256.0


# ----------------------------------------------------------------------------- one step

@dataclass
class Trainer:
    """What one optimisation step needs."""
    model: torch.nn.Module  # the unwrapped network (checkpoints, EMA, clipping)
    net: torch.nn.Module  # what the loss calls: the model, or its DistributedDataParallel wrapper
    optimizer: torch.optim.Optimizer
    ema: EMA | None
    transform: Transform
    sigmas: torch.Tensor
    device: torch.device
    autocast: torch.autocast
    anneal_power: float
    grad_clip: float | None
    dequantize: bool
    n_levels: int  # the levels trained: the first n_levels of `sigmas` (training.sigma_min)
    grad_norm: torch.Tensor | None = None  # the last step's gradient norm (before clipping), for TensorBoard


def grad_norm(params: Iterable[torch.nn.Parameter]) -> torch.Tensor:
    """The total 2-norm of the gradients, leaving them untouched (no host sync)."""
    grads = [p.grad.detach() for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))


def train_step(t: Trainer, x: torch.Tensor) -> torch.Tensor:
    """One step of annealed DSM (HGM Eq. 4) on a batch of crops in [0, 1]; returns this rank's loss."""
    x = x.to(t.device, non_blocking=True)
    if t.dequantize:
        x = dequantize(x)
    with t.autocast:
        loss = anneal_dsm_loss(t.net, t.transform.forward(x), t.sigmas, anneal_power=t.anneal_power,
                               n_levels=t.n_levels)
    t.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if t.grad_clip:
        t.grad_norm = torch.nn.utils.clip_grad_norm_(t.model.parameters(), t.grad_clip).detach()
    else:
        t.grad_norm = grad_norm(t.model.parameters())
    t.optimizer.step()
    if t.ema is not None:
        t.ema.update(t.model)
    return loss


# ----------------------------------------------------------------------------- setup

def check_settings(cfg: dict, transform: Transform, world: int) -> None:
    """Values the config schema cannot check by type alone."""
    tr, size = cfg["training"], cfg["data"]["image_size"]
    if not cfg["data"]["path"]:
        raise HGMError("data.path is not set: name the training image folder with --set data.path=DIR "
                       "(README, Data)")
    multiple = transform.size_multiple * CondRefineNetDilated.size_multiple
    if size % multiple:
        raise HGMError(f"data.image_size={size} must be divisible by {multiple} for the {transform.name} transform")
    for key in ("snapshot_freq", "log_freq", "batch_size", "n_iters"):
        if tr[key] < 1:
            raise HGMError(f"training.{key} must be at least 1, got {tr[key]}")
    if tr["sigma_min"] is not None and not 0 < tr["sigma_min"] <= cfg["model"]["sigma_begin"]:
        raise HGMError(f"training.sigma_min={tr['sigma_min']} must be above 0 and at most model.sigma_begin="
                       f"{cfg['model']['sigma_begin']} (the largest level), or null to train every level")
    if tr["batch_size"] % world:
        raise HGMError(f"training.batch_size={tr['batch_size']} (the global batch) does not divide by "
                       f"the world size {world}")


def check_run_location(cfg: dict, log_dir: str, tb_dir: str) -> None:
    """Refuse run folders that are, lie inside or contain the training data, or contain the warm-start weights."""
    for folder in (log_dir, tb_dir):
        check_output_location(folder, "the run folder", data={"the data folder data.path": cfg["data"]["path"]},
                              keep={"training.init_from": cfg["training"]["init_from"]})


def prepare_run_dirs(args: argparse.Namespace, log_dir: str, tb_dir: str) -> None:
    """Refuse to start over a run that holds checkpoints; never delete anything."""
    found = existing_checkpoints(log_dir)
    if args.resume_training:
        if not os.path.isfile(os.path.join(log_dir, "checkpoint.pth")):
            raise HGMError(f"--resume_training: no checkpoint.pth in {log_dir}")
        return
    if found:
        if not getattr(args, "overwrite", False):
            raise HGMError(f"{log_dir} already holds {len(found)} checkpoint file(s); pass --resume_training "
                           f"to continue it, --overwrite to start afresh (the old run is kept aside), "
                           f"or choose another --doc")
        for d in (log_dir, tb_dir):
            if os.path.exists(d):
                log.warning("moved the earlier %s to %s", d, move_aside(d))


def warm_start(model: torch.nn.Module, path: str, cfg: dict, transform: Transform | None = None) -> None:
    """Start a new run from another run's weights (fine-tuning): the weights only, no optimizer
    state or step. The architecture must match; the noise range may differ, so that a prior can be
    re-targeted to the levels restoration uses (the level embeddings adapt in training)."""
    ckpt = load_checkpoint(path)
    have = check_compatible(ckpt, cfg, path, transform, keys=ARCHITECTURE, what="training.init_from")
    want = model_signature(cfg, transform)
    try:
        model.load_state_dict(strip_module_prefix(ckpt["model"]), strict=True)
    except RuntimeError as e:
        raise HGMError(f"training.init_from={path}: {str(e).splitlines()[0]}") from e
    if (have["sigma_begin"], have["sigma_end"]) != (want["sigma_begin"], want["sigma_end"]):
        log.warning("training.init_from: the prior was trained for sigmas %g -> %g, this run uses %g -> %g",
                    have["sigma_begin"], have["sigma_end"], want["sigma_begin"], want["sigma_end"])
    log.info("warm start from %s (its step %s); fresh optimizer, step 0", path, ckpt.get("step"))


def validation_set(images: list, transform: Transform, n_levels: int, cfg: dict) -> list[tuple]:
    """Fixed crops, levels and noise, so validation losses are comparable across steps."""
    g = torch.Generator().manual_seed(1234)
    size, bs = cfg["data"]["image_size"], cfg["training"]["batch_size"]
    batches = []
    for b in range(cfg["training"]["val_batches"]):
        xs = []
        for j in range(bs):
            img = images[(b * bs + j) % len(images)]
            h, w = img.shape[-2:]
            top = int(torch.randint(0, h - size + 1, (), generator=g))
            left = int(torch.randint(0, w - size + 1, (), generator=g))
            xs.append(img[:, top:top + size, left:left + size])
        x = transform.forward(torch.stack([as_float(c) for c in xs]))
        labels = torch.randint(0, n_levels, (bs,), generator=g)
        noise = torch.randn(x.shape, generator=g)
        batches.append((x, labels, noise))
    return batches


@torch.no_grad()
def validation_loss(model: torch.nn.Module, batches: list[tuple], t: Trainer) -> float:
    """The DSM loss of `model` on the fixed validation batches."""
    was_training = model.training
    model.eval()
    total = 0.0
    for x, labels, noise in batches:
        d = t.device
        with t.autocast:
            total += anneal_dsm_loss(model, x.to(d), t.sigmas, labels.to(d), t.anneal_power, noise.to(d)).item()
    model.train(was_training)
    return total / len(batches)


@dataclass
class Progress:
    """Where a run stands: its step, time and last losses."""
    step: int = 0
    seconds: float = 0.0  # training time of earlier sessions (resume)
    loss: float = float("nan")
    val_loss: float | None = None
    val_step: int | None = None
    last_saved: int | None = None  # the step of the last checkpoint this session wrote
    t0: float = field(default_factory=time.time)


# ----------------------------------------------------------------------------- runner

class TrainRunner:
    def __init__(self, args: argparse.Namespace, cfg: dict, device: torch.device):
        self.args, self.cfg, self.device = args, cfg, device
        self.world = distributed.world_size()
        self.main = distributed.is_main()
        self.log_dir = os.path.join(args.run, "logs", args.doc)
        self.tb_dir = os.path.join(args.run, "tensorboard", args.doc)
        self._log_handler = None
        self.stop = StopSignals()
        # held by rank 0 from before the run folder is checked until the run ends: a second run on
        # this --doc is refused at its start, naming this one, instead of overwriting its checkpoints
        self.lock = FolderLock(self.log_dir, "run folder")
        self.pictures = SnapshotPictures.from_config(cfg)

    def run(self) -> None:
        try:
            self._run()
        finally:  # a caller that trains again in this process must not log into this run's stdout.txt
            if self._log_handler is not None:
                log.removeHandler(self._log_handler)
                self._log_handler.close()
                self._log_handler = None
            self.lock.release()

    def claim_run_dir(self) -> None:
        """Check where the run folder is, lock it, then check what it holds (rank 0)."""
        check_run_location(self.cfg, self.log_dir, self.tb_dir)
        self.lock.acquire()
        prepare_run_dirs(self.args, self.log_dir, self.tb_dir)

    def _run(self) -> None:
        transform = transform_from_config(self.cfg)
        check_settings(self.cfg, transform, self.world)
        # distributed.agree(): rank 0 alone checks (and writes) the run folder, but every rank
        # hears the verdict before going on; without torchrun it just calls the function
        distributed.agree(self.claim_run_dir if self.main else lambda: None)
        ckpt = self.resume_checkpoint(transform)
        distributed.agree(self.open_run_dir if self.main else lambda: None)
        dcfg = self.cfg["data"]
        train_imgs, val_imgs, n_found = distributed.agree(
            lambda: training_images(dcfg["path"], dcfg["image_size"], dcfg["val_images"], dcfg["preload"], seed=0))
        log.info("data: %d images in %s (%d for training, %d held out for validation), %d×%d crops, "
                 "transform %s -> %d channels", n_found, dcfg["path"], len(train_imgs), len(val_imgs),
                 dcfg["image_size"], dcfg["image_size"], transform.name, transform.channels)
        trainer, progress = self.build_trainer(transform, ckpt)
        loader, sampler = self.make_loader(train_imgs)
        val = validation_set(val_imgs, transform, trainer.n_levels, self.cfg) if (self.main and val_imgs) else None
        n_iters = self.cfg["training"]["n_iters"]
        if progress.step >= n_iters:
            log.info("checkpoint is at step %d, training.n_iters=%d: nothing to do", progress.step, n_iters)
            return
        self.train_loop(trainer, progress, loader, sampler, val)

    def resume_checkpoint(self, transform: Transform) -> dict | None:
        """The checkpoint to resume (checked on every rank before anything is written), or None."""
        if not self.args.resume_training:
            return None
        path = os.path.join(self.log_dir, "checkpoint.pth")

        def load():  # on every rank (several nodes: the run folder must be at the same path on each)
            c = load_checkpoint(path)
            check_compatible(c, self.cfg, path, transform)
            return c
        return distributed.agree(load)

    def open_run_dir(self) -> None:
        os.makedirs(self.log_dir, exist_ok=True)
        for path in remove_stale_temporaries(self.log_dir):
            log.info("removed %s, left by a killed run", path)
        handler = logging.FileHandler(os.path.join(self.log_dir, "stdout.txt"))
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(handler)
        self._log_handler = handler
        comment = getattr(self.args, "comment", "")
        if comment:
            log.info("comment: %s", comment)
        dump_config(self.cfg, os.path.join(self.log_dir, "config.yml"), comment)

    def build_trainer(self, transform: Transform, ckpt: dict | None) -> tuple[Trainer, Progress]:
        """Model, optimizer and EMA: fresh, resumed from `ckpt`, or warm-started (training.init_from)."""
        cfg, device, tr = self.cfg, self.device, self.cfg["training"]
        model, sigmas = build_model(cfg, transform.channels, device)
        n_params = sum(p.numel() for p in model.parameters())
        log.info("model: CondRefineNetDilated, ngf %d, %d channels, %s parameters",
                 cfg["model"]["ngf"], transform.channels, f"{n_params:,}")
        optimizer = make_optimizer(cfg, model.parameters())
        ema = EMA(model, cfg["model"]["ema_rate"]) if cfg["model"]["ema"] else None
        progress = Progress()
        if ckpt is not None:
            progress = self.restore_state(ckpt, model, optimizer, ema)
        elif tr["init_from"]:
            warm_start(model, tr["init_from"], cfg, transform)
            if ema is not None:  # the average starts from the warm-started weights, not the random ones
                ema.load_state_dict(model.state_dict())
        net = model
        if self.world > 1:
            net = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None)
        autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=tr["bf16"])
        n_levels = trained_levels(sigmas, tr["sigma_min"])
        if n_levels < len(sigmas):
            log.info("training the %d largest of %d levels only (σ %g → %g; training.sigma_min %g)", n_levels,
                     len(sigmas), float(sigmas[0]), float(sigmas[n_levels - 1]), tr["sigma_min"])
        trainer = Trainer(model, net, optimizer, ema, transform, sigmas, device, autocast, tr["anneal_power"],
                          tr["grad_clip"], cfg["data"]["dequantize"], n_levels)
        return trainer, progress

    def restore_state(self, ckpt: dict, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                      ema: EMA | None) -> Progress:
        model.load_state_dict(strip_module_prefix(ckpt["model"]), strict=True)
        optimizer.load_state_dict(ckpt["optimizer"])
        for group in optimizer.param_groups:  # the config may change the learning rate on resume
            group["lr"] = self.cfg["optim"]["lr"]
        if ema is not None:
            ema.load_state_dict(strip_module_prefix(ckpt["ema"]) if "ema" in ckpt else model.state_dict())
        step = int(ckpt["step"])
        if "rng" in ckpt and self.world == 1:
            torch.set_rng_state(ckpt["rng"])
        elif self.world > 1:  # fresh per-rank streams, not a replay of the first steps' crops and noise
            torch.manual_seed(self.args.seed + distributed.rank() + 1_000_003 * step)
        log.info("resumed from step %d", step)
        return Progress(step=step, seconds=float(ckpt.get("train_seconds", 0.0)))

    def make_loader(self, images: list) -> tuple[torch.utils.data.DataLoader, torch.utils.data.Sampler | None]:
        """Random crops, each rank its share of the global batch (and its own shard under torchrun)."""
        tr, dcfg = self.cfg["training"], self.cfg["data"]
        dataset = RandomCrops(images, dcfg["image_size"], dcfg["augment"], min_len=tr["batch_size"])
        sampler = (torch.utils.data.distributed.DistributedSampler(dataset, shuffle=True, drop_last=True)
                   if self.world > 1 else None)
        workers = dcfg["num_workers"]
        loader = torch.utils.data.DataLoader(dataset, batch_size=tr["batch_size"] // self.world,
                                             shuffle=sampler is None, sampler=sampler, drop_last=True,
                                             num_workers=workers, persistent_workers=workers > 0,
                                             pin_memory=self.device.type == "cuda")
        return loader, sampler

    def snapshot(self, t: Trainer, p: Progress) -> None:
        """Write checkpoint_<step>.pth and checkpoint.pth (rank 0 only)."""
        if not self.main:
            return
        state = {"model": t.model.state_dict(), "optimizer": t.optimizer.state_dict(), "step": p.step,
                 "config": self.cfg, "train_seconds": p.seconds + time.time() - p.t0, "loss": p.loss,
                 "val_loss": p.val_loss, "val_step": p.val_step, "rng": torch.get_rng_state(),
                 "world_size": self.world}
        if t.ema is not None:
            state["ema"] = t.ema.state_dict()
        self.stop.saving = True  # a second Ctrl-C now waits for the save
        try:
            save_checkpoint(state, self.log_dir, p.step)
        finally:
            self.stop.saving = False
        p.last_saved = p.step
        log.info("step %d: checkpoint written to %s", p.step, self.log_dir)

    def after_step(self, t: Trainer, p: Progress, loss: torch.Tensor, writer: SummaryWriter | None,
                   bar: tqdm, val: list[tuple] | None) -> None:
        """Book-keeping after a step: the loss agreed over ranks, logs, validation, checkpoints."""
        tr, n_iters = self.cfg["training"], self.cfg["training"]["n_iters"]
        # the same on every rank, so all stop on a NaN, and all stop at the same step on a signal
        p.loss, stop = distributed.mean_and_any(loss, self.stop.requested is not None)
        if stop:
            self.stop.agreed = True
        if not math.isfinite(p.loss):
            ckpt = os.path.join(self.log_dir, "checkpoint.pth")
            kept = (f"the last checkpoint, step {p.last_saved}, is kept" if p.last_saved is not None else
                    "the last checkpoint is kept" if os.path.isfile(ckpt) else "no checkpoint was written")
            raise HGMError(f"training loss became {p.loss} at step {p.step}; lower optim.lr "
                           f"or set training.grad_clip ({kept})")
        last = p.step == n_iters
        if self.main:
            bar.update(1)
            bar.set_postfix(loss=f"{p.loss:.4f}", refresh=False)
            if p.step % tr["log_freq"] == 0 or last:
                writer.add_scalar("loss", p.loss, p.step)
                writer.add_scalar("lr", t.optimizer.param_groups[0]["lr"], p.step)
                if t.grad_norm is not None:
                    writer.add_scalar("grad_norm", float(t.grad_norm), p.step)
                log.debug("step %d loss %.5f", p.step, p.loss)
            if val is not None and tr["val_freq"] and (p.step % tr["val_freq"] == 0 or last):
                p.val_step = p.step
                p.val_loss = validation_loss(t.model if t.ema is None else t.ema.shadow, val, t)
                writer.add_scalar("val_loss", p.val_loss, p.step)
                log.info("step %d: loss %.5f, validation loss %.5f", p.step, p.loss, p.val_loss)
        if p.step % tr["snapshot_freq"] == 0 or last:
            self.snapshot(t, p)
            if self.main:
                self.pictures.write(writer, t.model if t.ema is None else t.ema.shadow, t.transform, t.sigmas,
                                    val[0][0] if val else None, p.step)

    def train_loop(self, t: Trainer, p: Progress, loader: torch.utils.data.DataLoader,
                   sampler: torch.utils.data.Sampler | None, val: list[tuple] | None) -> None:
        """Call train_step on every batch until training.n_iters; a checkpoint is saved on Ctrl-C/SIGTERM too."""
        n_iters = self.cfg["training"]["n_iters"]
        writer = None
        if self.main:
            from tensorboardX import SummaryWriter
            writer = SummaryWriter(self.tb_dir)
        bar = tqdm(total=n_iters, initial=p.step, disable=not self.main or bars_disabled(),
                   desc=f"train {self.args.doc}", dynamic_ncols=True, mininterval=1.0)
        # the distributed sampler's shuffle depends on the epoch: continue the count on resume
        epoch = p.step // max(1, len(loader))
        p.t0 = time.time()
        stop = self.stop
        try:
            with stop:
                while p.step < n_iters and not stop.agreed:
                    if sampler is not None:
                        sampler.set_epoch(epoch)
                    for x in loader:
                        loss = train_step(t, x)
                        p.step += 1
                        self.after_step(t, p, loss, writer, bar, val)
                        if p.step >= n_iters or stop.agreed:
                            break
                    epoch += 1
                if stop.agreed:
                    log.warning("%s at step %d: saving a checkpoint before exiting", stop.name, p.step)
                    if p.last_saved != p.step:
                        self.snapshot(t, p)
                    raise KeyboardInterrupt(stop.name)
        except KeyboardInterrupt:
            if not stop.agreed:  # Ctrl-C outside the loop's handler (e.g. another thread installed it)
                log.warning("interrupted at step %d: saving a checkpoint before exiting", p.step)
                self.snapshot(t, p)
            raise
        finally:
            bar.close()
            if writer is not None:
                writer.close()
        log.info("done: step %d, loss %.5f%s, %.1f s", p.step, p.loss,
                 "" if p.val_loss is None else f", validation loss {p.val_loss:.5f}", time.time() - p.t0)
