"""`--time-budget` on a folders dataset chooses the image size, the model and the algorithm from the
measured step cost (here a table of costs stands for the machine); the user's own flags always win."""

from __future__ import annotations

import math
import time

import pytest
import torch
from image_folders import small_folder

from fixmatch import workflows
from fixmatch.config import RECIPES, TrainConfig
from fixmatch.training import budget_choice
from fixmatch.training.budget_choice import (
    LADDER,
    STEPS_FOR_A_LARGER_MODEL,
    STEPS_WORTH_HAVING,
    SUPERVISED_FROM,
    TRAINING_SHARE,
    Probe,
    choose,
    climb,
    pick,
    rungs,
)
from fixmatch.training.resolve import resolve

BUDGET_MIN = 1.0
SHARE_S = TRAINING_SHARE * BUDGET_MIN * 60
FIT_S = SHARE_S / STEPS_WORTH_HAVING  # the dearest step of the first network that still fits the budget


def fit_s(model: str) -> float:
    """The dearest step of `model` that still fits: a larger network than the ladder's first needs more."""
    return FIT_S if model == LADDER[0][0] else SHARE_S / STEPS_FOR_A_LARGER_MODEL


def folders_config(root, **options) -> TrainConfig:
    return TrainConfig(dataset="folders", data_dir=str(root), time_budget=BUDGET_MIN, threads=1, **options)


class Costs:
    """A machine as a table: rungs up to `fitting` (by index in LADDER) cost half of what fits, the
    rest twice; every probe is recorded."""

    def __init__(self, fitting: int):
        self.fitting, self.asked = fitting, []

    def __call__(self, model: str, side: int) -> float:
        self.asked.append((model, side))
        index = next((i for i, (m, s) in enumerate(LADDER) if m == model and s == side), len(LADDER))
        return fit_s(model) / 2 if index <= self.fitting else fit_s(model) * 2


def run_choice(root, costs, log=None, **options):
    raw = folders_config(root, **options)
    lines = [] if log is None else log
    return choose(raw, time.perf_counter(), lines.append, step_cost=costs), lines


@pytest.fixture
def folder(tmp_path):
    return small_folder(tmp_path / "data", side=64)  # a median side of 64: every rung of the ladder applies


def test_rungs_cap_sides_at_the_images_own_and_keep_what_the_user_fixed():
    assert rungs(64, None, None) == list(LADDER)
    assert rungs(20, None, None) == [("cnn_small", 16), ("cnn_small", 20), ("cnn_medium", 20), ("wrn28_2", 20)]
    assert rungs(4, None, None) == [("cnn_small", 8), ("cnn_medium", 8), ("wrn28_2", 8)]  # never below 8 px
    assert rungs(64, 40, None) == [("cnn_small", 40), ("cnn_medium", 40), ("wrn28_2", 40)]
    assert rungs(64, None, "cnn_medium") == [("cnn_medium", 32), ("cnn_medium", 48)]
    assert rungs(64, None, "wrn10_1") == [("wrn10_1", 32)]  # a model off the ladder: one rung


def test_the_climb_stops_at_the_first_rung_that_does_not_fit_and_picks_the_one_below():
    costs = Costs(fitting=3)
    probes = climb(list(LADDER), TRAINING_SHARE * 60, costs)
    assert costs.asked == list(LADDER[:5])  # the fifth does not fit: nothing dearer is probed
    assert [p.fits for p in probes] == [True] * 4 + [False]
    assert (pick(probes).model, pick(probes).size) == LADDER[3]


def test_when_nothing_fits_the_cheapest_is_picked():
    probes = [Probe("cnn_small", 16, 1.0, 10, STEPS_WORTH_HAVING)]
    assert pick(probes) is probes[0]


def test_a_larger_network_must_fit_the_steps_the_small_one_had():
    """cnn_medium at a cost that fits the folders schedule several times, but not
    STEPS_FOR_A_LARGER_MODEL steps: the climb stays with cnn_small."""
    share = TRAINING_SHARE * 60
    probes = climb(
        list(LADDER), share, lambda m, s: share / (STEPS_FOR_A_LARGER_MODEL / 2 if m != "cnn_small" else 10**5)
    )
    assert [(p.model, p.fits) for p in probes][-2:] == [("cnn_small", True), ("cnn_medium", False)]
    assert probes[-1].steps >= 4 * STEPS_WORTH_HAVING and pick(probes).model == "cnn_small"


def test_choose_fills_size_model_and_algorithm_and_says_why(folder):
    cfg, lines = run_choice(folder, Costs(fitting=2))
    assert (cfg.model, cfg.image_size, cfg.algorithm) == ("cnn_small", 32, RECIPES["fast"]["algorithm"])
    said = "\n".join(lines)
    assert "cnn_small at 32 px" in said and "cnn_medium at 32 px" in said  # the pick and the rung above it
    assert "chose model cnn_small, image size 32, algorithm flexmatch" in said
    assert "time-to-accuracy" in said


def test_the_users_flags_win(folder):
    costs = Costs(fitting=len(LADDER))
    cfg, lines = run_choice(folder, costs, model="cnn_medium", algorithm="fixmatch")
    assert (cfg.model, cfg.algorithm, cfg.image_size) == ("cnn_medium", "fixmatch", 48)
    assert {m for m, _ in costs.asked} == {"cnn_medium"}
    assert "kept yours: --model cnn_medium, --algorithm fixmatch" in "\n".join(lines)

    costs = Costs(fitting=len(LADDER))
    cfg, _ = run_choice(folder, costs, image_size=24)
    assert cfg.image_size == 24 and {s for _, s in costs.asked} == {24}


def test_size_and_model_given_leave_only_the_algorithm_and_probe_nothing(folder):
    costs = Costs(fitting=0)
    cfg, _ = run_choice(folder, costs, model="cnn_small", image_size=16)
    assert costs.asked == [] and cfg.algorithm == RECIPES["fast"]["algorithm"]


def test_a_recipe_counts_as_the_users_choice_of_algorithm(folder):
    raw = TrainConfig(dataset="folders", data_dir=str(folder), time_budget=BUDGET_MIN, algorithm="softmatch")
    cfg = choose(raw, time.perf_counter(), lambda _: None, step_cost=Costs(fitting=1))
    assert cfg.algorithm == "softmatch"


def test_a_baseline_halves_the_time_each_run_has(folder):
    whole, _ = run_choice(folder, Costs(fitting=2))
    split, _ = run_choice(
        folder, lambda m, s: FIT_S * 0.75 if (m, s) != LADDER[0] else FIT_S / 4, baseline="supervised"
    )
    assert (whole.model, whole.image_size) == LADDER[2]
    assert (split.model, split.image_size) == LADDER[0]  # 0.75 of what fits the whole budget: not half of it


@pytest.mark.parametrize("options", [dict(time_budget=None), dict(dataset="digits")])
def test_no_choice_without_a_budget_or_on_a_registered_dataset(folder, options):
    raw = TrainConfig(**{**dict(dataset="folders", data_dir=str(folder), time_budget=BUDGET_MIN), **options})

    def never(*_):
        raise AssertionError("probed")

    assert choose(raw, time.perf_counter(), print, step_cost=never) == raw


def test_many_labels_per_class_choose_the_labeled_loss_and_probe_its_smaller_step(tmp_path, monkeypatch):
    asked = []
    monkeypatch.setattr(budget_choice, "probe_cost", lambda *a: asked.append(a[-1]) or Costs(fitting=0))
    few = folders_config(small_folder(tmp_path / "few", per_class=SUPERVISED_FROM - 1, unlabeled=0))
    many = folders_config(small_folder(tmp_path / "many", per_class=SUPERVISED_FROM, unlabeled=0))
    assert choose(few, time.perf_counter(), print).algorithm == RECIPES["fast"]["algorithm"]
    lines: list[str] = []
    assert choose(many, time.perf_counter(), lines.append).algorithm == "supervised"
    run = resolve(many)
    assert asked == [run.batch_size * (1 + 2 * run.mu), run.batch_size]  # the supervised step: its labeled batch
    assert f"{SUPERVISED_FROM} labeled images per class" in lines[-1]
    compared = folders_config(tmp_path / "many", baseline="supervised")  # the user's baseline is not the pick
    assert choose(compared, time.perf_counter(), print).algorithm == RECIPES["fast"]["algorithm"]
    held_out = folders_config(tmp_path / "many", val_per_class=1)  # the held-out images are not training labels
    assert choose(held_out, time.perf_counter(), print).algorithm != "supervised"


def test_the_choice_reaches_the_run(folder, monkeypatch):
    """`fixmatch.train` (and so the CLI) trains what was chosen; the clock it passes on is the one the
    probes counted against."""
    seen = {}
    monkeypatch.setattr(budget_choice, "probe_cost", lambda *a: Costs(fitting=1))
    monkeypatch.setattr(workflows, "train_run", lambda cfg, log, started: seen.update(cfg=cfg, started=started) or {})
    started = time.perf_counter() - 1.0
    workflows.train(
        dict(dataset="folders", data_dir=str(folder), time_budget=BUDGET_MIN, threads=1), None, None, print, started
    )
    assert (seen["cfg"].model, seen["cfg"].image_size) == LADDER[1] and seen["started"] == started


def test_the_real_probe_measures_a_positive_cost_per_step():
    cost = budget_choice.probe_cost(torch.device("cpu"), channels=1, classes=3, step_images=80)
    seconds = cost("cnn_small", 16)
    assert 0 < seconds < math.inf


def test_the_probed_run_picks_a_rung_of_the_ladder(folder):
    raw = folders_config(folder)
    lines: list[str] = []
    cfg = choose(raw, time.perf_counter(), lines.append)
    assert (cfg.model, cfg.image_size) in LADDER and "ms/step" in lines[0]


def test_the_time_already_spent_counts(folder):
    """The budget runs from the command's start: with 59 of its 60 s gone, only the cheapest rung is left."""
    raw = folders_config(folder)
    cfg = choose(raw, time.perf_counter() - 59, lambda _: None, step_cost=Costs(fitting=len(LADDER)))
    assert (cfg.model, cfg.image_size) == LADDER[0]


def test_no_choice_under_torchrun(folder, monkeypatch):
    """Each rank would probe its own speed and might choose another network: the defaults stand."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    raw = folders_config(folder)
    assert choose(raw, time.perf_counter(), print, step_cost=Costs(fitting=len(LADDER))) == raw
