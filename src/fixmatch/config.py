"""Training configuration: one dataclass, filled from paper defaults, then the dataset's defaults,
then a YAML file, then command-line flags. `resolve` validates everything before any work starts."""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path

import yaml

from fixmatch.errors import UserError
from fixmatch.imaging.framing import MAX_INPUT_SIDE
from fixmatch.outputs import write_text_atomic

# The official FixMatch recipe (google-research/fixmatch). Fields left None in TrainConfig take
# these values unless the dataset's registry entry overrides them.
PAPER_DEFAULTS = dict(
    algorithm="fixmatch",
    baseline="none",
    model="wrn28_2",
    num_labels=4000,
    steps=2**20,
    eval_every=1024,
    batch_size=64,
    lr=0.03,
    weight_decay=5e-4,
    flip=True,
    ema_warmup=False,
    bn_momentum=0.001,
    freematch_clip_thresh=False,  # USB's FreeMatch configs: True for SVHN only
)

# Named presets: `--recipe NAME` sets these options unless the YAML file or a flag sets them too.
RECIPES = {
    # Measured on CPU digits, 5 seeds (RESULTS.md, "Time to accuracy"): FlexMatch reached 85 and 90%
    # soonest in seconds; Fast FixMatch's curriculum batch size forwards fewer images but, with steps
    # there bound by fixed costs, took longer, and its strong labeled augmentation slowed it further.
    "fast": dict(algorithm="flexmatch"),
}

TOGGLES = ("auto", "on", "off")
# The options that change only speed: the same function up to float reordering, and bf16 (--amp) within
# a tested tolerance (tests/test_engine.py). fixmatch.training.fast resolves them.
SPEED_SWITCHES = (
    "fast",
    "amp",
    "channels_last",
    "compile",
    "fused_optimizer",
    "cuda_graph",
    "max_autotune",
    "augment_stream",
)
INPUT_SCALINGS = ("official", "mean_std")
STRONG_AUGMENTS = ("ra", "cta")


def opt(default, help: str):
    """A TrainConfig field and its one description: `fixmatch train --help` is generated from it."""
    return field(default=default, metadata={"help": help})


@dataclass
class TrainConfig:
    # what to train on
    dataset: str = opt("digits", "dataset name (see `fixmatch datasets`)")
    data_dir: str | None = opt(None, "folder holding the dataset files (default: $FIXMATCH_DATA or ./data)")
    num_labels: int | None = opt(
        None,
        "labeled images, spread like the training set (official create_split; default: cifar10 4000, digits 20, ...)",
    )
    fold: int = opt(
        1,
        "label split: the official `<dataset>.<fold>@<labels>` (0 = first images of each class, "
        "1..5 the seeded shuffles; STL-10: its predefined folds 0..9)",
    )
    split_file: str | None = opt(None, "reuse the labeled indices of a split.json from an earlier run")
    svhn_extra: bool = opt(False, "add SVHN's 531k 'extra' images to the training set")
    fer_test: str = opt("private", "FER2013 test split: private (PrivateTest, default) or public")
    download: bool = opt(False, "fetch CIFAR/SVHN from the official URLs (checksums verified)")
    image_size: int | None = opt(
        None, "folders: resize images to this side (shorter side, then centre crop; default from the data)"
    )
    channels: int | None = opt(None, "folders: 1 (grey) or 3 (RGB); default 1 if every labeled image is grey")
    val_per_class: int = opt(0, "folders without test/: hold out this many labeled images per class for evaluation")
    # what to train
    recipe: str | None = opt(
        None, "a named preset of the options below that flags and the YAML file still override: fast (RESULTS.md)"
    )
    algorithm: str | None = opt(None, "fixmatch, flexmatch, freematch, softmatch or supervised (labeled loss only)")
    baseline: str | None = opt(
        None,
        "first train this algorithm on the same labels (e.g. supervised), then print both runs side by side "
        "(a --time-budget is split evenly); none: no baseline (the default; digits without --algorithm: supervised)",
    )
    model: str | None = opt(
        None,
        "network: wrn28_2, wrn28_8, wrn37_2 (the paper's), wrn10_1, cnn_small, cnn_medium "
        "(an unknown name lists the registry)",
    )
    # the FixMatch recipe
    steps: int | None = opt(None, "training steps (official: 2^20)")
    batch_size: int | None = opt(None, "labeled images per step, B (official 64)")
    mu: int = opt(7, "unlabeled images per labeled one (official 7)")
    unlabeled_batch_curriculum: str = opt(
        "off",
        "Fast FixMatch's curriculum batch size: off (official), or linear (the unlabeled ratio grows from "
        "--curriculum-min-mu to --mu in equal phases of the run)",
    )
    curriculum_min_mu: int = opt(1, "unlabeled ratio at the start of the curriculum batch size")
    labeled_strong: bool = opt(
        False, "Fast FixMatch's strong labeled augmentation: the labeled batch gets the strong view (official off)"
    )
    threshold: float = opt(0.95, "pseudo-label confidence threshold tau (official 0.95)")
    lambda_u: float = opt(1.0, "weight of the unlabeled loss (official 1)")
    # FlexMatch, FreeMatch and SoftMatch (defaults: their authors' USB configs; see the README)
    flexmatch_warmup: bool = opt(
        True, "FlexMatch: learning effects divided by the largest count, never-selected images included (reference on)"
    )
    ema_p: float = opt(0.999, "FreeMatch and SoftMatch: momentum of their EMAs of the predictions (reference 0.999)")
    lambda_e: float = opt(0.001, "FreeMatch: weight of the self-adaptive fairness loss (reference 0.001)")
    freematch_clip_thresh: bool | None = opt(
        None, "FreeMatch: clip the global threshold at 0.95 (reference: on for SVHN, off elsewhere)"
    )
    softmatch_n_sigma: float = opt(
        2.0, "SoftMatch: width of the truncated Gaussian, in standard deviations (reference 2)"
    )
    lr: float | None = opt(None, "base learning rate (official 0.03)")
    momentum: float = opt(0.9, "SGD momentum (official 0.9)")
    nesterov: bool = opt(True, "Nesterov momentum (official on)")
    weight_decay: float | None = opt(None, "on conv/linear weights only (official 5e-4; 1e-3 for cifar100)")
    lr_schedule_steps: int | None = opt(None, "K of the cosine lr*cos(7*pi*k/16K) (default: --steps)")
    ema_decay: float = opt(0.999, "EMA decay of the evaluated model (official 0.999)")
    ema_warmup: bool | None = opt(None, "EMA decay min(decay,(1+k)/(10+k)) for short schedules (not official)")
    bn_momentum: float | None = opt(None, "BatchNorm momentum (official 0.001)")
    flip: bool | None = opt(None, "random horizontal flip in the weak view")
    randaugment: str = opt("official", "strong augmentation policy: official, paper or usb")
    strong_augment: str = opt(
        "ra",
        "strong view: ra (RandAugment, default) or cta (CTAugment with learned bin weights, "
        "as the official FixMatch code)",
    )
    input_scaling: str = opt(
        "official", "official (pixels/127.5 - 1, as the official code) or mean_std (per-channel standardisation)"
    )
    # evaluation and bookkeeping
    eval_every: int | None = opt(None, "steps between evaluations/checkpoints (official 1024)")
    eval_batch_size: int = opt(1024, "images per forward when evaluating")
    median_of: int = opt(20, "final figure = median accuracy of the last N evaluations (official 20)")
    time_budget: float | None = opt(
        None,
        "minutes of wall clock: measure the step time, then fit --steps and the cosine to the budget "
        "(with --baseline: for the two runs together)",
    )
    seed: int = opt(0, "seed of the weights, the sampling and the augmentation (the labels come from --fold)")
    out: str | None = opt(None, "run directory (default runs/<dataset>-<labels>-<algorithm>-<time>)")
    overwrite: bool = opt(False, "replace the run that --out already holds (without it such a folder is refused)")
    progress: bool = opt(True, "show the progress bar (--no-progress prints one JSON line per evaluation)")
    # hardware and speed (each optimization a switch: auto = on for CUDA, off for CPU)
    device: str = opt("auto", "auto, cpu or cuda")
    threads: int = opt(1, "CPU threads for torch (default 1: on a shared 2-core machine more threads are slower)")
    fast: str = opt("auto", "auto (speedups on CUDA only), on (all, CPU too) or off (plain eager fp32)")
    amp: str = opt("auto", "bf16 autocast; BatchNorm parameters and statistics stay fp32 (auto/on/off)")
    channels_last: str = opt("auto", "channels-last memory format (auto/on/off)")
    compile: str = opt("auto", "torch.compile of normalize + model + loss (auto/on/off)")
    fused_optimizer: str = opt("auto", "fused SGD kernel instead of foreach (auto/on/off)")
    cuda_graph: str = opt(
        "off", "CUDA graphs of the augmentation and of forward+backward (compile mode=reduce-overhead)"
    )
    max_autotune: str = opt(
        "off", "torch.compile mode max-autotune: Inductor times Triton templates for convolutions (long compile)"
    )
    augment_stream: str = opt(
        "off", "augment the next step's batch on a second CUDA stream during this step's backward (RandAugment)"
    )
    # multi-GPU (torchrun): see the README's multi-GPU section
    sync_bn: bool = opt(
        False, "under torchrun: BatchNorm statistics over the global batch (default: per GPU, as the official code)"
    )
    dist_timeout: float = opt(
        10.0, "under torchrun: minutes a collective waits for a missing rank before the job fails"
    )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(kw_only=True)
class RunConfig(TrainConfig):
    """A TrainConfig after `resolve`: the fields the defaults fill have their final types."""

    algorithm: str
    baseline: str
    model: str
    steps: int
    batch_size: int
    lr: float
    weight_decay: float
    lr_schedule_steps: int
    ema_warmup: bool
    bn_momentum: float
    flip: bool
    freematch_clip_thresh: bool
    eval_every: int


FIELD_NAMES = {f.name for f in fields(TrainConfig)}


def from_dict(d: dict, base: TrainConfig | None = None) -> TrainConfig:
    """A config from explicit settings (YAML, flags): a `recipe` among them fills in the options
    they leave unset."""
    unknown = set(d) - FIELD_NAMES
    if unknown:
        raise UserError(f"unknown config keys: {', '.join(sorted(unknown))}")
    recipe = d.get("recipe")
    if recipe is not None:
        if recipe not in RECIPES:
            raise UserError(f"unknown recipe {recipe!r}; choose from {', '.join(RECIPES)}")
        d = {**RECIPES[recipe], **d}
    return dataclasses.replace(base or TrainConfig(), **d)


def load_yaml(path) -> dict:
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except FileNotFoundError:
        raise UserError(f"config file not found: {path}") from None
    except yaml.YAMLError as e:
        raise UserError(f"config file {path} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise UserError(f"config file {path} must hold a mapping of option: value")
    return data


def save_yaml(cfg: TrainConfig, path) -> None:
    write_text_atomic(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def resolve(cfg: TrainConfig) -> RunConfig:
    """Fill unset fields (paper defaults, overridden by the dataset's), then validate."""
    from fixmatch.data import get_spec  # deferred: torch; the CLI's --help is built from this module

    spec = get_spec(cfg.dataset)
    values = cfg.to_dict()
    if values["algorithm"] == "both":  # the name of the comparison before --baseline existed
        values.update(algorithm="fixmatch", baseline="supervised")
    if values["baseline"] is None and values["algorithm"] is not None:
        values["baseline"] = "none"  # a dataset's default baseline is for its demo: a chosen algorithm runs alone
    for key, paper_value in PAPER_DEFAULTS.items():
        if values[key] is None:
            values[key] = spec.defaults.get(key, paper_value)
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
    # deferred: the registries load torch; the CLI's --help is built from this module
    from fixmatch.algorithms import ALGORITHMS
    from fixmatch.algorithms.curriculum import CURRICULA
    from fixmatch.augment.randaugment import POLICIES
    from fixmatch.models import MODELS

    def need(ok: bool, msg: str):
        if not ok:
            raise UserError(msg)

    need(cfg.algorithm in ALGORITHMS, f"unknown algorithm {cfg.algorithm!r}; choose from {', '.join(ALGORITHMS)}")
    need(
        cfg.baseline in (*ALGORITHMS, "none"),
        f"unknown baseline {cfg.baseline!r}; choose from {', '.join([*ALGORITHMS, 'none'])}",
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
        "threads",
    ):
        value = getattr(cfg, key)
        if key == "num_labels" and value is None:  # a dataset whose default is "every labeled image"
            continue
        need(isinstance(value, int) and value > 0, f"{key} must be a positive integer, got {value!r}")
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
    need(0 < cfg.threshold <= 1, f"threshold (tau) must lie in (0, 1], got {cfg.threshold}")
    need(cfg.lambda_u >= 0, f"lambda_u must be >= 0, got {cfg.lambda_u}")
    need(cfg.lambda_e >= 0, f"lambda_e must be >= 0, got {cfg.lambda_e}")
    need(0 <= cfg.ema_p < 1, f"ema_p must lie in [0, 1), got {cfg.ema_p}")
    need(cfg.softmatch_n_sigma > 0, f"softmatch_n_sigma must be > 0, got {cfg.softmatch_n_sigma}")
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
