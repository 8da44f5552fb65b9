"""Fast FixMatch's curriculum unlabeled batch size and strong labeled augmentation: the sizes drawn
step by step, the planner's count of the work they make, exact resume with the batch drawn ahead,
and the labeled views."""

from __future__ import annotations

import pytest
import torch
from tiny_runs import kill_then_resume, tiny_config, tiny_trainer

from fixmatch.config import TrainConfig
from fixmatch.data import load_dataset
from fixmatch.errors import UserError
from fixmatch.training.curriculum import images_between, unlabeled_batch, unlabeled_batch_sizes, unlabeled_ratio
from fixmatch.training.resolve import resolve
from fixmatch.training.schedule_planner import TARGET, WARMUP, WINDOW, StepPlanner
from fixmatch.training.train import make_trainer, pick_labels


def curriculum_cfg(**kw):
    base = dict(batch_size=4, mu=5, steps=30, device="cpu", seed=0, unlabeled_batch_curriculum="linear")
    return resolve(tiny_config(**{**base, **kw}))


def test_the_unlabeled_ratio_grows_from_the_minimum_to_mu_in_equal_phases():
    ratios = [unlabeled_ratio(k, 30, 5, 2, "linear") for k in range(30)]
    assert ratios == [2] * 8 + [3] * 7 + [4] * 8 + [5] * 7  # 4 phases of 30/4 steps
    assert unlabeled_ratio(45, 30, 5, 2, "linear") == 5  # past the plan: full size
    assert all(unlabeled_ratio(k, 30, 5, 2, "off") == 5 for k in range(30))
    cfg = curriculum_cfg(curriculum_min_mu=2)
    assert [unlabeled_batch(cfg, k) for k in (0, 29)] == [8, 20] and unlabeled_batch_sizes(cfg) == [8, 12, 16, 20]


@pytest.mark.parametrize("steps", [1, 7, 30, 101])
def test_images_between_counts_each_step_of_the_plan(steps):
    for min_mu in (1, 3, 5):
        cfg = curriculum_cfg(curriculum_min_mu=min_mu)
        per_step = [cfg.batch_size + 2 * unlabeled_batch(cfg, k, steps) for k in range(steps + 5)]
        for first, last in ((0, steps), (3, steps), (0, min(5, steps)), (2, steps + 5)):
            assert images_between(cfg, first, last, steps) == sum(per_step[first:last]), (min_mu, first, last)


def test_the_engine_draws_the_curriculum_sizes_step_by_step(tmp_path):
    cfg = curriculum_cfg(curriculum_min_mu=1)
    data = load_dataset("digits")
    trainer = make_trainer(cfg, data, pick_labels(cfg, data), torch.device("cpu"))
    forwarded = []
    trainer.model.register_forward_pre_hook(lambda _, args: forwarded.append(args[0].shape[0]))
    for _ in range(cfg.steps):
        trainer.step()
    assert forwarded == [4 + 2 * unlabeled_batch(cfg, k) for k in range(cfg.steps)]
    assert forwarded[0] == 4 + 2 * 4 and forwarded[-1] == 4 + 2 * 20


def test_with_the_batch_drawn_ahead_a_killed_run_resumes_exactly(tmp_path, monkeypatch):
    """--augment-stream draws step k+1's batch during step k: its size must be step k+1's, and the
    checkpoint rewinds it, so the resumed run draws the same sizes as the uninterrupted one."""

    def config_in(folder):
        return tiny_config(
            folder, unlabeled_batch_curriculum="linear", mu=3, augment_stream="on", algorithm="flexmatch"
        )

    a, b = kill_then_resume(config_in, tmp_path, monkeypatch, kill_at=16)
    for part in ("model", "ema"):
        assert all(torch.equal(a[part][k], b[part][k]) for k in a[part]), part
    assert all(torch.equal(a["algorithm"][k], b["algorithm"][k]) for k in a["algorithm"])


def test_streamed_and_plain_steps_forward_the_same_batches():
    """--augment-stream draws step k+1's batch during step k: it must be step k+1's size and images."""

    def forwarded(**switches):
        trainer, _ = tiny_trainer(curriculum_cfg(curriculum_min_mu=1, steps=10, **switches))
        cfg = trainer.cfg
        seen = []
        trainer.model.register_forward_pre_hook(lambda _, args: seen.append(args[0].detach().clone()))
        for _ in range(cfg.steps):
            trainer.step()
        return seen

    plain, streamed = forwarded(), forwarded(augment_stream="on")
    assert [x.shape[0] for x in plain] == [4 + 2 * u for u in (4, 4, 8, 8, 12, 12, 16, 16, 20, 20)]
    for k, (p, s) in enumerate(zip(plain, streamed)):
        assert torch.equal(p, s), k


def test_labeled_strong_gives_the_labeled_batch_the_strong_view():
    """digits pixels are multiples of 255/16: Cutout's grey 127 is in no weak view, in every strong one."""

    def labeled_views(**kw):
        trainer, _ = tiny_trainer(tiny_config(mu=1, device="cpu", seed=0, **kw))
        return trainer.make_batch(0).x[:8]

    strong, weak = labeled_views(labeled_strong=True), labeled_views()
    assert all((img == 127).sum() >= 4 for img in strong)
    assert not (weak == 127).any()


def test_bad_curriculum_options_are_one_clear_error():
    with pytest.raises(UserError, match="unlabeled_batch_curriculum"):
        resolve(TrainConfig(unlabeled_batch_curriculum="exp"))
    with pytest.raises(UserError, match="curriculum_min_mu"):
        resolve(TrainConfig(unlabeled_batch_curriculum="linear", mu=3, curriculum_min_mu=4))
    with pytest.raises(UserError, match="RandAugment only"):
        resolve(TrainConfig(labeled_strong=True, strong_augment="cta"))


def test_the_budget_plan_counts_the_growing_steps():
    """A fake clock: each step costs 1 ms per image. The plan must spend the budget on the images
    the curriculum will draw, not on copies of the small first steps."""
    cfg = curriculum_cfg(curriculum_min_mu=1, batch_size=8, mu=7, steps=1000)
    now = [0.0]
    budget_s = 60.0
    planner = StepPlanner(
        0, cfg.steps, 10**9, budget_s=budget_s, clock=lambda: now[0], work=lambda a, b, s: images_between(cfg, a, b, s)
    )
    step = 0
    while step < planner.steps:
        now[0] += 1e-3 * (cfg.batch_size + 2 * unlabeled_batch(cfg, step, planner.steps))
        step += 1
        if planner.due(step):
            planner.observe(step, lambda: 0.0)
    assert step == planner.steps and step > WARMUP + WINDOW
    assert TARGET * budget_s - 1.0 < now[0] <= TARGET * budget_s  # the last step's images (<0.13 s) short at most
    constant = StepPlanner(0, cfg.steps, 10**9, budget_s=budget_s, clock=lambda: 0.0)
    assert constant.work is None  # the default: every step alike, as before
