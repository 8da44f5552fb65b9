"""A config made ready to run: unset options filled (the dataset's defaults from its registry entry,
then the paper's), then every value checked against its type, its range and the registries (the
algorithms, models, datasets, augmentation policies), before any work starts."""

from __future__ import annotations

import math
import typing

from fixmatch.algorithms.options import ALGORITHM_NAMES, ALGORITHM_OPTIONS
from fixmatch.augment.randaugment import POLICIES
from fixmatch.config import (
    INPUT_SCALINGS,
    PAPER_DEFAULTS,
    RECIPES,
    SPEED_SWITCHES,
    STRONG_AUGMENTS,
    TOGGLES,
    RunConfig,
    TrainConfig,
)
from fixmatch.cpus import AUTO as AUTO_THREADS
from fixmatch.cpus import is_thread_setting
from fixmatch.data import get_spec
from fixmatch.errors import UserError
from fixmatch.imaging.framing import MAX_INPUT_SIDE
from fixmatch.models import MODELS
from fixmatch.training.curriculum import CURRICULA


def resolve(cfg: TrainConfig) -> RunConfig:
    """Fill unset fields (the dataset's defaults, then the paper's, then an algorithm option's own
    fallback), then validate."""
    spec = get_spec(cfg.dataset)
    values = cfg.to_dict()
    if values["baseline"] is None and values["algorithm"] is not None:
        values["baseline"] = "none"  # a dataset's default baseline is for its demo: a chosen algorithm runs alone
    fallbacks = {**{k: s.fallback for k, s in ALGORITHM_OPTIONS.items()}, **PAPER_DEFAULTS}
    for key, fallback in fallbacks.items():
        if values[key] is None:
            values[key] = spec.defaults.get(key, fallback)
    if values["lr_schedule_steps"] is None:
        values["lr_schedule_steps"] = values["steps"]
    check_types(values)
    run = RunConfig(**values)
    validate(run)
    return run


def check_types(values: dict) -> None:
    """Each value has its field's type (a YAML file can hold anything): one clear error otherwise."""
    hints = typing.get_type_hints(TrainConfig)
    for key, value in values.items():
        allowed = typing.get_args(hints[key]) or (hints[key],)
        if value is None and type(None) in allowed:
            continue
        ok = any(
            isinstance(value, t) and not (t in (int, float) and isinstance(value, bool))
            for t in allowed
            if t is not type(None)
        )
        ok = ok or (float in allowed and isinstance(value, int) and not isinstance(value, bool))
        if not ok:
            names = " or ".join(t.__name__ for t in allowed if t is not type(None))
            raise UserError(f"{key} must be {names}, got {value!r}")
        check_bounds(key, value, float in allowed)


FLOAT32_MAX = 3.4028234663852886e38  # torch computes in float32: a larger option becomes inf there
INT64 = 2**63  # torch and numpy hold integers (seeds, counts) in 64 bits


def check_bounds(key: str, value, is_float: bool) -> None:
    """One rule for every numeric option, wherever it is declared: a float is finite and within
    float32 (inf, nan or 1e308 would train to NaN or overflow inside torch), an integer fits in 64 bits."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    if is_float:
        try:
            ok = math.isfinite(float(value)) and abs(float(value)) <= FLOAT32_MAX
        except OverflowError:  # an int too large for a float
            ok = False
        if not ok:
            raise UserError(f"{key} must be a finite number of at most {FLOAT32_MAX:.3g} in size, got {value!r}")
    elif not -INT64 <= value < INT64:
        raise UserError(f"{key} must be an integer below 2**63 in size, got {value!r}")


def validate(cfg: RunConfig) -> None:
    """Every value checked before any work starts; the first problem is one UserError."""

    def need(ok: bool, msg: str):
        if not ok:
            raise UserError(msg)

    need(
        cfg.algorithm in ALGORITHM_NAMES,
        f"unknown algorithm {cfg.algorithm!r}; choose from {', '.join(ALGORITHM_NAMES)}",
    )
    need(
        cfg.baseline in (*ALGORITHM_NAMES, "none"),
        f"unknown baseline {cfg.baseline!r}; choose from {', '.join([*ALGORITHM_NAMES, 'none'])}",
    )
    need(cfg.model in MODELS, f"unknown model {cfg.model!r}; available: {', '.join(sorted(MODELS))}")
    for key in (
        "steps",
        "batch_size",
        "eval_every",
        "eval_batch_size",
        "num_labels",
        "median_of",
        "lr_schedule_steps",
    ):
        value = getattr(cfg, key)
        if key == "num_labels" and value is None:  # a dataset whose default is "every labeled image"
            continue
        need(isinstance(value, int) and value > 0, f"{key} must be a positive integer, got {value!r}")
    need(is_thread_setting(cfg.threads), f"threads must be {AUTO_THREADS} or a positive integer, got {cfg.threads!r}")
    need(isinstance(cfg.mu, int) and cfg.mu >= 0, f"mu must be a non-negative integer, got {cfg.mu!r}")
    need(
        cfg.mu > 0 or cfg.algorithm == "supervised",
        "mu=0 leaves FixMatch no unlabeled images; give mu >= 1, or --algorithm supervised for the labeled loss alone",
    )
    need(
        cfg.recipe is None or cfg.recipe in RECIPES,
        f"unknown recipe {cfg.recipe!r}; choose from {', '.join(RECIPES)}",
    )
    need(
        cfg.unlabeled_batch_curriculum in CURRICULA,
        f"unknown unlabeled_batch_curriculum {cfg.unlabeled_batch_curriculum!r}; choose from {', '.join(CURRICULA)}",
    )
    need(
        isinstance(cfg.curriculum_min_mu, int) and 1 <= cfg.curriculum_min_mu <= max(cfg.mu, 1),
        f"curriculum_min_mu must be an integer from 1 to mu ({cfg.mu}), got {cfg.curriculum_min_mu!r}",
    )
    need(
        not (cfg.labeled_strong and cfg.strong_augment == "cta"),
        "labeled_strong works with RandAugment only: CTAugment probes the labeled images' weak views",
    )
    need(
        cfg.lr_schedule_steps * 8 >= cfg.steps * 7,
        "lr_schedule_steps must be at least 7/8 of steps (beyond that the official cosine turns negative)",
    )
    for name, spec in ALGORITHM_OPTIONS.items():  # each algorithm's options, all of them checked
        problem = spec.check(getattr(cfg, name))
        need(problem is None, str(problem))
    need(cfg.lr > 0 and math.isfinite(cfg.lr), f"lr must be a positive number, got {cfg.lr}")
    need(0 <= cfg.momentum < 1, f"momentum must lie in [0, 1), got {cfg.momentum}")
    need(cfg.weight_decay >= 0, f"weight_decay must be >= 0, got {cfg.weight_decay}")
    need(0 < cfg.bn_momentum <= 1, f"bn_momentum must lie in (0, 1], got {cfg.bn_momentum}")
    need(0 <= cfg.ema_decay < 1, f"ema_decay must lie in [0, 1), got {cfg.ema_decay}")
    need(0 <= cfg.fold <= 9, f"fold must be 0..9 (official splits 0..5; STL-10's folds 0..9), got {cfg.fold}")
    need(
        cfg.input_scaling in INPUT_SCALINGS,
        f"input_scaling must be one of {', '.join(INPUT_SCALINGS)}, got {cfg.input_scaling!r}",
    )
    need(
        cfg.time_budget is None or (cfg.time_budget > 0 and math.isfinite(cfg.time_budget)),
        f"time_budget must be a positive number of minutes, got {cfg.time_budget}",
    )
    need(cfg.val_per_class >= 0, f"val_per_class must be >= 0, got {cfg.val_per_class}")
    need(
        cfg.image_size is None or 8 <= cfg.image_size <= MAX_INPUT_SIDE,
        f"image_size must be 8 to {MAX_INPUT_SIDE} (what predict and serve accept), got {cfg.image_size}",
    )
    need(cfg.channels in (None, 1, 3), f"channels must be 1 or 3, got {cfg.channels}")
    need(
        cfg.randaugment in POLICIES,
        f"unknown randaugment policy {cfg.randaugment!r}; choose from {', '.join(POLICIES)}",
    )
    need(
        cfg.strong_augment in STRONG_AUGMENTS,
        f"unknown strong augmentation {cfg.strong_augment!r}; choose from {', '.join(STRONG_AUGMENTS)}",
    )
    need(cfg.fer_test in ("private", "public"), f"fer_test must be private or public, got {cfg.fer_test!r}")
    need(
        cfg.device in ("auto", "cpu", "cuda") or cfg.device.startswith("cuda:"),
        f"device must be auto, cpu or cuda[:N], got {cfg.device!r}",
    )
    need(cfg.dist_timeout > 0, f"dist_timeout must be a positive number of minutes, got {cfg.dist_timeout}")
    for key in SPEED_SWITCHES:
        need(getattr(cfg, key) in TOGGLES, f"{key} must be one of {', '.join(TOGGLES)}, got {getattr(cfg, key)!r}")
    need(
        not (cfg.augment_stream == "on" and cfg.strong_augment == "cta"),
        "augment_stream works with RandAugment only: CTAugment's next views depend on this step's rate update",
    )
