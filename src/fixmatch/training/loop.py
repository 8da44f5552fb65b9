"""The training loop: step until the schedule's end, evaluate and checkpoint every `eval_every`
steps, and follow --time-budget's plan."""

from __future__ import annotations

import json
import time
from pathlib import Path

from fixmatch.outputs import write_text_atomic
from fixmatch.training import distributed
from fixmatch.training.batch import Schedule
from fixmatch.training.engine import Trainer
from fixmatch.training.schedule_planner import StepPlanner


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
    if planner.budget_s is None and trainer.device.type == "cpu" and trainer.step_num < trainer.schedule.steps:
        warning = planner.early_warning(trainer.probe_step_seconds())  # before a first step that may take long
        if warning:
            log(warning)
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
    bar.close()
    return planner
