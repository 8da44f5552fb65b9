"""--time-budget: the planner fits the steps to the budget from measured times (a simulated clock
makes the arithmetic exact), and a real run ends on time."""

from __future__ import annotations

import pytest

from fixmatch.config import TrainConfig
from fixmatch.schedule_planner import WARMUP, WINDOW, StepPlanner
from fixmatch.train import train


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


@pytest.mark.slow  # a real 15-second training
def test_a_real_run_ends_on_time(tmp_path):
    budget_min = 0.25
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
    assert s["time_budget_minutes"] == budget_min and s["planned_steps"] > 100
    assert s["steps"] > WARMUP + WINDOW and s["ms_per_step"] > 0
    # the planner aims at 98.5% of the budget; a busy machine may make the end land a bit off that
    assert 0.85 * 60 * budget_min <= s["wall_seconds_this_session"] <= 1.05 * 60 * budget_min


def test_costly_evaluations_are_part_of_the_plan():
    """Evaluations every 200 steps that cost 40 steps' time each: a plan that left them out would
    overrun the budget by about a fifth."""
    budget = 120.0
    end, steps, planner = simulate(budget, setup_s=1.0, step_s=lambda k: 0.01, eval_s=0.4, eval_every=200)
    assert 0.95 * budget <= end <= budget, end
    assert abs(steps - planner.planned_steps) < 0.02 * steps  # the first plan was right: the replan barely moved it
