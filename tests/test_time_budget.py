"""--time-budget: the planner fits the steps to the budget from measured times (a simulated clock
makes the arithmetic exact, whatever the machine's speed or load); a real run carries the plan into
its summary. How close real runs end to their budget, on a quiet and a loaded machine, is measured
by benchmarks/time_budget.py (BENCHMARKS.md), not asserted here: wall clock is no test's business."""

from __future__ import annotations

import pytest
import torch

from fixmatch.config import TrainConfig
from fixmatch.training.schedule_planner import WARMUP, WINDOW, StepPlanner
from fixmatch.training.train import resume, train


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def simulate(budget_s: float, setup_s: float, step_s, eval_s: float, eval_every: int) -> tuple[float, int, StepPlanner]:
    """The training loop's calls to the planner, with time advanced by simulated work."""
    clock = Clock()
    planner = StepPlanner(0, 10**9, eval_every, budget_s=budget_s, t0=0.0, clock=clock)
    clock.t = setup_s  # loading data, building the model
    step, steps = 0, planner.steps

    def time_eval():
        clock.t += eval_s
        return eval_s

    while step < steps:
        step += 1
        clock.t += step_s(step) + (3.0 if step == 1 else 0.0)  # the first step compiles
        if planner.due(step):
            steps = planner.observe(step, time_eval)
        if step % eval_every == 0 or step == steps:
            clock.t += eval_s
            planner.evaluated(eval_s)
    return clock.t, steps, planner


@pytest.mark.parametrize("budget_min", [1, 10, 60])
def test_planned_run_ends_within_5_percent_of_the_budget(budget_min):
    budget = 60.0 * budget_min
    end, steps, planner = simulate(budget, setup_s=4.0, step_s=lambda k: 0.012, eval_s=0.8, eval_every=1024)
    assert 0.95 * budget <= end <= budget, end
    assert planner.planned_steps is not None and steps > WARMUP + WINDOW


def test_a_drift_in_speed_is_corrected_by_the_replan():
    budget = 600.0
    slower = lambda k: 0.01 if k < 500 else 0.013  # noqa: E731  (e.g. the machine got busy)
    end, _, planner = simulate(budget, setup_s=2.0, step_s=slower, eval_s=0.5, eval_every=1000)
    assert 0.95 * budget <= end <= budget, end
    assert planner.steps < planner.planned_steps  # the second plan shortened the run


@pytest.mark.parametrize("change_at, factor", [(0.6, 1.5), (0.8, 2.0), (0.6, 0.6), (0.9, 1.3)])
def test_a_late_change_of_speed_is_followed_to_the_end(change_at, factor):
    """The machine gets busy (or quiet) after the halfway point: one halfway re-plan would end 20-40%
    late; re-planning each time half the rest is done keeps the end within 5% of the budget."""
    budget, base = 300.0, 0.01
    _, steady_steps, _ = simulate(budget, setup_s=2.0, step_s=lambda k: base, eval_s=0.3, eval_every=1000)
    at = int(change_at * steady_steps)
    end, steps, planner = simulate(
        budget, setup_s=2.0, step_s=lambda k: base if k < at else base * factor, eval_s=0.3, eval_every=1000
    )
    assert 0.95 * budget <= end <= budget, (end, planner.replans)
    assert (steps < steady_steps) == (factor > 1)


def test_a_real_run_carries_its_plan_into_the_summary(tmp_path):
    budget_min = 0.05
    s = train(
        TrainConfig(
            dataset="digits",
            algorithm="fixmatch",
            time_budget=budget_min,
            eval_every=200,
            batch_size=8,
            mu=2,
            progress=False,
            out=str(tmp_path / "run"),
        ),
        log=lambda *_: None,
    )
    # the first plan is made after WARMUP + WINDOW steps, however slow the machine: at least one more follows
    assert s["time_budget_minutes"] == budget_min and s["planned_steps"] > WARMUP + WINDOW
    assert s["steps"] > WARMUP + WINDOW and s["ms_per_step"] > 0
    # the plan is the trainer's schedule, in the checkpoint (resume follows it); the config stays as given
    ckpt = torch.load(tmp_path / "run" / "last.pt", weights_only=False)
    assert ckpt["schedule"] == {"steps": s["steps"], "lr_schedule_steps": s["steps"]}
    assert ckpt["meta"]["config"]["steps"] == 1000 and "steps: 1000" in (tmp_path / "run" / "config.yaml").read_text()
    assert resume(tmp_path / "run", log=lambda *_: None)["steps"] == s["steps"]


def test_a_run_of_hours_on_a_cpu_says_so_before_its_first_step(tmp_path):
    said = []

    class Stop(Exception):
        pass

    def log(line):
        said.append(line)
        if "s/step" in line:
            raise Stop

    cfg = TrainConfig(dataset="digits", algorithm="fixmatch", steps=10**9, progress=False, out=str(tmp_path / "run"))
    with pytest.raises(Stop):
        train(cfg, log=log)
    assert "estimated from a probe of the model" in said[-1] and "--time-budget MINUTES" in said[-1]
    assert not (tmp_path / "run" / "last.pt").exists()  # said before the first evaluation (and step)


def test_the_probe_changes_nothing_of_the_run(tmp_path):
    from tiny_runs import tiny_config

    from fixmatch.data import load_data
    from fixmatch.training.resolve import resolve
    from fixmatch.training.train import make_trainer

    cfg = resolve(tiny_config(tmp_path))
    data = load_data(cfg)
    labeled = list(range(cfg.num_labels))
    torch.manual_seed(0)
    a = make_trainer(cfg, data, labeled, torch.device("cpu"))
    torch.manual_seed(0)
    b = make_trainer(cfg, data, labeled, torch.device("cpu"))
    assert a.probe_step_seconds() > 0
    for t in (a, b):
        for _ in range(3):
            t.step()
    for (name, pa), pb in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.equal(pa, pb), name


def test_costly_evaluations_are_part_of_the_plan():
    """Evaluations every 200 steps that cost 40 steps' time each: a plan that left them out would
    overrun the budget by about a fifth."""
    budget = 120.0
    end, steps, planner = simulate(budget, setup_s=1.0, step_s=lambda k: 0.01, eval_s=0.4, eval_every=200)
    assert 0.95 * budget <= end <= budget, end
    assert abs(steps - planner.planned_steps) < 0.02 * steps  # the first plan was right: the replan barely moved it
