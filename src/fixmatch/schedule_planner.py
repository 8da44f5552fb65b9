"""Step timing during training: the projected duration of a run, and `--time-budget`, which fits the
number of steps (and the cosine's K) to a wall-clock budget from the measured speed.

The clock starts when `train` starts (data loading, model building, compilation and CUDA-graph
capture are all inside the budget). After WARMUP steps (compilation happens there) the next WINDOW
steps are timed and one evaluation is timed; the plan then aims to end at TARGET of the budget,
evaluations and checkpoints included. Halfway through the planned steps the plan is made once more
from the speed actually achieved since the first plan (evaluations amortised in it).

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
TARGET = 0.985  # aim a little under the budget: the end may only be early, by less than 5%
HOUR = 3600.0


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
    step_seconds: float | None = None
    eval_seconds: float = 0.0
    _mark: tuple[int, float] | None = None
    _replan_at: int | None = None
    notes: list[str] = field(default_factory=list)

    def due(self, step: int) -> bool:
        """Whether `observe` wants a synchronised clock reading after this step."""
        return step in (self.start_step + WARMUP, self.start_step + WARMUP + WINDOW) or step == self._replan_at

    def observe(self, step: int, time_eval: Callable[[], float]) -> int:
        """Called after step `step` when `due`; returns the (possibly new) total number of steps."""
        now = self.clock()
        if step == self.start_step + WARMUP:
            self._mark = (step, now)
        elif self._mark is not None and step == self._mark[0] + WINDOW and self.step_seconds is None:
            self.step_seconds = (now - self._mark[1]) / WINDOW
            if self.budget_s is not None:
                self.eval_seconds = time_eval()
                if self.work is None:
                    per_step = self.step_seconds + self.eval_seconds / self.eval_every
                    self.steps = self._fit(step, self.clock(), per_step)
                else:
                    per_unit = (now - self._mark[1]) / self.work(self._mark[0], step, self.steps)
                    self.steps = self._fit_work(step, self.clock(), per_unit, self.eval_seconds / self.eval_every)
                self.planned_steps = self.steps
                self._replan_at = step + max((self.steps - step) // 2, 1) if self.steps > step + 2 * WINDOW else None
                self._mark = (step, self.clock())
        elif step == self._replan_at and self._mark is not None:
            if self.work is None:
                per_step = (now - self._mark[1]) / (step - self._mark[0])  # evaluations amortised in it
                self.steps = self._fit(step, now, per_step)
            else:
                per_unit = (now - self._mark[1]) / self.work(self._mark[0], step, self.steps)
                self.steps = self._fit_work(step, now, per_unit, 0.0)
            self._replan_at = None
        return self.steps

    def _fit(self, step: int, now: float, per_step: float) -> int:
        """Most steps such that the rest (steps with their share of the evaluations, then the
        final evaluation) ends by TARGET of the budget."""
        assert self.budget_s is not None  # only planned with a budget
        left = self.t0 + TARGET * self.budget_s - now - self.eval_seconds
        return max(step + 1, step + math.floor(left / per_step))

    def _fit_work(self, step: int, now: float, per_unit: float, per_step: float) -> int:
        """The most steps S whose remaining images (under S's own curriculum) and per-step extras
        end by TARGET of the budget (binary search: the images up to S grow with S)."""
        assert self.budget_s is not None and self.work is not None
        work = self.work
        left = self.t0 + TARGET * self.budget_s - now - self.eval_seconds

        def fits(s: int) -> bool:
            return work(step, s, s) * per_unit + (s - step) * per_step <= left

        smallest = work(step, step + 1, 2**62) * per_unit + per_step  # a step at the curriculum's start: the cheapest
        lo, hi = step + 1, step + 1 + max(0, math.floor(left / smallest))
        while lo < hi:
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if fits(mid) else (lo, mid - 1)
        return lo

    def projection(self) -> str:
        """One log line: the measured speed and how long the planned steps take."""
        assert self.step_seconds is not None  # called once the speed is measured
        remaining = (self.steps - self.start_step - WARMUP - WINDOW) * self.step_seconds
        text = (
            f"measured {1000 * self.step_seconds:.1f} ms/step: {self.steps:,} steps take about "
            f"{format_duration(remaining)} more (plus evaluations)"
        )
        if self.budget_s is None and remaining > HOUR:
            text += (
                ". That is over an hour: --time-budget MINUTES fits the schedule to the time you have, "
                "or lower --steps, or pick a smaller --model"
            )
        return text


def format_duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}h{rest // 60:02d}m" if h else f"{rest // 60}m{rest % 60:02d}s"
