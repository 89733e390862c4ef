"""One training runner for every transform: annealed DSM on lifted image crops.

Under torchrun (see runners/distributed.py) the model is wrapped in
DistributedDataParallel, training.batch_size is the global batch (split evenly
over the ranks), each rank draws its own crops from a DistributedSampler shard,
and only rank 0 writes logs, tensorboard, validation and checkpoints (of the
unwrapped model, so they are the same as single-process ones). Every step that
can fail before training (run folder, checkpoint, data) is agreed on by all
ranks, so an error on one rank stops them all instead of leaving them waiting.

Test hooks (environment variables, for tests/test_distributed.py only):
  HGM_TEST_DUMP_PARAMS=DIR  each rank saves {"model": final state_dict,
                            "first_batch": its first batch of crops} to DIR/rank<r>.pt
  HGM_TEST_KILL_RANK=R      rank R exits abruptly (os._exit(1)) right after step 2
"""
import logging
import math
import os
import time

import torch
from tqdm import tqdm

from datasets.errors import HGMError
from datasets.folder import RandomCrops, as_float, move_aside, training_images
from datasets.transforms import transform_from_config
from losses.dsm import anneal_dsm_loss
from models.ema import EMA
from models.ncsn import CondRefineNetDilated, get_sigmas
from runners import distributed
from runners.checkpoint import (
    check_compatible,
    existing_checkpoints,
    load_checkpoint,
    model_signature,
    save_checkpoint,
    strip_module_prefix,
)
from runners.config import dump_config

log = logging.getLogger("hgm")


def build_model(cfg):
    t = transform_from_config(cfg)
    m = cfg["model"]
    return CondRefineNetDilated(t.channels, m["ngf"], m["num_classes"])


def make_optimizer(cfg, params):
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


def dequantize(x):
    """8-bit values to a continuous density: x·255/256 + U(0, 1/256)."""
    return x * 255.0 / 256.0 + torch.rand_like(x) / 256.0


def prepare_run_dirs(args, log_dir, tb_dir):
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


def warm_start(model, path, cfg):
    """Start a new run from another run's weights (fine-tuning): the weights only, no optimizer
    state or step. The architecture must match; the noise range may differ, so that a prior can be
    re-targeted to the levels restoration uses (the level embeddings adapt in training)."""
    ckpt = load_checkpoint(path)
    if not isinstance(ckpt.get("config"), dict):
        raise HGMError(f"training.init_from={path} has no config; cannot check it against this run's model")
    have, want = model_signature(ckpt["config"]), model_signature(cfg)
    diffs = [f"{k}: checkpoint {have[k]}, config {want[k]}" for k in ("transform", "channels", "ngf", "num_classes")
             if have[k] != want[k]]
    if diffs:
        raise HGMError(f"training.init_from={path} does not match the model: " + "; ".join(diffs))
    try:
        model.load_state_dict(strip_module_prefix(ckpt["model"]), strict=True)
    except RuntimeError as e:
        raise HGMError(f"training.init_from={path}: {str(e).splitlines()[0]}") from e
    if (have["sigma_begin"], have["sigma_end"]) != (want["sigma_begin"], want["sigma_end"]):
        log.warning("training.init_from: the prior was trained for sigmas %g -> %g, this run uses %g -> %g",
                    have["sigma_begin"], have["sigma_end"], want["sigma_begin"], want["sigma_end"])
    log.info("warm start from %s (its step %s); fresh optimizer, step 0", path, ckpt.get("step"))


class TrainRunner:
    def __init__(self, args, cfg, device):
        self.args, self.cfg, self.device = args, cfg, device
        self.world = distributed.world_size()
        self.main = distributed.is_main()

    def run(self):
        self._log_handler = None
        try:
            self._run()
        finally:  # a caller that trains again in this process must not log into this run's stdout.txt
            if self._log_handler is not None:
                log.removeHandler(self._log_handler)
                self._log_handler.close()

    def _run(self):
        args, cfg, device = self.args, self.cfg, self.device
        tr, dcfg = cfg["training"], cfg["data"]
        log_dir = os.path.join(args.run, "logs", args.doc)
        tb_dir = os.path.join(args.run, "tensorboard", args.doc)
        transform = transform_from_config(cfg)
        if dcfg["image_size"] % (transform.size_multiple * 2):
            raise HGMError(f"data.image_size={dcfg['image_size']} must be divisible by "
                           f"{transform.size_multiple * 2} for the {transform.name} transform")
        for key in ("snapshot_freq", "log_freq", "batch_size", "n_iters"):
            if tr[key] < 1:
                raise HGMError(f"training.{key} must be at least 1, got {tr[key]}")
        if tr["batch_size"] % self.world:
            raise HGMError(f"training.batch_size={tr['batch_size']} (the global batch) does not divide by "
                           f"the world size {self.world}")
        # distributed.agree(): rank 0 alone checks (and writes) the run folder, but every rank
        # hears the verdict before going on; without torchrun it just calls the function
        distributed.agree(lambda: prepare_run_dirs(args, log_dir, tb_dir) if self.main else None)
        ckpt = None
        if args.resume_training:  # checked before writing anything: a refused resume leaves the run as it was
            path = os.path.join(log_dir, "checkpoint.pth")

            def load():  # on every rank (several nodes: the run folder must be at the same path on each)
                c = load_checkpoint(path)
                check_compatible(c, cfg, path)
                return c

            ckpt = distributed.agree(load)

        def open_run_dir():
            os.makedirs(log_dir, exist_ok=True)
            handler = logging.FileHandler(os.path.join(log_dir, "stdout.txt"))
            handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
            log.addHandler(handler)
            self._log_handler = handler
            dump_config(cfg, os.path.join(log_dir, "config.yml"))

        distributed.agree(open_run_dir if self.main else lambda: None)

        train_imgs, val_imgs, n_found = distributed.agree(
            lambda: training_images(dcfg["path"], dcfg["image_size"], dcfg["val_images"], dcfg["preload"], seed=0))
        log.info("data: %d images in %s (%d for training, %d held out for validation), %d×%d crops, "
                 "transform %s -> %d channels", n_found, dcfg["path"], len(train_imgs), len(val_imgs),
                 dcfg["image_size"], dcfg["image_size"], transform.name, transform.channels)

        model = build_model(cfg).to(device)
        n_params = sum(p.numel() for p in model.parameters())
        log.info("model: CondRefineNetDilated, ngf %d, %d channels, %s parameters",
                 cfg["model"]["ngf"], transform.channels, f"{n_params:,}")
        optimizer = make_optimizer(cfg, model.parameters())
        ema = EMA(model, cfg["model"]["ema_rate"]) if cfg["model"]["ema"] else None
        step, seconds = 0, 0.0
        if ckpt is not None:
            model.load_state_dict(strip_module_prefix(ckpt["model"]), strict=True)
            optimizer.load_state_dict(ckpt["optimizer"])
            for group in optimizer.param_groups:  # the config may change the learning rate on resume
                group["lr"] = cfg["optim"]["lr"]
            if ema is not None:
                ema.load_state_dict(strip_module_prefix(ckpt["ema"]) if "ema" in ckpt else model.state_dict())
            step, seconds = int(ckpt["step"]), float(ckpt.get("train_seconds", 0.0))
            if "rng" in ckpt and self.world == 1:
                torch.set_rng_state(ckpt["rng"])
            elif self.world > 1:  # fresh per-rank streams, not a replay of the first steps' crops and noise
                torch.manual_seed(args.seed + distributed.rank() + 1_000_003 * step)
            log.info("resumed from step %d", step)
        elif tr["init_from"]:
            warm_start(model, tr["init_from"], cfg)
        net = model
        if self.world > 1:
            net = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None)

        sigmas = get_sigmas(cfg["model"]["sigma_begin"], cfg["model"]["sigma_end"],
                            cfg["model"]["num_classes"], device)
        per_rank = tr["batch_size"] // self.world
        dataset = RandomCrops(train_imgs, dcfg["image_size"], dcfg["augment"], min_len=tr["batch_size"])
        sampler = (torch.utils.data.distributed.DistributedSampler(dataset, shuffle=True, drop_last=True)
                   if self.world > 1 else None)
        loader = torch.utils.data.DataLoader(dataset, batch_size=per_rank, shuffle=sampler is None,
                                             sampler=sampler, drop_last=True, num_workers=dcfg["num_workers"],
                                             persistent_workers=dcfg["num_workers"] > 0,
                                             pin_memory=device.type == "cuda")
        val = self._validation_set(val_imgs, transform, sigmas) if (self.main and val_imgs) else None

        n_iters = tr["n_iters"]
        if step >= n_iters:
            log.info("checkpoint is at step %d, training.n_iters=%d: nothing to do", step, n_iters)
            return
        writer = None
        if self.main:
            from tensorboardX import SummaryWriter
            writer = SummaryWriter(tb_dir)
        autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=tr["bf16"])
        bar = tqdm(total=n_iters, initial=step, disable=not self.main, desc=f"train {args.doc}",
                   dynamic_ncols=True, mininterval=1.0)
        # the distributed sampler's shuffle depends on the epoch: continue the count on resume
        epoch, loss_value, val_loss, val_step, t0 = step // max(1, len(loader)), float("nan"), None, None, time.time()
        dump_dir = os.environ.get("HGM_TEST_DUMP_PARAMS")
        kill_rank = os.environ.get("HGM_TEST_KILL_RANK")
        first_batch = None

        def snapshot():
            if not self.main:
                return
            state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                     "config": cfg, "train_seconds": seconds + time.time() - t0, "loss": loss_value,
                     "val_loss": val_loss, "val_step": val_step, "rng": torch.get_rng_state(), "world_size": self.world}
            if ema is not None:
                state["ema"] = ema.state_dict()
            save_checkpoint(state, log_dir, step)
            log.info("step %d: checkpoint written to %s", step, log_dir)

        try:
            while step < n_iters:
                if sampler is not None:
                    sampler.set_epoch(epoch)
                for x in loader:
                    if dump_dir and first_batch is None:
                        first_batch = x.clone()
                    x = x.to(device, non_blocking=True)
                    if dcfg["dequantize"]:
                        x = dequantize(x)
                    with autocast:
                        loss = anneal_dsm_loss(net, transform.forward(x), sigmas,
                                               anneal_power=tr["anneal_power"])
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    if tr["grad_clip"]:
                        torch.nn.utils.clip_grad_norm_(model.parameters(), tr["grad_clip"])
                    optimizer.step()
                    if ema is not None:
                        ema.update(model)
                    step += 1
                    if kill_rank is not None and step == 2 and distributed.rank() == int(kill_rank):
                        os._exit(1)  # test hook: a rank that dies without a word
                    loss_value = distributed.mean(loss)  # the same on every rank, so all stop on a NaN
                    if not math.isfinite(loss_value):
                        raise HGMError(f"training loss became {loss_value} at step {step}; lower optim.lr "
                                       f"or set training.grad_clip (last checkpoint kept)")
                    if self.main:
                        bar.update(1)
                        bar.set_postfix(loss=f"{loss_value:.4f}", refresh=False)
                        if step % tr["log_freq"] == 0 or step == n_iters:
                            writer.add_scalar("loss", loss_value, step)
                            log.debug("step %d loss %.5f", step, loss_value)
                        if val is not None and tr["val_freq"] and (step % tr["val_freq"] == 0 or step == n_iters):
                            val_step = step
                            val_loss = self._validate(model if ema is None else ema.shadow, val, sigmas, autocast)
                            writer.add_scalar("val_loss", val_loss, step)
                            log.info("step %d: loss %.5f, validation loss %.5f", step, loss_value, val_loss)
                    if step % tr["snapshot_freq"] == 0 or step == n_iters:
                        snapshot()
                    if step >= n_iters:
                        break
                epoch += 1
        except KeyboardInterrupt:
            log.warning("interrupted at step %d: saving a checkpoint before exiting", step)
            snapshot()
            raise
        finally:
            bar.close()
            if writer is not None:
                writer.close()
        if dump_dir:
            os.makedirs(dump_dir, exist_ok=True)
            torch.save({"model": model.state_dict(), "first_batch": first_batch},
                       os.path.join(dump_dir, f"rank{distributed.rank()}.pt"))
        log.info("done: step %d, loss %.5f%s, %.1f s", step, loss_value,
                 "" if val_loss is None else f", validation loss {val_loss:.5f}", time.time() - t0)

    def _validation_set(self, images, transform, sigmas):
        """Fixed crops, levels and noise, so validation losses are comparable across steps."""
        cfg = self.cfg
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
            labels = torch.randint(0, len(sigmas), (bs,), generator=g)
            noise = torch.randn(x.shape, generator=g)
            batches.append((x, labels, noise))
        return batches

    @torch.no_grad()
    def _validate(self, model, batches, sigmas, autocast):
        was_training = model.training
        model.eval()
        total = 0.0
        for x, labels, noise in batches:
            d = self.device
            with autocast:
                total += anneal_dsm_loss(model, x.to(d), sigmas, labels.to(d), self.cfg["training"]["anneal_power"],
                                         noise.to(d)).item()
        model.train(was_training)
        return total / len(batches)


