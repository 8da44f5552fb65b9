"""Every training option, its default and its one description: the options every run has here, each
algorithm's own in its file (fixmatch.algorithms.options reads them), merged into one TrainConfig
that the YAML file, the flags and `fixmatch train --help` are made from. Unset options are filled
(paper defaults, then the dataset's) and every value checked by fixmatch.training.resolve."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from fixmatch.algorithms.options import ALGORITHM_NAMES, ALGORITHM_OPTIONS
from fixmatch.cpus import AUTO as AUTO_THREADS
from fixmatch.cpus import THREADS_HELP
from fixmatch.errors import UserError
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
# a tested tolerance (tests/training/test_engine.py). fixmatch.training.fast resolves them.
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
class CommonConfig:
    """The options of every run (the algorithms' own options join them in TrainConfig)."""

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
    algorithm: str | None = opt(
        None, f"{', '.join(ALGORITHM_NAMES)} (supervised: the labeled loss only; default: the dataset's, else fixmatch)"
    )
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
        "(with --baseline: for the two runs together); on folders it also picks the image size, model and "
        "algorithm you leave unset",
    )
    seed: int = opt(0, "seed of the weights, the sampling and the augmentation (the labels come from --fold)")
    out: str | None = opt(None, "run directory (default runs/<dataset>-<labels>-<algorithm>-<time>)")
    overwrite: bool = opt(False, "replace the run that --out already holds (without it such a folder is refused)")
    progress: bool = opt(True, "show the progress bar (--no-progress prints one JSON line per evaluation)")
    # hardware and speed (each optimization a switch: auto = on for CUDA, off for CPU)
    device: str = opt("auto", "auto, cpu or cuda")
    threads: str | int = opt(AUTO_THREADS, THREADS_HELP)
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


def algorithm_fields() -> list[tuple[str, Any, Any]]:
    """The algorithms' options as TrainConfig fields; the help says which algorithms read each."""
    return [
        (name, spec.type, opt(spec.default, f"{spec.help} [{', '.join(spec.owners)}]"))
        for name, spec in ALGORITHM_OPTIONS.items()
    ]


if typing.TYPE_CHECKING:  # what the type checker sees of the merged class made below

    class TrainConfig(CommonConfig):
        def __init__(self, **options: Any) -> None: ...
        def __getattr__(self, name: str) -> Any: ...  # an algorithm's option

else:
    TrainConfig = dataclasses.make_dataclass("TrainConfig", algorithm_fields(), bases=(CommonConfig,))
    TrainConfig.__module__ = __name__  # pickled configs (checkpoints hold dicts, but tests pickle runs) find it
    TrainConfig.__doc__ = "Every option of a run: the common ones, then each algorithm's."


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
    eval_every: int


FIELD_NAMES = {f.name for f in fields(TrainConfig)}


def check_known(options) -> None:
    unknown = set(options) - FIELD_NAMES
    if unknown:
        raise UserError(f"unknown training options: {', '.join(sorted(unknown))} (see `fixmatch train --help`)")


def from_dict(d: dict, base: TrainConfig | None = None) -> TrainConfig:
    """A config from explicit settings (YAML, flags): a `recipe` among them fills in the options
    they leave unset."""
    check_known(d)
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
