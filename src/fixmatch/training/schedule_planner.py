"""Step timing during training: the projected duration of a run, and `--time-budget`, which fits the
number of steps (and the cosine's K) to a wall-clock budget from the measured speed.

The clock starts when the command starts (the CLI passes the process's start; `train` called from
Python starts it itself): imports, data loading, model building, compilation and CUDA-graph capture
are all inside the budget. On a CPU, before the first step, a probe of the model's cost (a step and an
evaluation, estimated from a few images) makes the first plan and prints it; a budget that cannot hold
MIN_STEPS steps and the final evaluation is refused at once, saying what would fit. After WARMUP
steps (compilation happens there) the next WINDOW
steps are timed and one evaluation is timed; the plan then aims to end at TARGET of the budget,
evaluations and checkpoints included. The plan is then made again each time half of the remaining
steps are done, from the speed of the steps since the last plan (evaluations timed apart, as the loop
reports them), until fewer than MIN_REPLAN steps remain: a machine that slows down or speeds up late
in the run is still followed, and the last correction comes a few steps before the end (log2 of the
run's steps re-plans in all, each one clock reading). Between plans every step reads the clock (no
device sync): when the next step and the final evaluation would end past the plan's target, the run
ends now, so a step far slower than the probe said (a busy machine, a slow first plan) cannot carry
the run past its budget.

When steps differ in size (--unlabeled-batch-curriculum), `work(first, last, steps)` gives the images
of steps first..last-1 in a run of `steps` steps: the speed is measured per image, and the plan is
the most steps whose images (under that plan's own curriculum) fit the time left.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

from fixmatch.errors import UserError

WARMUP, WINDOW = 5, 20
MIN_REPLAN = 4  # re-plan while at least this many steps remain
TARGET = 0.985  # aim a little under the budget: the end may only be early, by less than 5%
HOUR = 3600.0
MIN_STEPS = WARMUP + WINDOW  # fewer steps than the planner needs to measure a speed: no run worth having
LONG_RUN_ADVICE = (
    "--time-budget MINUTES fits the schedule to the time you have, or lower --steps, or pick a smaller --model"
)


@dataclass
class StepPlanner:
    start_step: int
    steps: int  # the current plan (cfg.steps until a budget replans it)
    eval_every: int
    budget_s: float | None = None  # seconds left for this session (None: no budget)
    t0: float = 0.0  # clock value when the budget started
    clock: Callable[[], float] = time.perf_counter
    work: Callable[[int, int, int], float] | None = None  # None: every step costs the same
    planned_steps: int | None = None  # the first plan, for the summary
    step_seconds: float | None = None  # the first measurement (the projection and the summary)
    per_step: float | None = None  # the latest estimate of a step's seconds (probe, then measurements)
    eval_seconds: float = 0.0  # the latest evaluation's cost, checkpoint included
    replans: int = 0
    eval_probed: bool = False  # eval_seconds came from a probe (until the first evaluation measures it)
    _mark: tuple[int, float] | None = None  # (step, clock) where the current speed interval began
    _eval_since_mark: float = 0.0  # seconds of evaluation inside that interval
    _replan_at: int | None = None
    notes: list[str] = field(default_factory=list)

    def due(self, step: int) -> bool:
        """Whether `observe` wants a synchronised clock reading after this step."""
        return step in (self.start_step + WARMUP, self.start_step + WARMUP + WINDOW) or step == self._replan_at

    def evaluated(self, seconds: float) -> None:
        """The loop reports each evaluation (with its checkpoint) and what it cost."""
        self.eval_seconds = seconds
        self._eval_since_mark += seconds

    def observe(self, step: int, time_eval: Callable[[], float]) -> int:
        """Called after step `step` when `due`; returns the (possibly new) total number of steps."""
        now = self.clock()
        if step == self.start_step + WARMUP:
            self._start_interval(step, now)
        elif self._mark is not None and step == self._mark[0] + WINDOW and self.step_seconds is None:
            self.step_seconds = self.per_step = self._interval_seconds(now) / WINDOW
            if self.budget_s is not None:
                if not self.eval_probed:  # a CPU's probe estimated it: no evaluation spent on timing one
                    self.eval_seconds = time_eval()
                self.steps = self.planned_steps = self._plan(step, now, self.clock())
                self._start_interval(step, self.clock())
        elif step == self._replan_at and self._mark is not None:
            self.steps = self._plan(step, now, now)
            self.replans += 1
            self._start_interval(step, now)
        return self.steps

    def _start_interval(self, step: int, now: float) -> None:
        self._mark, self._eval_since_mark = (step, now), 0.0
        remaining = self.steps - step
        plan_again = self.budget_s is not None and self.planned_steps is not None and remaining >= MIN_REPLAN
        self._replan_at = step + remaining // 2 if plan_again else None

    def _interval_seconds(self, now: float) -> float:
        """Seconds of training steps since the mark, evaluations left out (they are planned apart)."""
        assert self._mark is not None
        return max(now - self._mark[1] - self._eval_since_mark, 0.0)

    def _plan(self, step: int, measured_at: float, now: float) -> int:
        """The plan from the speed of the steps since the mark (measured at `measured_at`)."""
        assert self._mark is not None
        seconds, per_eval = self._interval_seconds(measured_at), self.eval_seconds / self.eval_every
        self.per_step = seconds / max(step - self._mark[0], 1)
        if self.work is None:
            return self._fit(step, now, seconds / (step - self._mark[0]) + per_eval)
        return self._fit_work(step, now, seconds / self.work(self._mark[0], step, self.steps), per_eval)

    def _left(self, now: float) -> float:
        assert self.budget_s is not None  # only planned with a budget
        return self.t0 + TARGET * self.budget_s - now - self.eval_seconds  # the final evaluation too

    def _fit(self, step: int, now: float, per_step: float) -> int:
        """Most steps such that the rest (steps with their share of the evaluations, then the
        final evaluation) ends by TARGET of the budget."""
        return max(step + 1, step + math.floor(self._left(now) / per_step)) if per_step > 0 else self.steps

    def _fit_work(self, step: int, now: float, per_unit: float, per_step: float) -> int:
        """The most steps S whose remaining images (under S's own curriculum) and per-step extras
        end by TARGET of the budget (binary search: the images up to S grow with S)."""
        assert self.work is not None
        work, left = self.work, self._left(now)

        def fits(s: int) -> bool:
            return work(step, s, s) * per_unit + (s - step) * per_step <= left

        smallest = work(step, step + 1, 2**62) * per_unit + per_step  # a step at the curriculum's start: the cheapest
        if smallest <= 0:
            return self.steps
        lo, hi = step + 1, step + 1 + max(0, math.floor(left / smallest))
        while lo < hi:
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if fits(mid) else (lo, mid - 1)
        return lo

    def plan_from_probe(self, step_s: float, eval_s: float, context: str = "") -> int:
        """The first plan, before the first step, from a probe's estimates of a step and of an
        evaluation; a budget that cannot hold MIN_STEPS of them and the final evaluation is refused
        (UserError, naming the budget that would fit; `context` adds what else would)."""
        assert self.budget_s is not None  # only planned with a budget
        self.per_step, self.eval_seconds, self.eval_probed = step_s, eval_s, True
        now = self.clock()
        steps = self._fit(self.start_step, now, step_s + eval_s / self.eval_every) if step_s > 0 else self.steps
        if steps - self.start_step < MIN_STEPS:
            spent = now - self.t0
            # a fifth more than the minimum: the probe is rough and the first steps pay set-up costs
            need = (spent + eval_s + 1.2 * MIN_STEPS * (step_s + eval_s / self.eval_every)) / TARGET
            raise UserError(
                f"--time-budget {self.budget_s / 60:g} min cannot hold a run: {spent:.0f} s went to starting "
                f"up, and a step takes about {step_s:.2f} s and an evaluation about {eval_s:.0f} s here "
                f"(estimated from a probe of the model), so the budget holds {max(steps - self.start_step, 0)} "
                f"steps; at least {MIN_STEPS} and the final evaluation are needed. What fits: "
                f"--time-budget {math.ceil(need / 6) / 10:g} or more{context}"
            )
        self.steps = steps
        return steps

    def probe_projection(self) -> str:
        """One log line, before the first step: the probe's estimates and the steps the budget holds."""
        assert self.budget_s is not None and self.per_step is not None  # after plan_from_probe
        spent = self.clock() - self.t0
        return (
            f"estimated from a probe of the model: about {1000 * self.per_step:.0f} ms/step and "
            f"{self.eval_seconds:.1f} s per evaluation; the {self.budget_s / 60:g} min budget ({spent:.0f} s "
            f"spent starting up) holds about {self.steps - self.start_step:,} steps (measured again after "
            f"{WARMUP + WINDOW})"
        )

    def time_is_up(self) -> bool:
        """With a budget: whether one more step and the final evaluation would end past the plan's
        target, at the latest known speed (one clock reading, no device sync)."""
        if self.budget_s is None or self.per_step is None:
            return False
        return self._left(self.clock()) < self.per_step

    def probe_estimate(self, probe_step_s: float) -> str:
        """Before the first step, without a budget: the warning of a run of hours, else one line of
        what the probe says the run will take."""
        warning = self.early_warning(probe_step_s)
        if warning:
            return warning
        remaining = (self.steps - self.start_step) * probe_step_s
        return (
            f"estimated from a probe of the model: about {1000 * probe_step_s:.0f} ms/step, so "
            f"{self.steps - self.start_step:,} steps take about {format_duration(remaining)} (plus evaluations; "
            f"measured after {WARMUP + WINDOW})"
        )

    def early_warning(self, probe_step_s: float) -> str | None:
        """Before the first step, from a probe of the model's cost: a run that would take hours says
        so at once (the measured projection comes only after WARMUP + WINDOW steps)."""
        remaining = (self.steps - self.start_step) * probe_step_s
        if remaining <= HOUR:
            return None
        return (
            f"estimated from a probe of the model: about {probe_step_s:.1f} s/step, so {self.steps - self.start_step:,}"
            f" steps take about {format_duration(remaining)}. {LONG_RUN_ADVICE}"
        )

    def projection(self) -> str:
        """One log line: the measured speed and how long the planned steps take."""
        assert self.step_seconds is not None  # called once the speed is measured
        remaining = (self.steps - self.start_step - WARMUP - WINDOW) * self.step_seconds
        text = (
            f"measured {1000 * self.step_seconds:.1f} ms/step: {self.steps:,} steps take about "
            f"{format_duration(remaining)} more (plus evaluations)"
        )
        if self.budget_s is None and remaining > HOUR:
            text += f". That is over an hour: {LONG_RUN_ADVICE}"
        return text


def format_duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}h{rest // 60:02d}m" if h else f"{rest // 60}m{rest % 60:02d}s"
