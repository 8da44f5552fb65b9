"""The training loop: step until the schedule's end, evaluate and checkpoint every `eval_every`
steps, and follow --time-budget's plan (from a probe before the first step, then from measurements,
with the clock read after every step)."""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path

import torch

from fixmatch.cpus import usable_cpus
from fixmatch.outputs import write_text_atomic
from fixmatch.training import distributed
from fixmatch.training.batch import Schedule
from fixmatch.training.engine import Trainer
from fixmatch.training.interrupts import interruptible
from fixmatch.training.schedule_planner import WARMUP, WINDOW, StepPlanner

EVAL_BATCH_COST = 1.5  # per image, a 1024-image evaluation batch over the probe's 256 (CPU, measured)


def write_metrics(out_dir: Path, history: list[dict]) -> None:
    """metrics.jsonl is rewritten from the checkpointed history, so a resumed run has no gaps or repeats."""
    write_text_atomic(out_dir / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in history))


def run_loop(
    trainer: Trainer,
    out_dir: Path,
    meta: dict,
    writer=None,
    progress: bool = True,
    log=print,
    planner: StepPlanner | None = None,
) -> StepPlanner:
    """Train from the trainer's current step to its schedule's end, evaluating every cfg.eval_every
    steps. The planner times the first steps (a projected duration in the log) and, with a time
    budget, returns the steps that fit: the loop applies them as the trainer's schedule (the cosine's
    K follows); the config and what was saved stay as they were."""
    from tqdm import tqdm

    start_seconds = trainer.history[-1]["seconds"] if trainer.history else 0.0
    t0 = time.perf_counter()
    planner = planner or StepPlanner(trainer.step_num, trainer.schedule.steps, trainer.cfg.eval_every)
    main = trainer.dist.main  # only rank 0 writes checkpoints, metrics, tensorboard and the bar
    bar = tqdm(
        total=trainer.schedule.steps,
        initial=trainer.step_num,
        disable=not (progress and main),
        desc=meta["run_name"],
        dynamic_ncols=True,
        leave=False,
    )
    best = max((r["accuracy"] for r in trainer.history), default=-1.0)
    if trainer.step_num < trainer.schedule.steps:
        announce_plan(trainer, planner, log)
        bar.total = trainer.schedule.steps
    cpu = trainer.device.type == "cpu"
    with interruptible(trainer.model) if cpu else contextlib.nullcontext():
        run_steps(trainer, out_dir, meta, writer, progress, log, planner, bar, best, start_seconds, t0)
    bar.close()
    return planner


def run_steps(trainer, out_dir, meta, writer, progress, log, planner, bar, best, start_seconds, t0) -> None:
    """The steps, their evaluations and checkpoints (run_loop's body, after the plan is announced)."""
    main = trainer.dist.main
    guard = not trainer.dist.active  # under torchrun every rank would have to agree on stopping early
    while trainer.step_num < trainer.schedule.steps:
        trainer.step()
        bar.update(1)
        if planner.due(trainer.step_num):
            trainer.sync()
            had_speed = planner.step_seconds is not None
            steps = distributed.broadcast_object(
                planner.observe(trainer.step_num, trainer.time_evaluation), trainer.dist
            )
            if steps != trainer.schedule.steps:
                trainer.schedule = Schedule(steps, steps)
                bar.total = steps
            if not had_speed and planner.step_seconds is not None:
                log(planner.projection())
        if guard and trainer.step_num < trainer.schedule.steps and planner.time_is_up():
            trainer.schedule = Schedule(trainer.step_num, trainer.step_num)  # this step is the last
            bar.total = trainer.step_num
        if trainer.step_num % trainer.cfg.eval_every == 0 or trainer.step_num == trainer.schedule.steps:
            t_eval = time.perf_counter()
            rec = trainer.record_evaluation(start_seconds + t_eval - t0)
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
            planner.evaluated(time.perf_counter() - t_eval)  # the plan counts evaluations apart from steps


def announce_plan(trainer: Trainer, planner: StepPlanner, log) -> None:
    """Before the first step, on every run: what the time will be. On a CPU a probe of the model's
    cost makes the budget's first plan (or refuses a budget that cannot hold a run) and warns of a
    run of hours; on a GPU a few images say nothing of a batch's time (and under torchrun each rank's
    probe would differ), so the first measured steps do."""
    cpu = trainer.device.type == "cpu"
    busy = busy_cpus() if cpu and torch.get_num_threads() > 1 else ""
    if busy:
        log(
            f"note: other work keeps the CPUs busy ({busy}): torch's {torch.get_num_threads()} threads wait "
            "for each other, and --threads 1 may well be faster here"
        )
    if planner.budget_s is None:
        if cpu:
            log(planner.probe_estimate(probe_step_seconds(trainer)))
        return
    if not cpu or trainer.dist.active:  # under torchrun the ranks' probes would differ: the measured plan is shared
        left = planner.t0 + planner.budget_s - time.perf_counter()
        log(f"--time-budget: {left:.0f} s left after starting up; the steps are fitted to it after {WARMUP + WINDOW}")
        return
    step_s, eval_s = probe_step_seconds(trainer), probe_evaluation_seconds(trainer)
    steps = planner.plan_from_probe(step_s, eval_s, what_else_fits(trainer))
    trainer.schedule = Schedule(steps, steps)
    log(planner.probe_projection())


def probe_step_seconds(trainer: Trainer, images: int = 16) -> float:
    """The trainer's probe of a step, after one untimed call of the same shape (the first pays set-up
    costs per shape), on enough images that a small model's fixed cost per call is not scaled up as if
    it were per image; the faster of two timed calls (a busy machine's pauses are not the model's)."""
    trainer.probe_step_seconds(images=images)
    return min(trainer.probe_step_seconds(images=images) for _ in range(2))


def probe_evaluation_seconds(trainer: Trainer, images: int = 256) -> float:
    """A rough evaluation time: the raw model on a few test images (the faster of two calls after an
    untimed one), scaled to the test split, twice (the loop evaluates the EMA and the raw model), and
    by EVAL_BATCH_COST: evaluation batches (1024 images) cost more per image than the probe's (their
    activations outgrow the caches; on a CPU, cnn_small: 1.5x). Nothing is recorded."""
    n = len(trainer.y_test)
    part = slice(0, min(n, images))
    x, y = trainer.x_test[part], trainer.y_test[part]
    trainer.evaluate(trainer.model, images=x, labels=y)
    probe = min(timed(lambda: trainer.evaluate(trainer.model, images=x, labels=y), trainer) for _ in range(2))
    return 2 * EVAL_BATCH_COST * probe * n / len(y)


def timed(work, trainer: Trainer) -> float:
    t = time.perf_counter()
    work()
    trainer.sync()
    return time.perf_counter() - t


def what_else_fits(trainer: Trainer) -> str:
    """The other ways to a run that fits, for the refusal of a budget too short."""
    cfg, smallest = trainer.cfg, "cnn_small"
    ways = [] if cfg.model == smallest else [f"a smaller --model ({smallest})"]
    if cfg.dataset in ("folders", "stl10"):
        ways.append("a smaller --image-size")
    busy = busy_cpus()
    if torch.get_num_threads() > 1 and busy:
        ways.append(f"--threads 1 (other work keeps the CPUs busy: {busy}; threads that share a core wait for it)")
    if not torch.cuda.is_available():
        ways.append("a machine with a GPU")
    return "".join(f"; or {way}" for way in ways)


def busy_cpus() -> str:
    """'load L on N CPUs' when the last minute's load average is at least the CPUs this process may
    use (other work is running), else ''."""
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # Windows
        return ""
    cpus = usable_cpus()
    return f"load {load:.1f} on {cpus} CPUs" if load >= cpus else ""
