"""Multi-GPU / multi-node training with DistributedDataParallel, launched by torchrun.

Design, in short (the README's multi-GPU section has the user-facing version):
- Every rank draws the same GLOBAL batch indices from the same generator and augments the whole
  global batch identically, then keeps its own slice. The generator therefore stays identical on
  all ranks (checkpoints are rank-independent, resuming at another world size continues the same
  stream) and 2 ranks x B/2 see exactly the images and augmentations of 1 rank x B. The cost is
  augmenting B(1+2mu) images per rank instead of B(1+2mu)/W; the augmentation is launch-bound
  (hundreds of small kernels, or one CUDA-graph replay), so this costs little next to forward and
  backward.
- BatchNorm normalises with per-rank statistics by default (as the official multi-tower TF code
  did); --sync-bn uses the global batch's. Running statistics are averaged across ranks at each
  evaluation: their update is linear, so that equals averaging them every step.
- Evaluation is sharded: each rank scores a slice of the test set and the confusion matrices are
  summed, so every rank holds the same record. Only rank 0 writes files.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import inspect
import os
import sys
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.nn as nn

from fixmatch.errors import UserError
from fixmatch.training.devices import pick_device


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


SINGLE = Dist()


def from_env() -> Dist:
    """torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; a plain `python -m fixmatch` sets none."""
    env = os.environ
    return Dist(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0)))


def setup(cfg) -> tuple[Dist, torch.device]:
    """The rank layout and this rank's device; joins the process group under torchrun."""
    d = from_env()
    if not d.active:
        return d, pick_device(cfg.device)
    if cfg.batch_size % d.world:
        raise UserError(
            f"batch_size {cfg.batch_size} must be divisible by the world size {d.world}: the global "
            f"batch (B labeled, mu*B unlabeled) is split evenly across ranks"
        )
    device = pick_device(cfg.device)
    if device.type == "cuda":  # one GPU per process: the one torchrun's LOCAL_RANK names
        device = torch.device("cuda", d.local_rank)
    if cfg.sync_bn and device.type != "cuda":
        raise UserError("--sync-bn needs CUDA: torch's SyncBatchNorm has no CPU kernel")
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        # The timeout turns a rank that hangs or a node that vanishes into an error instead of a
        # silent wait; a rank that exits with an error is torn down by torchrun sooner.
        dist.init_process_group(
            "nccl" if device.type == "cuda" else "gloo",
            timeout=timedelta(minutes=cfg.dist_timeout),
            device_id=device if device.type == "cuda" else None,
        )
        atexit.register(lambda: dist.is_initialized() and dist.destroy_process_group())
    if not d.main:  # the summary and logs are printed once, by rank 0; stderr stays for errors
        sys.stdout = open(os.devnull, "w")
    return d, device


def shutdown(clean: bool) -> None:
    """Leave the process group before the interpreter exits. A finished Trainer sits in reference
    cycles (its compiled bound methods), so its DDP wrapper and reducer were freed by whichever
    garbage collection came next, sometimes after the group was destroyed or during interpreter
    teardown, and the rank aborted ("terminate called without an active exception"). So: collect
    them now, while the group is alive, then meet at a barrier (after a clean run) and destroy it."""
    if not dist.is_initialized():
        return
    gc.collect()
    if clean:
        dist.barrier()
    dist.destroy_process_group()


@contextlib.contextmanager
def local_main_first(d: Dist, enabled: bool = True):
    """Local rank 0 runs the body (e.g. a download) before the other ranks of its node."""
    if enabled and d.active and d.local_rank != 0:
        dist.barrier()
    yield
    if enabled and d.active and d.local_rank == 0:
        dist.barrier()


def broadcast_object(obj, d: Dist):
    """Rank 0's value on every rank (e.g. the timestamped run directory)."""
    if not d.active:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def wrap_model(model: nn.Module, cfg, d: Dist, device: torch.device) -> nn.Module:
    """The module that runs the training forward: the model itself on one rank, else its DDP wrapper
    (the parameters stay shared with `model`, so EMA, optimizer and checkpoints use `model`)."""
    if not d.active:
        return model
    if cfg.sync_bn:  # swaps the BN modules in place; parameters and buffers are the same tensors
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    # No buffer broadcast at each forward: BN running statistics are averaged at evaluation instead
    # (average_buffers) rather than overwritten by rank 0's. torch >= 2.13 renamed the flag.
    ddp = nn.parallel.DistributedDataParallel
    no_sync = (
        "forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(ddp).parameters else "broadcast_buffers"
    )
    flags: dict = {no_sync: False}
    return ddp(model, device_ids=[device] if device.type == "cuda" else None, **flags)


def shard_batch(x: torch.Tensor, y_l: torch.Tensor, idx_u: torch.Tensor | None, d: Dist):
    """This rank's slice of [labeled weak | unlabeled weak | unlabeled strong]: labeled images
    r*B/W..(r+1)*B/W, and the same unlabeled images in both views (with their pool indices)."""
    if not d.active:
        return x, y_l, idx_u
    b, u = y_l.shape[0] // d.world, (0 if idx_u is None else idx_u.shape[0] // d.world)
    parts = x.split([y_l.shape[0]] + ([] if idx_u is None else [idx_u.shape[0]] * 2))
    sizes = [b] + ([] if idx_u is None else [u, u])
    x = torch.cat([p[d.rank * n : (d.rank + 1) * n] for p, n in zip(parts, sizes)])
    return x, y_l[d.rank * b : (d.rank + 1) * b], (None if idx_u is None else idx_u[d.rank * u : (d.rank + 1) * u])


def gatherer(d: Dist):
    """t -> the rank-ordered concatenation of every rank's t (t itself on one rank): what a stateful
    algorithm learns from, so its state is that of one process with the global batch on every rank."""
    if not d.active:
        return lambda t: t

    @torch.no_grad()
    def gather(t: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(t) for _ in range(d.world)]
        dist.all_gather(parts, t.contiguous())
        return torch.cat(parts)

    return gather


@torch.no_grad()
def average_buffers(model: nn.Module, d: Dist) -> None:
    """Average the floating-point buffers (BN running statistics) so every rank holds the same model."""
    bufs = [b for b in model.buffers() if b.is_floating_point()]
    if not d.active or not bufs:
        return
    flat = torch.cat([b.reshape(-1).float() for b in bufs])
    dist.all_reduce(flat)
    flat /= d.world
    for b, v in zip(bufs, flat.split([b.numel() for b in bufs])):
        b.copy_(v.view_as(b))


@torch.no_grad()
def mean_over_ranks(sums: dict, d: Dist) -> dict:
    """The training statistics averaged over ranks (per-rank means of equal shards -> global means)."""
    if not d.active:
        return sums
    flat = torch.stack([v.float() for v in sums.values()])
    dist.all_reduce(flat)
    return dict(zip(sums, flat / d.world))


def shard_indices(n: int, d: Dist) -> torch.Tensor | None:
    """This rank's contiguous slice of the test set (None: the whole set)."""
    return torch.arange(n).tensor_split(d.world)[d.rank] if d.active else None


def sum_over_ranks(counts: torch.Tensor, d: Dist) -> torch.Tensor:
    """An integer tensor (e.g. a confusion matrix) summed over ranks."""
    if d.active:
        counts = counts.clone()
        dist.all_reduce(counts)
    return counts
