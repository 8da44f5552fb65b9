"""The training loop: draw a batch on the device, augment it there, one forward/backward, SGD, EMA;
evaluate, log and checkpoint every `eval_every` steps."""

from __future__ import annotations

import dataclasses
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn as nn

from fixmatch import devices, distributed
from fixmatch.algorithms import AlgorithmSetup, build_algorithm
from fixmatch.augment import strong_augment, weak_augment
from fixmatch.augment_graph import capture_augment
from fixmatch.augment_stream import AugmentStream
from fixmatch.checkpoint import save_atomic
from fixmatch.ctaugment import CTAugment
from fixmatch.curriculum import unlabeled_batch, unlabeled_batch_sizes
from fixmatch.ema import EMA
from fixmatch.evaluate import confusion_matrix, predict_logits, report_from_confusion
from fixmatch.fast import Speedups, autocast, compile_fn
from fixmatch.input_scaling import Normalizer
from fixmatch.optim import cosine_lr, make_optimizer
from fixmatch.sampler import EpochSampler
from fixmatch.schedule_planner import StepPlanner

STAT_KEYS = ("loss", "loss_x", "loss_u", "mask_rate", "pseudo_correct", "pseudo_count")


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
        self.passes_indices = self.algorithm.uses_indices  # FlexMatch: called with each image's pool index
        self.x_test, self.y_test, self.num_classes = data.x_test, data.y_test, data.num_classes
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(cfg.seed)
        self.lab_sampler = EpochSampler(len(labeled_idx), cfg.batch_size, self.generator)
        uses_unl = self.algorithm.uses_unlabeled and cfg.mu > 0
        self.unl_sampler = EpochSampler(len(self.x_unl), cfg.mu * cfg.batch_size, self.generator) if uses_unl else None
        # CTAugment: bin rates on the device, learned from probes of the labeled images (fixmatch.ctaugment)
        self.cta = CTAugment(device=device) if uses_unl and cfg.strong_augment == "cta" else None
        self.forward_loss = compile_fn(self._forward_loss, speedups)
        self.graphed_augment = capture_augment(self, unlabeled_batch_sizes(cfg)) if speedups.cuda_graph else None
        self.augment_stream = (
            AugmentStream(
                self.draw_now,
                (self.lab_sampler, self.unl_sampler),
                self.generator,
                device,
                self.graphed_augment is None,
            )
            if speedups.augment_stream
            else None
        )
        self.step_num = 0
        self.batch_step = 0  # the step the next draw is for (--augment-stream draws one step ahead)
        self.history: list[dict] = []
        self.sums = self._zero_sums()

    # ---- one step -------------------------------------------------------------------------------
    def draw_batch(self):
        """[labeled weak | unlabeled weak | unlabeled strong] as one uint8 batch, the labels of the
        labeled images and the pool indices of the unlabeled ones."""
        self.batch_step = self.step_num
        return self.augment_stream.take() if self.augment_stream is not None else self.draw_now()

    def draw_now(self):
        li = self.lab_sampler.next()
        ui = None
        if self.unl_sampler is not None:  # its batch follows --unlabeled-batch-curriculum
            self.unl_sampler.batch = unlabeled_batch(self.cfg, self.batch_step)
            ui = self.unl_sampler.next()
        augment = self.graphed_augment or self.augment_indices
        return distributed.shard_batch(*augment(li, ui), self.dist)

    @torch.no_grad()
    def augment_indices(self, li: torch.Tensor, ui: torch.Tensor | None):
        flip, g = self.cfg.flip, self.generator
        if self.cfg.labeled_strong:  # Fast FixMatch's strong labeled augmentation
            parts = [strong_augment(self.x_lab[li], flip=flip, generator=g, policy=self.cfg.randaugment)]
        else:
            parts = [weak_augment(self.x_lab[li], flip=flip, generator=g)]
        idx_u = None
        if ui is not None:
            raw = self.x_unl[ui]
            parts.append(weak_augment(raw, flip=flip, generator=g))
            if self.cta is not None:  # strong views, and probes of the labeled weak views (classified in step())
                strong, probes, probe_ops, probe_args = self.cta.views(raw, parts[0], flip=flip, generator=g)
                self.cta_probe = (probes, probe_ops, probe_args, self.y_lab[li])
            else:
                strong = strong_augment(raw, flip=flip, generator=g, policy=self.cfg.randaugment)
            parts.append(strong)
            idx_u = ui.clone()  # a copy: the index buffer of a CUDA graph is overwritten by the next draw
        return torch.cat(parts), self.y_lab[li], idx_u

    def _forward_loss(self, x: torch.Tensor, y_l: torch.Tensor, idx_u: torch.Tensor | None):
        # ONE forward in train mode over all images: BatchNorm statistics span the whole batch.
        x = self.normalize(x)
        if self.speedups.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(self.device, self.speedups.amp):
            logits = self.net(x)
        logits = logits.float()
        n = y_l.shape[0]
        if idx_u is None:
            loss, stats = self.algorithm(logits[:n], y_l)
        else:
            logits_uw, logits_us = logits[n:].chunk(2)
            by_index = {"idx_u": idx_u} if self.passes_indices else {}
            loss, stats = self.algorithm(logits[:n], y_l, logits_uw, logits_us, **by_index)
            stats = score_pseudo_labels(stats, self.y_unl[idx_u])
        return loss, stats

    def step(self) -> None:
        lr = cosine_lr(self.cfg.lr, self.step_num, self.cfg.lr_schedule_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        x, y_l, idx_u = self.draw_batch()
        if self.cta is not None:  # the EMA model before this step's update classifies the probes (official)
            self.cta.learn(self.ema.model, self.normalize, *self.cta_probe, dist=self.dist)
        if self.speedups.cuda_graph:  # tell the compiled graphs a new iteration begins
            torch.compiler.cudagraph_mark_step_begin()
        loss, stats = self.forward_loss(x, y_l, idx_u)
        if self.augment_stream is not None:  # the next batch, during backward + SGD + EMA
            self.batch_step = self.step_num + 1
            self.augment_stream.launch()
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.ema.update(self.step_num)
        self.step_num += 1
        # Statistics stay on the device (no .item() per step); they are read at evaluation time.
        self.sums["loss"] += loss.detach()
        for k, v in stats.items():
            self.sums[k] += v
        self.sums["steps"] += 1

    # ---- evaluation and bookkeeping ---------------------------------------------------------------
    def _zero_sums(self) -> dict:
        return {k: torch.zeros((), device=self.device) for k in (*STAT_KEYS, "steps")}

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
        s = {k: float(v) for k, v in distributed.mean_over_ranks(self.sums, self.dist).items()}
        n = max(s.pop("steps"), 1.0)
        rec = {
            "step": self.step_num,
            "accuracy": self.evaluate()["accuracy"],  # EMA model: the reported figure
            "raw_accuracy": self.evaluate(self.model)["accuracy"],
            "loss": s["loss"] / n,
            "loss_x": s["loss_x"] / n,
            "lr": cosine_lr(self.cfg.lr, self.step_num, self.cfg.lr_schedule_steps),
            "seconds": round(seconds, 2),
        }
        if self.unl_sampler is not None:
            rec.update(
                loss_u=s["loss_u"] / n,
                mask_rate=s["mask_rate"] / n,
                pseudo_label_accuracy=(s["pseudo_correct"] / s["pseudo_count"]) if s["pseudo_count"] else None,
            )
        self.history.append(rec)
        self.sums = self._zero_sums()
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

    def reschedule(self, steps: int) -> None:
        """A new total number of steps; the cosine's K follows it."""
        self.cfg = dataclasses.replace(self.cfg, steps=steps, lr_schedule_steps=steps)

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


def write_metrics(out_dir: Path, history: list[dict]) -> None:
    """metrics.jsonl is rewritten from the checkpointed history, so a resumed run has no gaps or repeats."""
    tmp = out_dir / "metrics.jsonl.tmp"
    tmp.write_text("".join(json.dumps(r) + "\n" for r in history))
    tmp.replace(out_dir / "metrics.jsonl")


def run_loop(
    trainer: Trainer,
    out_dir: Path,
    meta: dict,
    writer=None,
    progress: bool = True,
    log=print,
    planner: StepPlanner | None = None,
) -> StepPlanner:
    """Train from the trainer's current step to cfg.steps, evaluating every cfg.eval_every steps.
    The planner times the first steps (a projected duration in the log) and, with a time budget,
    sets cfg.steps and the cosine's K from that measurement."""
    from tqdm import tqdm

    start_seconds = trainer.history[-1]["seconds"] if trainer.history else 0.0
    t0 = time.perf_counter()
    planner = planner or StepPlanner(trainer.step_num, trainer.cfg.steps, trainer.cfg.eval_every)
    main = trainer.dist.main  # only rank 0 writes checkpoints, metrics, tensorboard and the bar
    bar = tqdm(
        total=trainer.cfg.steps,
        initial=trainer.step_num,
        disable=not (progress and main),
        desc=meta["run_name"],
        dynamic_ncols=True,
        leave=False,
    )
    best = max((r["accuracy"] for r in trainer.history), default=-1.0)
    while trainer.step_num < trainer.cfg.steps:
        trainer.step()
        bar.update(1)
        if planner.due(trainer.step_num):
            trainer.sync()
            had_speed = planner.step_seconds is not None
            steps = distributed.broadcast_object(
                planner.observe(trainer.step_num, trainer.time_evaluation), trainer.dist
            )
            if steps != trainer.cfg.steps:
                trainer.reschedule(steps)
                meta["config"].update(steps=steps, lr_schedule_steps=steps)
                bar.total = steps
            if not had_speed and planner.step_seconds is not None:
                log(planner.projection())
        if trainer.step_num % trainer.cfg.eval_every == 0 or trainer.step_num == trainer.cfg.steps:
            rec = trainer.record_evaluation(start_seconds + time.perf_counter() - t0)
            is_best = rec["accuracy"] > best
            best = max(best, rec["accuracy"])
            if main:
                trainer.save(out_dir, meta, best=is_best)
                write_metrics(out_dir, trainer.history)
            if writer is not None:
                for k, v in rec.items():
                    if k != "step" and v is not None:
                        writer.add_scalar(k, v, rec["step"])
                writer.flush()
            bar.set_postfix(acc=f"{rec['accuracy']:.3f}", raw=f"{rec['raw_accuracy']:.3f}", loss=f"{rec['loss']:.3f}")
            if not progress and main:
                log(json.dumps(rec))
    bar.close()
    return planner
