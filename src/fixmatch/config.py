"""Training configuration: one dataclass, filled from paper defaults, then the dataset's defaults,
then a YAML file, then command-line flags. `resolve` validates everything before any work starts."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, fields
from pathlib import Path

import yaml

from fixmatch.errors import UserError

# The official FixMatch recipe (google-research/fixmatch). Fields left None in TrainConfig take
# these values unless the dataset's registry entry overrides them.
PAPER_DEFAULTS = dict(
    algorithm="fixmatch", model="wrn28_2", num_labels=4000, steps=2**20, eval_every=1024,
    batch_size=64, lr=0.03, weight_decay=5e-4, flip=True, ema_warmup=False, bn_momentum=0.001,
)

TOGGLES = ("auto", "on", "off")
INPUT_SCALINGS = ("official", "mean_std")
STRONG_AUGMENTS = ("ra", "cta")


@dataclass
class TrainConfig:
    # what to train on
    dataset: str = "digits"
    data_dir: str | None = None
    num_labels: int | None = None
    fold: int = 1  # the official split `<dataset>.<fold>@<num_labels>` (0 = no shuffle)
    split_file: str | None = None
    svhn_extra: bool = False
    fer_test: str = "private"
    download: bool = False
    image_size: int | None = None  # folders: side the images are resized to (default from the data)
    channels: int | None = None  # folders: 1 or 3 (default: 1 if every labeled image is grey)
    val_per_class: int = 0  # folders without test/: labeled images per class held out for evaluation
    # what to train
    algorithm: str | None = None  # fixmatch | supervised | both (both: supervised baseline, then fixmatch)
    model: str | None = None
    # the FixMatch recipe
    steps: int | None = None
    batch_size: int | None = None
    mu: int = 7
    threshold: float = 0.95
    lambda_u: float = 1.0
    lr: float | None = None
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float | None = None
    lr_schedule_steps: int | None = None  # K in lr*cos(7*pi*k/(16*K)); None = steps
    ema_decay: float = 0.999
    ema_warmup: bool | None = None  # decay = min(ema_decay, (1+k)/(10+k)); off in the paper recipe
    bn_momentum: float | None = None  # official 0.001 (TF decay 0.999); short schedules need more
    flip: bool | None = None  # random horizontal flip in the weak view (not for SVHN/digits)
    randaugment: str = "official"  # official | paper | usb
    strong_augment: str = "ra"  # ra (RandAugment) | cta (CTAugment, fixmatch.ctaugment)
    input_scaling: str = "official"  # official: x/127.5 - 1; mean_std: per-channel standardisation
    # evaluation and bookkeeping
    eval_every: int | None = None
    eval_batch_size: int = 1024
    median_of: int = 20  # the final figure is the median of the last `median_of` evaluations
    time_budget: float | None = None  # minutes: fit steps and the cosine to this wall-clock budget
    seed: int = 0
    out: str | None = None
    progress: bool = True
    # hardware and speed (each optimization a switch: auto = on for CUDA, off for CPU)
    device: str = "auto"
    threads: int = 1
    fast: str = "auto"  # off = plain eager fp32 everywhere; on = every optimization, also on CPU
    amp: str = "auto"  # bf16 autocast (BatchNorm stays fp32)
    channels_last: str = "auto"
    compile: str = "auto"
    fused_optimizer: str = "auto"
    cuda_graph: str = "off"  # torch.compile mode="reduce-overhead" (CUDA graphs of fwd+bwd)
    # multi-GPU (torchrun): see docs/multi_gpu.md
    sync_bn: bool = False  # BN statistics over the global batch (default: per rank, like the official towers)
    dist_timeout: float = 10.0  # minutes a collective may wait for a missing rank before the job fails

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


FIELD_NAMES = {f.name for f in fields(TrainConfig)}


def from_dict(d: dict, base: TrainConfig | None = None) -> TrainConfig:
    unknown = set(d) - FIELD_NAMES
    if unknown:
        raise UserError(f"unknown config keys: {', '.join(sorted(unknown))}")
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
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def resolve(cfg: TrainConfig) -> TrainConfig:
    """Fill unset fields (paper defaults, overridden by the dataset's), then validate."""
    from fixmatch.data import get_spec

    spec = get_spec(cfg.dataset)
    filled = {}
    for key, paper_value in PAPER_DEFAULTS.items():
        if getattr(cfg, key) is None:
            filled[key] = spec.defaults.get(key, paper_value)
    cfg = dataclasses.replace(cfg, **filled)
    if cfg.lr_schedule_steps is None:
        cfg = dataclasses.replace(cfg, lr_schedule_steps=cfg.steps)
    validate(cfg)
    return cfg


def validate(cfg: TrainConfig) -> None:
    from fixmatch.algorithms import ALGORITHMS
    from fixmatch.augment import POLICIES
    from fixmatch.models import MODELS

    def need(ok: bool, msg: str):
        if not ok:
            raise UserError(msg)

    need(cfg.algorithm in (*ALGORITHMS, "both"), f"unknown algorithm {cfg.algorithm!r}; "
         f"choose from {', '.join([*ALGORITHMS, 'both'])}")
    need(cfg.model in MODELS, f"unknown model {cfg.model!r}; available: {', '.join(sorted(MODELS))}")
    for key in ("steps", "batch_size", "eval_every", "eval_batch_size", "num_labels", "median_of",
                "lr_schedule_steps", "threads"):
        value = getattr(cfg, key)
        if key == "num_labels" and value is None:  # a dataset whose default is "every labeled image"
            continue
        need(isinstance(value, int) and value > 0, f"{key} must be a positive integer, got {value!r}")
    need(isinstance(cfg.mu, int) and cfg.mu >= 0, f"mu must be a non-negative integer, got {cfg.mu!r}")
    need(cfg.mu > 0 or cfg.algorithm == "supervised", "mu=0 leaves FixMatch no unlabeled images; give mu >= 1, "
         "or --algorithm supervised for the labeled loss alone")
    need(cfg.lr_schedule_steps * 8 >= cfg.steps * 7, "lr_schedule_steps must be at least 7/8 of steps "
         "(beyond that the official cosine turns negative)")
    need(0 < cfg.threshold <= 1, f"threshold (tau) must lie in (0, 1], got {cfg.threshold}")
    need(cfg.lambda_u >= 0, f"lambda_u must be >= 0, got {cfg.lambda_u}")
    need(cfg.lr > 0 and math.isfinite(cfg.lr), f"lr must be a positive number, got {cfg.lr}")
    need(0 <= cfg.momentum < 1, f"momentum must lie in [0, 1), got {cfg.momentum}")
    need(cfg.weight_decay >= 0, f"weight_decay must be >= 0, got {cfg.weight_decay}")
    need(0 < cfg.bn_momentum <= 1, f"bn_momentum must lie in (0, 1], got {cfg.bn_momentum}")
    need(0 <= cfg.ema_decay < 1, f"ema_decay must lie in [0, 1), got {cfg.ema_decay}")
    need(0 <= cfg.fold <= 9, f"fold must be 0..9 (official splits 0..5; STL-10's folds 0..9), got {cfg.fold}")
    need(cfg.input_scaling in INPUT_SCALINGS, f"input_scaling must be one of {', '.join(INPUT_SCALINGS)}, "
         f"got {cfg.input_scaling!r}")
    need(cfg.time_budget is None or (cfg.time_budget > 0 and math.isfinite(cfg.time_budget)),
         f"time_budget must be a positive number of minutes, got {cfg.time_budget}")
    need(cfg.val_per_class >= 0, f"val_per_class must be >= 0, got {cfg.val_per_class}")
    need(cfg.image_size is None or cfg.image_size >= 8, f"image_size must be at least 8, got {cfg.image_size}")
    need(cfg.channels in (None, 1, 3), f"channels must be 1 or 3, got {cfg.channels}")
    need(cfg.randaugment in POLICIES, f"unknown randaugment policy {cfg.randaugment!r}; "
         f"choose from {', '.join(POLICIES)}")
    need(cfg.strong_augment in STRONG_AUGMENTS, f"unknown strong augmentation {cfg.strong_augment!r}; "
         f"choose from {', '.join(STRONG_AUGMENTS)}")
    need(cfg.fer_test in ("private", "public"), f"fer_test must be private or public, got {cfg.fer_test!r}")
    need(cfg.device in ("auto", "cpu", "cuda") or cfg.device.startswith("cuda:"),
         f"device must be auto, cpu or cuda[:N], got {cfg.device!r}")
    need(cfg.dist_timeout > 0, f"dist_timeout must be a positive number of minutes, got {cfg.dist_timeout}")
    for key in ("fast", "amp", "channels_last", "compile", "fused_optimizer", "cuda_graph"):
        need(getattr(cfg, key) in TOGGLES, f"{key} must be one of {', '.join(TOGGLES)}, got {getattr(cfg, key)!r}")
