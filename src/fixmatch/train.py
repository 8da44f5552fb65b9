"""`fixmatch train`, top to bottom: config -> data -> labels -> model -> loop -> summary."""

from __future__ import annotations

import dataclasses
import json
import time
from datetime import datetime
from pathlib import Path

import torch

from fixmatch import distributed
from fixmatch.checkpoint import load_checkpoint
from fixmatch.config import TrainConfig, from_dict, resolve, save_yaml
from fixmatch.data import load_dataset
from fixmatch.data.splits import balanced_labeled_indices, load_split, save_split
from fixmatch.engine import Trainer, run_loop, write_metrics
from fixmatch.errors import UserError
from fixmatch.evaluate import Normalizer
from fixmatch.fast import resolve_speedups
from fixmatch.models import build_model, count_parameters, set_bn_momentum


def load_data(cfg: TrainConfig):
    return load_dataset(cfg.dataset, cfg.data_dir, download=cfg.download, svhn_extra=cfg.svhn_extra,
                        fer_test=cfg.fer_test)


def pick_labels(cfg: TrainConfig, data):
    if cfg.split_file:
        return load_split(cfg.split_file, len(data.y_train))
    return balanced_labeled_indices(data.y_train.numpy(), cfg.num_labels, data.num_classes, seed=cfg.fold)


def default_out(cfg: TrainConfig) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{cfg.dataset}-{cfg.num_labels}-{cfg.algorithm}-{stamp}"


def open_writer(out_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is a dependency, but never let logging stop training
        return None
    return SummaryWriter(str(out_dir / "tb"))


def make_trainer(cfg: TrainConfig, data, labeled, device: torch.device, dist=distributed.SINGLE) -> Trainer:
    """The network cfg names (initialised from torch's global RNG), normalised by the training
    images' channel statistics, inside a Trainer with cfg's speed switches."""
    model = build_model(cfg.model, data.num_classes, data.image_shape[0])
    set_bn_momentum(model, cfg.bn_momentum)
    mean, std = data.channel_stats()
    return Trainer(cfg, model, data, labeled, device, resolve_speedups(cfg, device), Normalizer(mean, std), dist)


def train(cfg: TrainConfig, resume_ckpt: dict | None = None, log=print, data=None) -> dict:
    """Train one run (one algorithm) and return its summary (also written to summary.json)."""
    cfg = resolve(cfg)
    torch.set_num_threads(cfg.threads)
    dist, device = distributed.setup(cfg)  # under torchrun: joins the process group, device cuda:LOCAL_RANK
    with distributed.local_main_first(dist, enabled=cfg.download):  # one download per node
        data = data or load_data(cfg)
    if cfg.num_labels > len(data.y_train):
        raise UserError(f"num_labels={cfg.num_labels} exceeds the {len(data.y_train)} training images of {cfg.dataset}")
    labeled = pick_labels(cfg, data)
    out_dir = Path(distributed.broadcast_object(str(cfg.out or default_out(cfg)), dist))  # rank 0's timestamp
    if dist.main:  # only rank 0 writes files
        out_dir.mkdir(parents=True, exist_ok=True)
        save_yaml(cfg, out_dir / "config.yaml")
        save_split(out_dir / "split.json", labeled, {"dataset": cfg.dataset, "num_labels": int(len(labeled)),
                                                    "fold": cfg.fold})

    torch.manual_seed(cfg.seed)  # model initialisation
    trainer = make_trainer(cfg, data, labeled, device, dist)
    c, h, w = data.image_shape
    mean, std = trainer.normalize.mean.flatten().tolist(), trainer.normalize.std.flatten().tolist()
    meta = {
        "run_name": out_dir.name, "config": cfg.to_dict(), "dataset": cfg.dataset, "class_names": data.class_names,
        "image_shape": [c, h, w], "mean": mean, "std": std, "model_name": cfg.model,
        "num_classes": data.num_classes, "parameters": count_parameters(trainer.model),
    }
    if resume_ckpt is not None:
        trainer.load_state_dict(resume_ckpt)  # every rank loads the same (global) state
        if dist.main:
            write_metrics(out_dir, trainer.history)
        log(f"resumed {out_dir} at step {trainer.step_num}")
    log(f"{cfg.algorithm} on {cfg.dataset}: {len(labeled)} labels, {cfg.model} "
        f"({meta['parameters']:,} params), {cfg.steps} steps, device {device} ({trainer.speedups.describe()})"
        + (f", {dist.world} ranks x {cfg.batch_size // dist.world} labeled images" if dist.active else ""))

    writer = open_writer(out_dir) if dist.main else None
    t0 = time.perf_counter()
    run_loop(trainer, out_dir, meta, writer=writer, progress=cfg.progress, log=log)
    if writer is not None:
        writer.close()
    last = trainer.history[-1]
    summary = {
        "dataset": cfg.dataset, "algorithm": cfg.algorithm, "model": cfg.model,
        "num_labels": int(len(labeled)), "steps": cfg.steps, "seed": cfg.seed, "fold": cfg.fold,
        "accuracy": last["accuracy"], "median_last20": trainer.median_last(),
        "raw_accuracy": last["raw_accuracy"], "mask_rate": last.get("mask_rate"),
        "pseudo_label_accuracy": last.get("pseudo_label_accuracy"),
        "seconds": last["seconds"], "seconds_this_session": round(time.perf_counter() - t0, 2),
        "device": str(device), "speedups": trainer.speedups.describe(), "world_size": dist.world, "out": str(out_dir),
    }
    if dist.main:
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def resume(run_dir, overrides: dict | None = None, log=print) -> dict:
    """Continue the run in `run_dir` from last.pt with its saved config (plus explicit overrides,
    e.g. a longer --steps)."""
    ckpt = load_checkpoint(Path(run_dir) / "last.pt")
    cfg = from_dict(ckpt["meta"]["config"])
    overrides = dict(overrides or {})
    if "steps" in overrides and "lr_schedule_steps" not in overrides:
        overrides["lr_schedule_steps"] = None  # a longer run stretches the cosine to its new length
    cfg = dataclasses.replace(cfg, out=str(run_dir), **overrides)
    return train(cfg, resume_ckpt=ckpt, log=log)


def compare(cfg: TrainConfig, log=print) -> list[dict]:
    """The demo: a supervised-only baseline and FixMatch on the same labels, then a table."""
    resolved = resolve(dataclasses.replace(cfg, algorithm="fixmatch"))  # dataset defaults filled in
    base = Path(cfg.out) if cfg.out else default_out(dataclasses.replace(resolved, algorithm="both"))
    data = load_data(resolved)  # both runs share the data and, through --fold, the labels
    results = []
    for algorithm in ("supervised", "fixmatch"):
        run_cfg = dataclasses.replace(cfg, algorithm=algorithm, out=str(base / algorithm))
        results.append(train(run_cfg, log=log, data=data))
    log(format_table(results))
    return results


def format_table(results: list[dict]) -> str:
    rows = [f"{'algorithm':<12} {'labels':>6} {'steps':>6} {'accuracy':>9} {'median':>7} {'seconds':>8}"]
    for r in results:
        rows.append(f"{r['algorithm']:<12} {r['num_labels']:>6} {r['steps']:>6} {100 * r['accuracy']:>8.1f}% "
                    f"{100 * r['median_last20']:>6.1f}% {r['seconds']:>8.1f}")
    return "\n".join(rows)
