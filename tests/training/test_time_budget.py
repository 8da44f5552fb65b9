"""--time-budget: the planner fits the steps to the budget from measured times (a simulated clock
makes the arithmetic exact, whatever the machine's speed or load); a real run carries the plan into
its summary. How close real runs end to their budget, on a quiet and a loaded machine, is measured
by benchmarks/time_budget.py (BENCHMARKS.md), not asserted here: wall clock is no test's business."""

from __future__ import annotations

import pytest
import torch
from tiny_runs import tiny_config

from fixmatch.config import TrainConfig
from fixmatch.errors import UserError
from fixmatch.training.schedule_planner import MIN_STEPS, WARMUP, WINDOW, StepPlanner
from fixmatch.training.train import resume, train


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def simulate(
    budget_s: float, setup_s: float, step_s, eval_s: float, eval_every: int, probe: tuple | None = None
) -> tuple[float, int, StepPlanner]:
    """The training loop's calls to the planner, with time advanced by simulated work. `probe`: the
    (step, evaluation) seconds a CPU's probe estimates before the first step (None: a GPU, no probe)."""
    clock = Clock()
    planner = StepPlanner(0, 10**9, eval_every, budget_s=budget_s, t0=0.0, clock=clock)
    clock.t = setup_s  # imports, loading data, building the model
    if probe is not None:
        planner.plan_from_probe(*probe)
    step, steps = 0, planner.steps

    def time_eval():
        clock.t += eval_s
        return eval_s

    while step < steps:
        step += 1
        clock.t += step_s(step) + (3.0 if step == 1 else 0.0)  # the first step compiles
        if planner.due(step):
            steps = planner.observe(step, time_eval)
        if step < steps and planner.time_is_up():
            steps = step
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
    budget_min = 0.15  # from train()'s start: data, model and the probe take their share
    s = train(
        TrainConfig(
            dataset="digits",
            algorithm="fixmatch",
            time_budget=budget_min,
            eval_every=200,
            batch_size=8,
            mu=2,
            progress=False,
            threads=1,
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


def test_a_budget_too_short_is_refused_before_the_first_step_saying_what_fits():
    """CIFAR-10's WRN-28-2 on a small CPU: 25 s of start-up, ~10 s a step, a minute an evaluation. Two
    minutes cannot hold a run: refused at once, with the budget that would, which then holds one."""
    clock = Clock()
    planner = StepPlanner(0, 2**20, 1024, budget_s=120.0, t0=0.0, clock=clock)
    clock.t = 25.0
    with pytest.raises(UserError) as e:
        planner.plan_from_probe(10.0, 60.0, "; or a smaller --model (cnn_small)")
    msg = str(e.value)
    assert "--time-budget 2 min cannot hold a run" in msg and "25 s went to starting up" in msg
    assert "; or a smaller --model (cnn_small)" in msg
    fits = float(msg.split("What fits: --time-budget ")[1].split()[0])
    end, steps, _ = simulate(60 * fits, setup_s=25.0, step_s=lambda k: 10.0, eval_s=60.0, eval_every=1024,
                             probe=(10.0, 60.0))  # fmt: skip
    assert steps >= MIN_STEPS and end <= 60 * fits


def test_the_probe_makes_the_first_plan_before_any_step():
    clock = Clock()
    planner = StepPlanner(0, 2**20, 1024, budget_s=600.0, t0=0.0, clock=clock)
    clock.t = 10.0
    steps = planner.plan_from_probe(0.5, 4.0)
    # the steps with their share of the evaluations (one every 1024 steps), then the final evaluation
    assert steps == planner.steps and abs(steps * (0.5 + 4.0 / 1024) - (0.985 * 600 - 10 - 4)) < 0.6
    assert f"holds about {steps:,} steps" in planner.probe_projection()


@pytest.mark.parametrize("slower", [3.0, 10.0])
def test_steps_far_slower_than_the_probe_said_still_end_within_the_budget(slower):
    """The probe saw 0.5 s a step; each is 1.5-5 s (a busy machine): the first measured plan comes
    after WARMUP + WINDOW steps, later than the budget allows. The clock read after every step ends it."""
    budget = 120.0
    end, steps, _ = simulate(budget, setup_s=20.0, step_s=lambda k: 0.5 * slower, eval_s=5.0, eval_every=1024,
                             probe=(0.5, 5.0))  # fmt: skip
    assert 0.9 * budget <= end <= budget, (end, steps)


def test_a_real_run_refuses_a_budget_its_start_up_has_spent(tmp_path, capsys):
    from fixmatch.cli import main

    run = tmp_path / "run"
    code = main(["train", "--algorithm", "fixmatch", "--time-budget", "0.001", "--no-progress", "--threads", "1",
                 "--device", "cpu", "--out", str(run)])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert "cannot hold a run" in err and "What fits: --time-budget " in err
    assert "Traceback" not in err and not (run / "last.pt").exists()


def log_with_steps(monkeypatch) -> list:
    """A log that also records "STEP" each time the trainer steps: what was said before the first."""
    from fixmatch.training import engine

    said: list = []
    original = engine.Trainer.step

    def step(self):
        said.append("STEP")
        original(self)

    monkeypatch.setattr(engine.Trainer, "step", step)
    return said


def test_a_cpu_run_prints_its_plan_before_its_first_step(tmp_path, monkeypatch):
    said = log_with_steps(monkeypatch)
    cfg = TrainConfig(dataset="digits", algorithm="fixmatch", time_budget=0.15, eval_every=200, batch_size=8, mu=2,
                      progress=False, threads=1, device="cpu", out=str(tmp_path / "run"))  # fmt: skip
    train(cfg, log=said.append)
    first_step = said.index("STEP")
    plan = next(i for i, line in enumerate(said) if "estimated from a probe of the model" in str(line))
    assert plan < first_step and "0.15 min budget" in said[plan]


def test_the_budget_counts_from_the_commands_start(tmp_path, monkeypatch):
    """The CLI hands train() the process's start: the seconds before train() (imports) are the budget's."""
    import json

    from fixmatch.cli import main
    from fixmatch.training import wallclock

    monkeypatch.setattr(wallclock, "process_age", lambda: 7.0)
    run = tmp_path / "run"
    assert main(["train", "--algorithm", "fixmatch", "--steps", "2", "--eval-every", "2", "--no-progress",
                 "--threads", "1", "--out", str(run)]) == 0  # fmt: skip
    assert json.loads((run / "summary.json").read_text())["wall_seconds_this_session"] >= 7.0
    monkeypatch.setattr(wallclock, "process_age", lambda: wallclock.FRESH_PROCESS_S + 1)  # not a fresh command
    assert main(["train", "--algorithm", "fixmatch", "--steps", "2", "--eval-every", "2", "--no-progress",
                 "--threads", "1", "--out", str(tmp_path / "b")]) == 0  # fmt: skip
    assert json.loads((tmp_path / "b" / "summary.json").read_text())["wall_seconds_this_session"] < 60


def test_with_a_baseline_the_second_run_has_what_is_left_of_the_whole_budget(monkeypatch):
    import time

    from fixmatch.training import train as train_module

    got = []

    def fake_train(cfg, log=print, data=None, started=None):
        got.append((cfg.algorithm, cfg.time_budget, started))
        return {"algorithm": cfg.algorithm, "num_labels": 20, "steps": 1, "accuracy": 0.5, "median_last20": 0.5,
                "seconds": 1.0, "out": cfg.out, "dataset": cfg.dataset}  # fmt: skip

    monkeypatch.setattr(train_module, "train", fake_train)
    started = time.perf_counter() - 30.0  # the command started 30 s ago
    train_module.compare(TrainConfig(dataset="digits", time_budget=2.0, out="unused"), log=lambda *_: None,
                         started=started)  # fmt: skip
    (base, base_budget, base_started), (algo, algo_budget, algo_started) = got
    assert (base, algo) == ("supervised", "fixmatch") and base_budget == 1.0 and base_started == started
    assert 1.45 < algo_budget <= 1.5 and algo_started is None  # 2 min less the 30 s spent, from its own start


def test_a_cpu_run_without_a_budget_says_what_it_will_take_before_its_first_step(tmp_path, monkeypatch):
    said = log_with_steps(monkeypatch)
    train(tiny_config(tmp_path), log=said.append)
    line = next(i for i, x in enumerate(said) if "estimated from a probe of the model" in str(x))
    assert line < said.index("STEP") and "24 steps take about" in said[line]


def test_the_loop_ends_a_run_when_the_clock_says_its_time_is_up(tmp_path, monkeypatch):
    """The loop asks the planner after every step; when it says the time is up, that step is the last:
    evaluated, checkpointed, and the plan's length in the checkpoint."""
    calls = []

    def time_is_up(self):
        calls.append(1)
        return len(calls) >= 3

    monkeypatch.setattr(StepPlanner, "time_is_up", time_is_up)
    s = train(tiny_config(tmp_path), log=lambda *_: None)
    assert s["steps"] == 3 and len(calls) == 3
    ckpt = torch.load(tmp_path / "run" / "last.pt", weights_only=False)
    assert ckpt["step"] == 3 and ckpt["schedule"] == {"steps": 3, "lr_schedule_steps": 3}


def test_the_probes_scale_what_they_time(monkeypatch):
    """The evaluation probe: the faster of two timed calls on a slice, scaled to the test split, twice
    (EMA and raw model) and by the cost of full evaluation batches; the step probe: the faster of two."""
    from types import SimpleNamespace

    from fixmatch.training import loop

    times = iter([0.5, 0.4])
    monkeypatch.setattr(loop, "timed", lambda work, trainer: next(times))
    trainer = SimpleNamespace(
        x_test=torch.zeros(1000, 1), y_test=torch.zeros(1000), model=None, evaluate=lambda *a, **k: None
    )
    assert loop.probe_evaluation_seconds(trainer, images=100) == pytest.approx(2 * loop.EVAL_BATCH_COST * 0.4 * 10)
    probes = iter([9.0, 2.0, 3.0])  # the untimed first call, then two
    trainer = SimpleNamespace(probe_step_seconds=lambda images: next(probes))
    assert loop.probe_step_seconds(trainer) == 2.0


def test_a_refusal_names_the_other_ways_that_fit(monkeypatch):
    import os
    from types import SimpleNamespace

    from fixmatch import cpus
    from fixmatch.training import loop

    monkeypatch.setattr(cpus, "usable_cpus", lambda: 2)
    monkeypatch.setattr(loop, "usable_cpus", lambda: 2)
    monkeypatch.setattr(os, "getloadavg", lambda: (5.0, 5.0, 5.0))
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    folders = SimpleNamespace(cfg=SimpleNamespace(model="wrn28_2", dataset="folders"))
    text = loop.what_else_fits(folders)
    assert "a smaller --model (cnn_small)" in text and "a smaller --image-size" in text
    assert "--threads 1 (other work keeps the CPUs busy: load 5.0 on 2 CPUs" in text
    monkeypatch.setattr(os, "getloadavg", lambda: (0.5, 0.5, 0.5))  # a quiet machine: threads are not the problem
    small = SimpleNamespace(cfg=SimpleNamespace(model="cnn_small", dataset="cifar10"))
    text = loop.what_else_fits(small)
    assert "--model" not in text and "--image-size" not in text and "--threads" not in text


def test_process_age_is_this_process_age():
    import subprocess
    import sys

    from fixmatch.training import wallclock

    if wallclock.process_age() is None:
        pytest.skip("this OS does not say when a process started")
    code = "import time; time.sleep(1.5); from fixmatch.training.wallclock import process_age; print(process_age())"
    age = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert 1.5 <= age < 120  # at least the sleep; the upper bound only guards against nonsense
