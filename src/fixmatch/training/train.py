"""`fixmatch train`, top to bottom: config -> data -> labels -> model -> loop -> summary."""

from __future__ import annotations

import dataclasses
import json
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import torch

from fixmatch.config import PAPER_DEFAULTS, RunConfig, TrainConfig, from_dict, save_yaml
from fixmatch.cpus import thread_count
from fixmatch.data import get_spec, load_data
from fixmatch.data.splits import load_split, official_labeled_indices, save_split
from fixmatch.errors import UserError
from fixmatch.models import build_model, count_parameters
from fixmatch.models.input_scaling import normalizer_for
from fixmatch.models.layers import DEFAULT_WIRING
from fixmatch.outputs import write_text_atomic
from fixmatch.training import distributed, run_data, run_folder, step_memory
from fixmatch.training.checkpoint import load_checkpoint
from fixmatch.training.curriculum import curriculum_work
from fixmatch.training.engine import Trainer
from fixmatch.training.fast import resolve_speedups
from fixmatch.training.loop import run_loop, write_metrics
from fixmatch.training.resolve import resolve, validate
from fixmatch.training.schedule_planner import StepPlanner


def pick_labels(cfg: RunConfig, data) -> np.ndarray:
    """The labeled indices: a saved split, a dataset's predefined fold, every image, or the official
    create_split selection for --fold."""
    if cfg.split_file:
        return load_split(cfg.split_file, len(data.y_train))
    num_labels = len(data.y_train) if cfg.num_labels is None else cfg.num_labels
    if num_labels == len(data.y_train):  # every training image labeled (FER2013 release, folders)
        return np.arange(len(data.y_train))
    fixed = (data.fixed_splits or {}).get(cfg.fold)
    if fixed is not None and len(fixed) == num_labels:
        return np.sort(np.asarray(fixed, dtype=np.int64))
    return official_labeled_indices(data.y_train.numpy(), num_labels, seed=cfg.fold)


def default_out(cfg: TrainConfig) -> Path:
    """runs/<dataset>-<labels>-<algorithm>-<time>, or -<baseline>-vs-<algorithm>- for a comparison."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    what = cfg.algorithm if cfg.baseline in (None, "none", cfg.algorithm) else f"{cfg.baseline}-vs-{cfg.algorithm}"
    return Path("runs") / f"{cfg.dataset}-{cfg.num_labels}-{what}-{stamp}"


def open_writer(out_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is a dependency, but never let logging stop training
        return None
    return SummaryWriter(str(out_dir / "tb"))


def make_trainer(cfg: RunConfig, data, labeled, device: torch.device, dist=distributed.SINGLE) -> Trainer:
    """The network cfg names (initialised from torch's global RNG, official wiring), its input
    scaling, inside a Trainer with cfg's speed switches."""
    model = build_model(
        cfg.model, data.num_classes, data.image_shape[0], wiring=DEFAULT_WIRING, bn_momentum=cfg.bn_momentum
    )
    normalize = normalizer_for(cfg.input_scaling, data)
    return Trainer(cfg, model, data, labeled, device, resolve_speedups(cfg, device), normalize, dist)


@run_folder.releases_claims
def train(
    cfg: TrainConfig, resume_ckpt: dict | None = None, log=print, data=None, started: float | None = None
) -> dict:
    """Train one run (one algorithm) and return its summary (also written to summary.json). A
    TrainConfig is resolved here; a RunConfig already was (once: nothing resolves it again).
    `started`: when the command started (time.perf_counter()), else now."""
    t_start = time.perf_counter() if started is None else started  # --time-budget counts from here
    cfg = cfg if isinstance(cfg, RunConfig) else resolve(cfg)
    torch.set_num_threads(thread_count(cfg.threads))
    dist, device = distributed.setup(cfg)  # under torchrun: joins the process group, device cuda:LOCAL_RANK
    # one download (or one decode cache of a user's folders) per node, which the other ranks then read
    with distributed.local_main_first(dist, enabled=cfg.download or cfg.dataset == "folders"):
        data = data or load_data(cfg)
    step_memory.check_step_fits(cfg, data.image_shape, device, dist.world)  # before minutes of failing to allocate
    data_record = run_data.describe(cfg.dataset, data)
    if resume_ckpt is not None:
        check_same_data(resume_ckpt["meta"], data_record, cfg.out)
    num_labels = len(data.y_train) if cfg.num_labels is None else cfg.num_labels  # None: every labeled image
    cfg = dataclasses.replace(cfg, num_labels=num_labels)
    if num_labels > len(data.y_train):
        raise UserError(f"num_labels={cfg.num_labels} exceeds the {len(data.y_train)} training images of {cfg.dataset}")
    labeled = pick_labels(cfg, data)
    out_dir = Path(distributed.broadcast_object(str(cfg.out or default_out(cfg)), dist))  # rank 0's timestamp
    if dist.main:  # only rank 0 writes files
        run_folder.claim(
            out_dir,
            resume=resume_ckpt is not None,
            overwrite=cfg.overwrite,
            inputs=[run_folder.data_folder(cfg)],
            log=log,
        )
        save_yaml(cfg, out_dir / "config.yaml")
        write_skipped(out_dir, data.skipped)
        save_split(
            out_dir / "split.json", labeled, {"dataset": cfg.dataset, "num_labels": int(len(labeled)), "fold": cfg.fold}
        )

    torch.manual_seed(cfg.seed)  # model initialisation
    trainer = make_trainer(cfg, data, labeled, device, dist)
    c, h, w = data.image_shape
    mean, std = trainer.normalize.mean.flatten().tolist(), trainer.normalize.std.flatten().tolist()
    meta = {
        "run_name": out_dir.name,
        "config": cfg.to_dict(),
        "dataset": cfg.dataset,
        "class_names": data.class_names,
        "image_shape": [c, h, w],
        "mean": mean,
        "std": std,
        "model_name": cfg.model,
        "arch_variant": DEFAULT_WIRING,
        "preprocess": get_spec(cfg.dataset).framing,  # how predict and serve frame a photo for this model
        "num_classes": data.num_classes,
        "parameters": count_parameters(trainer.model),
        "data": data_record,  # what --resume compares the data it finds with
    }
    if resume_ckpt is not None:
        trainer.load_state_dict(resume_ckpt)  # every rank loads the same (global) state
        if dist.main:
            write_metrics(out_dir, trainer.history)
        log(f"resumed {out_dir} at step {trainer.step_num}")
    steps_text = f"up to {cfg.time_budget:g} minutes" if cfg.time_budget else f"{cfg.steps} steps"
    log(
        f"{cfg.algorithm} on {cfg.dataset}: {len(labeled)} labels, {cfg.model} "
        f"({meta['parameters']:,} params), {steps_text}, device {device} ({trainer.speedups.describe()})"
        + (f", {dist.world} ranks x {cfg.batch_size // dist.world} labeled images" if dist.active else "")
    )
    for note in run_notes(cfg, data):
        log(note)

    writer = open_writer(out_dir) if dist.main else None
    t0 = time.perf_counter()
    used = trainer.history[-1]["seconds"] if trainer.history else 0.0
    planner = StepPlanner(
        trainer.step_num,
        trainer.schedule.steps,
        cfg.eval_every,
        t0=t_start,
        budget_s=cfg.time_budget * 60 - used if cfg.time_budget else None,
        work=curriculum_work(cfg),
    )
    try:
        run_loop(trainer, out_dir, meta, writer=writer, progress=cfg.progress, log=log, planner=planner)
    except KeyboardInterrupt as e:  # Ctrl-C or SIGTERM: the CLI says where the last checkpoint is
        e.run_dir = out_dir  # type: ignore[attr-defined]
        raise
    if writer is not None:
        writer.close()
    last = trainer.history[-1]
    summary = {
        "dataset": cfg.dataset,
        "algorithm": cfg.algorithm,
        "model": cfg.model,
        "num_labels": int(len(labeled)),
        "steps": trainer.schedule.steps,
        "seed": cfg.seed,
        "fold": cfg.fold,
        "evaluated_on": data.eval_note or "the dataset's test split",
        "time_budget_minutes": cfg.time_budget,
        "planned_steps": planner.planned_steps,
        "replans": planner.replans,
        "ms_per_step": round(1000 * planner.step_seconds, 2) if planner.step_seconds else None,
        "skipped_images": len(data.skipped),
        "accuracy": last["accuracy"],
        "median_last20": trainer.median_last(),
        "raw_accuracy": last["raw_accuracy"],
        "mask_rate": last.get("mask_rate"),
        "pseudo_label_accuracy": last.get("pseudo_label_accuracy"),
        "seconds": last["seconds"],
        "seconds_this_session": round(time.perf_counter() - t0, 2),
        "wall_seconds_this_session": round(time.perf_counter() - t_start, 2),
        "device": str(device),
        "speedups": trainer.speedups.describe(),
        "world_size": dist.world,
        "out": str(out_dir),
    }
    if dist.main:
        write_text_atomic(out_dir / "summary.json", json.dumps(summary, indent=1))
    return summary


def check_same_data(meta: dict, now: dict, run_dir) -> None:
    """A resumed run continues on the data it started with, or stops saying what changed."""
    saved = meta.get("data") or {  # checkpoints from before the record: what their metadata says
        "dataset": (meta.get("config") or {}).get("dataset"),
        "class_names": meta.get("class_names"),
        "image_shape": meta.get("image_shape"),
    }
    changed = run_data.differences(saved, now)
    if changed:
        raise UserError(
            f"cannot resume {run_dir}: its data is not the data it started with ({'; '.join(changed)}). "
            "Resume with the run's own data (its config.yaml names it), or start a new run"
        )


def write_skipped(out_dir: Path, skipped: list) -> None:
    if skipped:
        write_text_atomic(out_dir / "skipped.txt", "".join(f"{path}\t{reason}\n" for path, reason in skipped))


def run_notes(cfg: RunConfig, data) -> list[str]:
    """What a user should know before the run starts: skipped files, what is evaluated, the options
    a short schedule needs."""
    notes = []
    if data.skipped:
        n = len(data.skipped)
        notes.append(f"{n} unreadable image file{'s' if n > 1 else ''} left out (listed in skipped.txt)")
    if data.eval_note:
        notes.append(f"evaluation: {data.eval_note}")
    if cfg.ema_warmup or cfg.bn_momentum != PAPER_DEFAULTS["bn_momentum"]:
        notes.append(
            f"short-schedule options: EMA warm-up {'on' if cfg.ema_warmup else 'off'}, BatchNorm "
            f"momentum {cfg.bn_momentum} (official: EMA without warm-up, momentum 0.001)"
        )
    if cfg.dataset == "folders" and cfg.flip:  # measured: it starves FixMatch on digits (README)
        notes.append(
            "horizontal flip on (the folders default): a mirrored digit or letter is another symbol, and "
            "on digits from folders it cost FixMatch 10 points; pass --no-flip unless your images are "
            "mirror-symmetric"
        )
    return notes


def resume(run_dir, overrides: dict | None = None, log=print, started: float | None = None) -> dict:
    """Continue the run in `run_dir` from last.pt with its saved config (plus explicit overrides).

    `steps` changes the run's length. The cosine's K follows it when K followed the old length (the
    default): the learning rate from here on is that of the longer (or shorter) schedule. A K that
    was set on its own stays, and `lr_schedule_steps` sets it explicitly. The log says which."""
    ckpt = load_checkpoint(Path(run_dir) / "last.pt")
    cfg = from_dict(ckpt["meta"]["config"])
    planned = ckpt.get("schedule")
    if planned:  # the length the run was following (--time-budget plans another than the config's)
        cfg = dataclasses.replace(cfg, steps=planned["steps"], lr_schedule_steps=planned["lr_schedule_steps"])
    overrides = dict(overrides or {})
    run_folder.refuse_changes_on_resume(cfg.to_dict(), overrides, run_dir)
    if "steps" in overrides and "lr_schedule_steps" not in overrides:
        old_k = cfg.lr_schedule_steps
        if old_k is None or old_k == cfg.steps:
            overrides["lr_schedule_steps"] = None
            log(
                f"resume: {cfg.steps} -> {overrides['steps']} steps; the cosine's K follows ({old_k} -> "
                f"{overrides['steps']}); give --lr-schedule-steps {old_k} to keep the old schedule"
            )
        else:
            log(f"resume: {cfg.steps} -> {overrides['steps']} steps; the cosine's K stays {old_k} (set on its own)")
    cfg = dataclasses.replace(cfg, out=str(run_dir), **{**overrides, "overwrite": False})
    return train(cfg, resume_ckpt=ckpt, log=log, started=started)


def compare(cfg: TrainConfig, log=print, started: float | None = None) -> tuple[dict, dict]:
    """--baseline: the baseline (the demo: supervised), then the algorithm, on the same data and
    labels; their two summaries. A time budget is split evenly: the baseline's half counts from the
    command's start (`started`), the algorithm has what is left of the whole when it starts."""
    started = time.perf_counter() if started is None else started
    resolved = cfg if isinstance(cfg, RunConfig) else resolve(cfg)
    base = Path(resolved.out) if resolved.out else default_out(resolved)
    budget = resolved.time_budget / 2 if resolved.time_budget else None
    runs = [
        dataclasses.replace(resolved, algorithm=name, baseline="none", out=str(base / name), time_budget=budget)
        for name in (resolved.baseline, resolved.algorithm)
    ]
    try:  # the baseline's settings hold too, before either run trains
        validate(runs[0])
    except UserError as e:
        raise UserError(f"the baseline run (--baseline {resolved.baseline}): {e}") from None
    data = load_data(resolved)  # both runs share the data and, through --fold, the labels
    if budget:
        log(
            f"--time-budget {resolved.time_budget:g} min is split: {budget:g} min from the start for the "
            f"baseline, the rest of the {resolved.time_budget:g} min for {resolved.algorithm}"
        )
    baseline = train(runs[0], log=log, data=data, started=started)
    if budget and resolved.time_budget:
        left_min = resolved.time_budget - (time.perf_counter() - started) / 60
        runs[1] = dataclasses.replace(runs[1], time_budget=max(left_min, 1e-3))
    return baseline, train(runs[1], log=log, data=data)
