"""Step timing during training: the projected duration of a run, and `--time-budget`, which fits the
number of steps (and the cosine's K) to a wall-clock budget from the measured speed.

The clock starts when `train` starts (data loading, model building, compilation and CUDA-graph
capture are all inside the budget). After WARMUP steps (compilation happens there) the next WINDOW
steps are timed and one evaluation is timed; the plan then aims to end at TARGET of the budget,
evaluations and checkpoints included. The plan is then made again each time half of the remaining
steps are done, from the speed of the steps since the last plan (evaluations timed apart, as the loop
reports them), until fewer than MIN_REPLAN steps remain: a machine that slows down or speeds up late
in the run is still followed, and the last correction comes a few steps before the end (log2 of the
run's steps re-plans in all, each one clock reading).

When steps differ in size (--unlabeled-batch-curriculum), `work(first, last, steps)` gives the images
of steps first..last-1 in a run of `steps` steps: the speed is measured per image, and the plan is
the most steps whose images (under that plan's own curriculum) fit the time left.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

WARMUP, WINDOW = 5, 20
MIN_REPLAN = 4  # re-plan while at least this many steps remain
TARGET = 0.985  # aim a little under the budget: the end may only be early, by less than 5%
HOUR = 3600.0
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
    eval_seconds: float = 0.0  # the latest evaluation's cost, checkpoint included
    replans: int = 0
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
            self.step_seconds = self._interval_seconds(now) / WINDOW
            if self.budget_s is not None:
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
