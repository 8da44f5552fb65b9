"""Fast FixMatch's curriculum batch size (Chen, Dun, Kyrillidis 2023, arXiv 2309.03469): the
unlabeled batch is small at the start of training and grows to its full size by the end.

Here it grows in whole unlabeled ratios: mu_t goes from `--curriculum-min-mu` up to `--mu` in equal
phases of the run (`linear`), so the unlabeled batch B * mu_t takes at most mu distinct sizes: one
compiled graph and one captured augmentation graph each. The paper's exact curve could not be read
here (see the README's deviations table); `linear` is this staircase, named so other shapes can join.
"""

from __future__ import annotations

CURRICULA = ("off", "linear")
UNBOUNDED = 2**62


def unlabeled_ratio(step: int, steps: int, mu: int, min_mu: int, curriculum: str) -> int:
    """mu_t for step `step` (0-based) of a run of `steps` steps."""
    if curriculum == "off" or mu <= min_mu:
        return mu
    phases = mu - min_mu + 1
    return min(mu, min_mu + (phases * step) // max(steps, 1))


def unlabeled_batch(cfg, step: int, steps: int | None = None) -> int:
    """Unlabeled images drawn at `step` (steps: the run's length, default cfg.steps)."""
    steps = cfg.steps if steps is None else steps
    return cfg.batch_size * unlabeled_ratio(step, steps, cfg.mu, cfg.curriculum_min_mu, cfg.unlabeled_batch_curriculum)


def unlabeled_batch_sizes(cfg) -> list[int]:
    """Every size the run may draw (graphs are captured for each up front)."""
    if cfg.unlabeled_batch_curriculum == "off":
        return [cfg.batch_size * cfg.mu]
    return [cfg.batch_size * r for r in range(cfg.curriculum_min_mu, cfg.mu + 1)]


def images_between(cfg, first: int, last: int, steps: int) -> int:
    """Images forwarded by steps first..last-1 of a run of `steps` steps: B labeled + 2 views of each
    unlabeled image per step (the planner's unit of work; forward and backward scale with it)."""
    b = cfg.batch_size
    if cfg.unlabeled_batch_curriculum == "off":
        return (last - first) * (b + 2 * b * cfg.mu)
    # the ratio is constant on each phase: count the steps of each phase inside [first, last)
    total = 0
    for ratio in range(cfg.curriculum_min_mu, cfg.mu + 1):
        lo, hi = phase_bounds(ratio, steps, cfg.mu, cfg.curriculum_min_mu)
        n = max(0, min(hi, last) - max(lo, first))
        total += n * (b + 2 * b * ratio)
    return total


def phase_bounds(ratio: int, steps: int, mu: int, min_mu: int) -> tuple[int, int]:
    """[lo, hi): the steps at which unlabeled_ratio(.., 'linear') == ratio."""
    phases = mu - min_mu + 1
    index = ratio - min_mu
    lo = -(-index * steps // phases)  # ceil(index * steps / phases)
    hi = -(-(index + 1) * steps // phases) if ratio < mu else UNBOUNDED  # steps past the plan stay at mu
    return lo, hi


def curriculum_work(cfg):
    """The planner's work(first, last, steps) when step sizes vary, else None (every step alike)."""
    if cfg.unlabeled_batch_curriculum == "off" or cfg.algorithm == "supervised":
        return None
    return lambda first, last, steps: images_between(cfg, first, last, steps)
