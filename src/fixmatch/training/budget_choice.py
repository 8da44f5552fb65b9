"""`--time-budget` on your own images (`--dataset folders`): the image size, the model and the algorithm
chosen for the budget from this machine's measured speed, wherever the user did not name them.

Why: fixed defaults are right for one machine and one budget only. A minute on a laptop CPU trains a
small network on small images well and a larger one badly (too few steps to learn); ten minutes, or a
GPU, afford more detail and capacity. So the rungs of LADDER go from the cheapest to the most capable;
each is probed on this machine (a forward and backward of a few random images of its shape, scaled to a
step's batch) and the highest rung whose step fits the steps it needs into the training share of the
budget is chosen (STEPS_WORTH_HAVING; a larger network needs STEPS_FOR_A_LARGER_MODEL, as more capacity
pays only once the small one has had its steps). The climb stops at the first rung that does not fit
(the next ones cost more), so a short budget probes one or two rungs. The algorithm comes first (its
step size is what the rungs are probed at): with few labels per class the one measured fastest to
accuracy (RESULTS.md's time-to-accuracy table; `--recipe fast` holds the name once), with many
(SUPERVISED_FROM) the labeled loss alone, which led in every short run measured on such data.

The probe is the plain eager float step: on a GPU the speed switches (bf16, compilation, CUDA graphs)
make the real step faster, so the choice errs small there; the first decode of a large folder also
comes out of the budget (TRAINING_SHARE leaves room for a cached one). The budget planner then fits
the steps to what is left, as on any run.

What the user names wins: a given --image-size keeps the rungs of that size, a given --model those of
that model, a given --algorithm (or --recipe) is kept. Everything chosen is printed with its reason."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Callable

import torch

from fixmatch.config import RECIPES, RunConfig, TrainConfig
from fixmatch.cpus import thread_count
from fixmatch.data import get_spec
from fixmatch.data.download import resolve_data_dir
from fixmatch.data.user_folders import MIN_SIZE, all_grey, median_side, scan
from fixmatch.models import build_model
from fixmatch.training import devices, distributed
from fixmatch.training.resolve import resolve

# (model, image side), cheapest first; a side above the images' own median side is not a rung (it
# would only upscale them), and one below MIN_SIZE cannot run.
LADDER = (
    ("cnn_small", 16),
    ("cnn_small", 24),
    ("cnn_small", 32),
    ("cnn_medium", 32),
    ("cnn_medium", 48),
    ("wrn28_2", 32),
    ("wrn28_2", 48),
    ("wrn28_2", 64),
)
STEPS_WORTH_HAVING = get_spec("folders").defaults["steps"]  # the folders schedule: what a short run needs
# A network larger than the ladder's first must fit this many steps: more capacity pays only once the
# small network has had its steps. Measured on digits at 3 minutes (RESULTS.md): cnn_small after 7,415
# steps 97.6%, cnn_medium after 2,664 (over 1,000, the first rule) 95.6%.
STEPS_FOR_A_LARGER_MODEL = 10_000
TRAINING_SHARE = 0.8  # of the budget left after probing: decoding, evaluations and checkpoints take the rest
PROBE_IMAGES = 64  # per probe call: enough that a small model's fixed cost per call is not scaled up much
FASTEST = RECIPES["fast"]["algorithm"]
SUPERVISED = "supervised"
# Labeled images per class from which the labeled loss alone is chosen. Measured (RESULTS.md): with 2
# per class (digits) FlexMatch led supervised training by ~30 points at every budget; with 100 per
# class (FER2013 faces) supervised training led FixMatch at 1, 3 and 10 minutes and FlexMatch at 1 (a step of
# theirs forwards 15x the images, and on hard classes few pseudo-labels reach the threshold). Between
# the two nothing was measured; --algorithm decides there as anywhere.
SUPERVISED_FROM = 50


@dataclass(frozen=True)
class Probe:
    model: str
    size: int
    step_s: float
    steps: int  # steps of that cost the training share of the budget holds
    needs: int  # steps this rung must fit to be taken

    @property
    def fits(self) -> bool:
        return self.steps >= self.needs


def rungs(median: int, image_size: int | None, model: str | None) -> list[tuple[str, int]]:
    """LADDER for these images and what the user fixed: sides capped at the images' median side
    (each model keeps one rung at that side when all of its rungs are larger), a given size or model kept."""
    cap = max(median, MIN_SIZE)
    out: list[tuple[str, int]] = []
    for name, side in LADDER:
        if model is not None and name != model:
            continue
        side = image_size if image_size is not None else min(side, cap)
        if (name, side) not in out:
            out.append((name, side))
    if model is not None and not out:  # a model outside the ladder: its one rung, at the given or capped side
        out.append((model, image_size if image_size is not None else min(32, cap)))
    return out


def climb(candidates: list[tuple[str, int]], seconds: float, step_cost: Callable[[str, int], float]) -> list[Probe]:
    """Probe the candidates cheapest first, until one does not fit the steps it needs in `seconds`
    (STEPS_WORTH_HAVING; STEPS_FOR_A_LARGER_MODEL for a network other than the first candidate's)."""
    probes = []
    for name, side in candidates:
        step_s = step_cost(name, side)
        needs = STEPS_WORTH_HAVING if name == candidates[0][0] else STEPS_FOR_A_LARGER_MODEL
        probes.append(Probe(name, side, step_s, int(seconds / step_s) if step_s > 0 else 0, needs))
        if not probes[-1].fits:
            break
    return probes


def pick(probes: list[Probe]) -> Probe:
    """The most capable rung that fits; when none does, the cheapest (the budget planner then fits
    or refuses the run)."""
    fitting = [p for p in probes if p.fits]
    return fitting[-1] if fitting else probes[0]


def probe_cost(device: torch.device, channels: int, classes: int, step_images: int) -> Callable[[str, int], float]:
    """step_cost(model, side): seconds of one step's forward and backward, from PROBE_IMAGES random
    images (the faster of two timed calls after an untimed one), scaled to `step_images`. On a CPU
    this came within ~5% of the measured step (augmentation and optimizer included: the fixed cost
    per call a 64-image probe scales up stands for them) for cnn_small at 16 px."""

    def cost(name: str, side: int) -> float:
        model = build_model(name, classes, channels).to(device)
        images = min(PROBE_IMAGES, step_images)
        x = torch.randn(images, channels, side, side, device=device)

        def once() -> float:
            t = time.perf_counter()
            model(x).logsumexp(-1).sum().backward()
            devices.sync(device)
            return time.perf_counter() - t

        once()
        return min(once() for _ in range(2)) * step_images / images

    return cost


def choose(raw: TrainConfig, started: float, log, step_cost=None) -> TrainConfig:
    """`raw` (the user's options, nothing filled in) with image_size, model and algorithm chosen where
    it leaves them unset, on a folders dataset with a time budget; any other run unchanged (and not
    resolved here: `resolve` checks it once, after). Under torchrun the ranks' probes would differ,
    so the folders defaults stand there."""
    if raw.dataset != "folders" or not raw.time_budget or distributed.from_env().active:
        return raw
    run = resolve(raw)  # validated, defaults filled: the batch, threads and device the run will use
    open_fields = [k for k in ("image_size", "model", "algorithm") if getattr(raw, k) is None]
    if not open_fields:
        return raw
    layout = scan(resolve_data_dir(run.data_dir), run.val_per_class)
    per_class = sum(map(len, layout.labeled.values())) / len(layout.classes) - run.val_per_class
    algorithm = raw.algorithm or (SUPERVISED if per_class >= SUPERVISED_FROM else FASTEST)
    if raw.algorithm is None and algorithm == raw.baseline:  # a baseline asked for is compared with something else
        algorithm = FASTEST if algorithm == SUPERVISED else SUPERVISED
    chosen: dict = {"algorithm": algorithm}
    reasons = [] if raw.algorithm else [algorithm_reason(algorithm, per_class)]
    if raw.image_size is None or raw.model is None:
        probes = probe_rungs(raw, run, layout, algorithm, started, step_cost)
        best = pick(probes)
        log("--time-budget on your folders, measured here: " + "; ".join(describe(p) for p in probes))
        chosen.update(model=best.model, image_size=best.size)
        reasons.insert(0, rung_reason(best, probes))
    chosen = {k: v for k, v in chosen.items() if k in open_fields}  # the user's own flags win
    given = [
        f"--{k.replace('_', '-')} {getattr(raw, k)}" for k in ("image_size", "model", "algorithm") if getattr(raw, k)
    ]
    log(
        "--time-budget chose "
        + ", ".join(f"{k.replace('_', ' ')} {chosen[k]}" for k in ("model", "image_size", "algorithm") if k in chosen)
        + f" ({'; '.join(reasons)})"
        + (f"; kept yours: {', '.join(given)}" if given else "")
    )
    return dataclasses.replace(raw, **chosen)


def algorithm_reason(algorithm: str, per_class: float) -> str:
    if algorithm == SUPERVISED:
        return (
            f"{SUPERVISED}: {per_class:.0f} labeled images per class (at least {SUPERVISED_FROM}), where the "
            "labeled loss alone led FixMatch and FlexMatch in the short runs measured (RESULTS.md)"
        )
    return (
        f"{algorithm}: {per_class:.0f} labeled images per class (fewer than {SUPERVISED_FROM}), where the "
        "unlabeled images pay; fastest to accuracy in RESULTS.md's time-to-accuracy table (--recipe fast)"
    )


def probe_rungs(raw: TrainConfig, run: RunConfig, layout, algorithm: str, started: float, step_cost) -> list[Probe]:
    """Climb the ladder on this machine, for the images in `layout` and a step of `algorithm`."""
    median = median_side(layout) or LADDER[-1][1]
    if step_cost is None:
        torch.set_num_threads(thread_count(run.threads))
        channels = run.channels or (1 if all_grey(layout) else 3)
        step_images = run.batch_size * (1 if algorithm == SUPERVISED else 1 + 2 * run.mu)
        step_cost = probe_cost(devices.pick_device(run.device), channels, len(layout.classes), step_images)
    assert run.time_budget is not None  # choose() runs only with a budget
    left = run.time_budget * 60 - (time.perf_counter() - started)
    runs = 1 if run.baseline in ("none", run.algorithm) else 2  # a baseline takes half the budget
    return climb(rungs(median, raw.image_size, raw.model), TRAINING_SHARE * left / runs, step_cost)


def describe(p: Probe) -> str:
    return f"{p.model} at {p.size} px ~{1000 * p.step_s:.0f} ms/step, ~{p.steps:,} steps (needs {p.needs:,})"


def rung_reason(best: Probe, probes: list[Probe]) -> str:
    if not best.fits:
        return (
            f"{best.model} at {best.size} px: the cheapest, and even it fits only ~{best.steps:,} of the "
            f"{best.needs:,} steps a short run needs (a longer --time-budget trains better)"
        )
    nxt = probes[-1] if probes[-1] is not best else None
    return f"{best.model} at {best.size} px: the most capable that trains the steps it needs in the budget" + (
        f" ({nxt.model} at {nxt.size} px would fit ~{nxt.steps:,} of {nxt.needs:,})" if nxt else ""
    )
