"""The trainer: everything a run holds on the device, and one step of it (draw a batch there with
EpochSampler, at the end of this file, and augment it; one forward/backward, SGD, EMA), its evaluation
and its checkpoint. The loop around it is loop.py."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch
import torch.nn as nn

from fixmatch.algorithms.base import AlgorithmSetup
from fixmatch.algorithms.registry import build_algorithm
from fixmatch.augment.ctaugment import CTAugment
from fixmatch.augment.randaugment import strong_augment
from fixmatch.augment.weak import weak_augment
from fixmatch.models.input_scaling import Normalizer
from fixmatch.training import devices, distributed
from fixmatch.training.augment_graph import capture_augment
from fixmatch.training.augment_stream import AugmentStream
from fixmatch.training.batch import Batch, CTAProbe, Schedule
from fixmatch.training.checkpoint import save_atomic
from fixmatch.training.curriculum import unlabeled_batch, unlabeled_batch_sizes
from fixmatch.training.ema import EMA
from fixmatch.training.fast import Speedups, compile_fn
from fixmatch.training.metrics import confusion_matrix, predict_logits, report_from_confusion
from fixmatch.training.optim import cosine_lr, make_optimizer


class Trainer:
    """Holds everything a run needs on the device; `step()` is one FixMatch iteration."""

    def __init__(
        self,
        cfg,
        model: nn.Module,
        data,
        labeled_idx,
        device: torch.device,
        speedups: Speedups,
        normalize: Normalizer,
        dist: distributed.Dist = distributed.SINGLE,
    ):
        self.cfg, self.device, self.speedups, self.dist = cfg, device, speedups, dist
        fmt = torch.channels_last if speedups.channels_last else torch.contiguous_format
        self.model = model.to(device, memory_format=fmt)  # type: ignore[call-overload]  # the stubs miss memory_format
        self.net = distributed.wrap_model(self.model, cfg, dist, device)  # DDP wrapper, or the model itself
        self.normalize = normalize.to(device)
        self.optimizer = make_optimizer(
            self.model, cfg.lr, cfg.momentum, cfg.nesterov, cfg.weight_decay, fused=speedups.fused_optimizer
        )
        self.ema = EMA(self.model, cfg.ema_decay, cfg.ema_warmup)
        # The whole dataset lives on the device as uint8; batches are gathered by index there.
        # Under torchrun every rank samples and augments the same global batch and keeps its slice
        # (distributed.shard_batch): the generator stays identical on all ranks.
        labeled_idx = torch.as_tensor(labeled_idx, dtype=torch.long)
        self.x_lab = data.x_train[labeled_idx].to(device)
        self.y_lab = data.y_train[labeled_idx].to(device)
        self.x_unl, self.y_unl = unlabeled_pool(data, labeled_idx, device)
        self.algorithm = build_algorithm(
            cfg, AlgorithmSetup(data.num_classes, len(self.x_unl), device, distributed.gatherer(dist))
        )
        self.x_test, self.y_test, self.num_classes = data.x_test, data.y_test, data.num_classes
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(cfg.seed)
        self.lab_sampler = EpochSampler(len(labeled_idx), cfg.batch_size, self.generator)
        uses_unl = self.algorithm.uses_unlabeled and cfg.mu > 0
        self.unl_sampler = EpochSampler(len(self.x_unl), cfg.mu * cfg.batch_size, self.generator) if uses_unl else None
        self.curriculum = cfg.unlabeled_batch_curriculum != "off"
        # CTAugment: bin rates on the device, learned from probes of the labeled images (fixmatch.augment.ctaugment)
        self.cta = CTAugment(device=device) if uses_unl and cfg.strong_augment == "cta" else None
        self.forward_loss = compile_fn(self._forward_loss, speedups)
        # The speed switches wrap the augmentation once, here: a captured CUDA graph replays it, and a
        # second stream draws the next step's batch while this one trains (step() launches it).
        graphed = capture_augment(self, unlabeled_batch_sizes(cfg)) if speedups.cuda_graph else None
        self.augment = graphed or self.augment_indices
        samplers = (self.lab_sampler, self.unl_sampler)
        self.augment_stream = (
            AugmentStream(self.draw, samplers, self.generator, device, owns_outputs=graphed is None)
            if speedups.augment_stream
            else None
        )
        self.make_batch = self.augment_stream.take if self.augment_stream is not None else self.draw
        self.schedule = Schedule(cfg.steps, cfg.lr_schedule_steps)
        self.step_num = 0
        self.history: list[dict] = []
        self.sums: dict = {}

    # ---- one step -------------------------------------------------------------------------------
    def draw(self, step: int) -> Batch:
        """Step `step`'s batch: indices from the samplers (the unlabeled batch's size follows
        --unlabeled-batch-curriculum), augmented on the device; under torchrun, this rank's slice."""
        li = self.lab_sampler.next()
        ui = None
        if self.unl_sampler is not None:
            # the curriculum's unlabeled batch grows over the run (fixmatch.training.curriculum)
            size = unlabeled_batch(self.cfg, step, self.schedule.steps) if self.curriculum else None
            ui = self.unl_sampler.next(size)  # None: the sampler's own mu * B
        batch = self.augment(li, ui)
        if self.dist.world > 1:  # torchrun: every rank drew the same global batch and keeps its slice
            x, y_l, idx_u = distributed.shard_batch(batch.x, batch.y_l, batch.idx_u, self.dist)
            batch = batch._replace(x=x, y_l=y_l, idx_u=idx_u)
        return batch

    @torch.no_grad()
    def augment_indices(self, li: torch.Tensor, ui: torch.Tensor | None) -> Batch:
        """[labeled weak | unlabeled weak | unlabeled strong] of the images at these indices."""
        flip, g = self.cfg.flip, self.generator
        if self.cfg.labeled_strong:  # Fast FixMatch's strong labeled augmentation
            labeled = strong_augment(self.x_lab[li], flip=flip, generator=g, policy=self.cfg.randaugment)
        else:
            labeled = weak_augment(self.x_lab[li], flip=flip, generator=g)
        if ui is None:
            return Batch(labeled, self.y_lab[li], None)
        raw, probe = self.x_unl[ui], None
        weak = weak_augment(raw, flip=flip, generator=g)
        if self.cta is not None:  # strong views, and probes of the labeled weak views (learned from in step())
            strong, images, ops, args = self.cta.views(raw, labeled, flip=flip, generator=g)
            probe = CTAProbe(images, ops, args, self.y_lab[li])
        else:
            strong = strong_augment(raw, flip=flip, generator=g, policy=self.cfg.randaugment)
        # ui.clone(): a CUDA graph's index buffer is overwritten by the next draw
        return Batch(torch.cat([labeled, weak, strong]), self.y_lab[li], ui.clone(), probe)

    def _forward_loss(self, x: torch.Tensor, y_l: torch.Tensor, idx_u: torch.Tensor | None):
        # ONE forward in train mode over all images: BatchNorm statistics span the whole batch.
        x = self.normalize(x)
        if self.speedups.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, torch.bfloat16, enabled=self.speedups.amp):
            logits = self.net(x)
        logits = logits.float()
        n = y_l.shape[0]
        if idx_u is None:
            loss, stats = self.algorithm(logits[:n], y_l)
        else:
            logits_uw, logits_us = logits[n:].chunk(2)
            loss, stats = self.algorithm(logits[:n], y_l, logits_uw, logits_us, idx_u=idx_u)
            stats = score_pseudo_labels(stats, self.y_unl[idx_u])
        return loss, stats

    def step(self) -> None:
        """One iteration: the batch, CTAugment's update from its probes, one forward over every view,
        the algorithm's loss, SGD and the EMA. Statistics stay on the device (read at evaluations)."""
        for group in self.optimizer.param_groups:
            group["lr"] = cosine_lr(self.cfg.lr, self.step_num, self.schedule.lr_steps)
        batch = self.make_batch(self.step_num)
        if batch.probe is not None:  # official: the EMA model before this step's update classifies them
            self.cta.learn(self.ema.model, self.normalize, *batch.probe, dist=self.dist)  # type: ignore[union-attr]
        if self.speedups.cuda_graph:  # tell the compiled graphs a new iteration begins
            torch.compiler.cudagraph_mark_step_begin()
        loss, stats = self.forward_loss(batch.x, batch.y_l, batch.idx_u)
        if self.augment_stream is not None:  # the next step's batch, during backward + SGD + EMA
            self.augment_stream.launch(self.step_num + 1)
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.ema.update(self.step_num)
        self.step_num += 1
        # whatever scalars the algorithm returns are summed on the device, averaged and logged at evaluations
        for k, v in {"loss": loss.detach(), **stats, "steps": 1}.items():
            self.sums[k] = self.sums.get(k, 0) + v

    # ---- evaluation and bookkeeping ---------------------------------------------------------------
    def evaluate(self, model: nn.Module | None = None, images=None, labels=None) -> dict:
        model = model or self.ema.model
        images = self.x_test if images is None else images
        labels = self.y_test if labels is None else labels
        part = distributed.shard_indices(len(labels), self.dist)  # under torchrun: this rank's slice
        if part is not None:
            images, labels = images[part], labels[part]
        logits = predict_logits(model, self.normalize, images, self.cfg.eval_batch_size, self.device)
        confusion = confusion_matrix(logits, labels.to(logits.device), self.num_classes)  # per rank: its slice
        return report_from_confusion(distributed.sum_over_ranks(confusion, self.dist))

    def record_evaluation(self, seconds: float) -> dict:
        # Under torchrun: same BN running statistics and global training statistics on every rank.
        distributed.average_buffers(self.model, self.dist)
        distributed.average_buffers(self.ema.model, self.dist)
        sums = {k: torch.as_tensor(v, dtype=torch.float32, device=self.device) for k, v in self.sums.items()}
        s = {k: float(v) for k, v in distributed.mean_over_ranks(sums, self.dist).items()}
        n = max(s.pop("steps", 0.0), 1.0)
        correct, count = s.pop("pseudo_correct", 0.0), s.pop("pseudo_count", 0.0)
        rec = {
            "step": self.step_num,
            "accuracy": self.evaluate()["accuracy"],  # EMA model: the reported figure
            "raw_accuracy": self.evaluate(self.model)["accuracy"],
            "lr": cosine_lr(self.cfg.lr, self.step_num, self.schedule.lr_steps),
            "seconds": round(seconds, 2),
            **{k: v / n for k, v in s.items()},  # loss, loss_x and the algorithm's own: loss_u, mask_rate, ...
        }
        if self.unl_sampler is not None:
            rec["pseudo_label_accuracy"] = correct / count if count else None
        self.history.append(rec)
        self.sums = {}
        return rec

    def sync(self) -> None:
        devices.sync(self.device)

    def time_evaluation(self) -> float:
        """Seconds one evaluation (EMA and raw model) takes; nothing is recorded."""
        t = time.perf_counter()
        self.evaluate()
        self.evaluate(self.model)
        self.sync()
        return time.perf_counter() - t

    def probe_step_seconds(self, images: int = 4) -> float:
        """A rough step time, before the first step: one forward and backward of a few images in eval
        mode (no BatchNorm statistics move), scaled to the step's batch. Nothing of the run changes:
        the gradients are dropped and the random state is put back."""
        n = self.cfg.batch_size * (1 + 2 * self.cfg.mu if self.unl_sampler is not None else 1)
        rng, was_training = torch.get_rng_state(), self.model.training
        x = self.x_lab[torch.arange(images, device=self.device) % len(self.x_lab)]
        self.model.eval()
        t = time.perf_counter()
        self.model(self.normalize(x)).float().logsumexp(-1).sum().backward()
        seconds = (time.perf_counter() - t) * n / images
        self.model.train(was_training)
        self.model.zero_grad(set_to_none=True)
        torch.set_rng_state(rng)
        return seconds

    def median_last(self) -> float:
        return statistics.median(r["accuracy"] for r in self.history[-self.cfg.median_of :])

    # ---- checkpoints ----------------------------------------------------------------------------------
    def state_dict(self, meta: dict) -> dict:
        # A batch drawn ahead (--augment-stream) is not in the checkpoint: save the sampling state
        # from before it, so a resumed run draws it again.
        before = self.augment_stream.state_before() if self.augment_stream is not None else None
        (lab_queue, unl_queue), generator = before or ((None, None), self.generator.get_state())
        return {
            "meta": meta,
            "model": self.model.state_dict(),
            "ema": self.ema.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.step_num,
            "history": self.history,
            "lab_sampler": self.lab_sampler.state_dict(lab_queue),
            "unl_sampler": self.unl_sampler.state_dict(unl_queue) if self.unl_sampler else None,
            "generator": generator,
            "torch_rng": torch.get_rng_state(),
            "cta": self.cta.state_dict() if self.cta is not None else None,
            "algorithm": self.algorithm.state_dict(),  # FlexMatch/FreeMatch/SoftMatch: their EMAs and counts
            "schedule": {"steps": self.schedule.steps, "lr_schedule_steps": self.schedule.lr_steps},
        }

    def load_state_dict(self, ckpt: dict) -> None:
        self.model.load_state_dict(ckpt["model"])
        self.ema.model.load_state_dict(ckpt["ema"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.step_num = ckpt["step"]
        self.history = list(ckpt["history"])
        self.lab_sampler.load_state_dict(ckpt["lab_sampler"])
        if self.unl_sampler is not None and ckpt["unl_sampler"] is not None:
            self.unl_sampler.load_state_dict(ckpt["unl_sampler"])
        self.generator.set_state(ckpt["generator"])
        torch.set_rng_state(ckpt["torch_rng"])
        if self.cta is not None and ckpt.get("cta") is not None:
            self.cta.load_state_dict(ckpt["cta"])
        self.algorithm.load_state_dict(ckpt.get("algorithm", {}))

    def save(self, out_dir: Path, meta: dict, best: bool) -> None:
        state = self.state_dict(meta)
        save_atomic(state, out_dir / "last.pt")
        if best:
            save_atomic(state, out_dir / "best.pt")
        if self.cta is not None:
            self.cta.write_json(out_dir / "cta.json", self.step_num)


class EpochSampler:
    """Yields `batch` indices at a time from back-to-back random permutations of range(n).

    Like the official input pipeline (shuffle + repeat), a batch may span two passes, and a pool
    smaller than the batch (40 labels, B=64) is simply repeated.
    """

    def __init__(self, n: int, batch: int, generator: torch.Generator):
        self.n, self.batch, self.generator = n, batch, generator
        self.device = generator.device
        self.queue = torch.empty(0, dtype=torch.long, device=self.device)

    def next(self, batch: int | None = None) -> torch.Tensor:
        """The next `batch` indices (default: the sampler's batch; the curriculum batch size varies it)."""
        batch = self.batch if batch is None else batch
        while self.queue.numel() < batch:
            perm = torch.randperm(self.n, generator=self.generator, device=self.device)
            self.queue = torch.cat([self.queue, perm])
        out, self.queue = self.queue[:batch], self.queue[batch:]
        return out

    def state_dict(self, queue: torch.Tensor | None = None) -> dict:
        """The state now, or with an earlier queue (augment_stream.py rewinds a batch in flight)."""
        return {"queue": (self.queue if queue is None else queue).cpu()}

    def load_state_dict(self, state: dict) -> None:
        self.queue = state["queue"].to(self.device)


def unlabeled_pool(data, labeled_idx: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The images the unlabeled loss draws from: the whole train split (its labeled images included,
    as in the official code), then any images that have no label at all. The labels go only to
    monitoring (pseudo-label accuracy) and only where training never sees them: -1 marks the
    labeled images (the model is fit to them, their pseudo-labels say nothing) and unlabeled ones."""
    x, y = data.x_train, data.y_train.clone()
    y[labeled_idx] = -1
    if data.x_unlabeled is not None and len(data.x_unlabeled):
        x = torch.cat([x, data.x_unlabeled])
        y = torch.cat([y, torch.full((len(data.x_unlabeled),), -1, dtype=y.dtype)])
    return x.to(device), y.to(device)


def score_pseudo_labels(stats: dict, y_u: torch.Tensor) -> dict:
    """Replace the per-image pseudo-labels and mask by how many confident ones were right, counted
    over the unlabeled images whose true label is known (outside the algorithm, which never sees it)."""
    stats = dict(stats)
    pseudo, mask = stats.pop("pseudo_labels"), stats.pop("mask")
    known = (y_u >= 0).float() * mask
    stats["pseudo_correct"] = ((pseudo == y_u).float() * known).sum()
    stats["pseudo_count"] = known.sum()
    return stats
