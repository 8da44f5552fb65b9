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


@dataclass
class TrainConfig:
    # what to train on
    dataset: str = "digits"
    data_dir: str | None = None
    num_labels: int | None = None
    fold: int = 1
    split_file: str | None = None
    svhn_extra: bool = False
    fer_test: str = "private"
    download: bool = False
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
    # evaluation and bookkeeping
    eval_every: int | None = None
    eval_batch_size: int = 1024
    median_of: int = 20  # the final figure is the median of the last `median_of` evaluations
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
        need(isinstance(value, int) and value > 0, f"{key} must be a positive integer, got {value!r}")
    need(isinstance(cfg.mu, int) and cfg.mu >= 0, f"mu must be a non-negative integer, got {cfg.mu!r}")
    need(cfg.lr_schedule_steps * 8 >= cfg.steps * 7, "lr_schedule_steps must be at least 7/8 of steps "
         "(beyond that the official cosine turns negative)")
    need(0 < cfg.threshold <= 1, f"threshold (tau) must lie in (0, 1], got {cfg.threshold}")
    need(cfg.lambda_u >= 0, f"lambda_u must be >= 0, got {cfg.lambda_u}")
    need(cfg.lr > 0 and math.isfinite(cfg.lr), f"lr must be a positive number, got {cfg.lr}")
    need(0 <= cfg.momentum < 1, f"momentum must lie in [0, 1), got {cfg.momentum}")
    need(cfg.weight_decay >= 0, f"weight_decay must be >= 0, got {cfg.weight_decay}")
    need(0 < cfg.bn_momentum <= 1, f"bn_momentum must lie in (0, 1], got {cfg.bn_momentum}")
    need(0 <= cfg.ema_decay < 1, f"ema_decay must lie in [0, 1), got {cfg.ema_decay}")
    need(1 <= cfg.fold <= 5, f"fold must be 1..5, got {cfg.fold}")
    need(cfg.randaugment in POLICIES, f"unknown randaugment policy {cfg.randaugment!r}; "
         f"choose from {', '.join(POLICIES)}")
    need(cfg.fer_test in ("private", "public"), f"fer_test must be private or public, got {cfg.fer_test!r}")
    need(cfg.device in ("auto", "cpu", "cuda") or cfg.device.startswith("cuda:"),
         f"device must be auto, cpu or cuda[:N], got {cfg.device!r}")
    need(cfg.dist_timeout > 0, f"dist_timeout must be a positive number of minutes, got {cfg.dist_timeout}")
    for key in ("fast", "amp", "channels_last", "compile", "fused_optimizer", "cuda_graph"):
        need(getattr(cfg, key) in TOGGLES, f"{key} must be one of {', '.join(TOGGLES)}, got {getattr(cfg, key)!r}")
