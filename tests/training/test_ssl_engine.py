"""FlexMatch, FreeMatch, SoftMatch, AdaMatch and Dash inside the engine: the indices FlexMatch is given are those of
the images drawn, their state is in the checkpoint and a killed run resumes exactly, and their
options default to the reference configs."""

from __future__ import annotations

import pytest
import torch
from tiny_runs import kill_then_resume, tiny_config, tiny_trainer

from fixmatch.config import TrainConfig
from fixmatch.errors import UserError
from fixmatch.training.resolve import resolve

STATEFUL = ("adamatch", "dash", "flexmatch", "freematch", "softmatch")


def trainer_for(algorithm: str, **kw):
    return tiny_trainer(tiny_config(**{"algorithm": algorithm, "device": "cpu", "seed": 0, **kw}))[0]


def test_flexmatch_is_given_the_pool_index_of_each_unlabeled_image_drawn():
    trainer = trainer_for("flexmatch", threshold=0.2)
    draw, algorithm = trainer.unl_sampler.next, trainer.algorithm
    seen: dict = {}

    def next_indices(*size):
        seen["drawn"] = draw(*size)
        return seen["drawn"]

    def spy(*args, idx_u):
        seen["given"] = idx_u.clone()
        return algorithm(*args, idx_u=idx_u)

    trainer.unl_sampler.next, trainer.algorithm = next_indices, spy
    drawn = set()
    for _ in range(3):
        trainer.step()
        assert torch.equal(seen["given"], seen["drawn"])
        drawn |= set(seen["drawn"].tolist())
    # what it remembers is where those images are: only drawn images (threshold 0.2: many of them)
    remembered = set((algorithm.selected_label >= 0).nonzero().flatten().tolist())
    assert len(remembered) > len(drawn) / 4 and remembered <= drawn


@pytest.mark.parametrize("algorithm", STATEFUL)
def test_state_lives_in_the_checkpoint_and_a_killed_run_resumes_exactly(algorithm, tmp_path, monkeypatch):
    """Killed right after the step-16 checkpoint and resumed: the same summary, the same EMA weights
    and the same algorithm state as the run never interrupted."""
    extra = {"threshold": 0.5} if algorithm == "flexmatch" else {}  # FlexMatch remembers images from the start
    a, b = kill_then_resume(lambda f: tiny_config(f, algorithm=algorithm, **extra), tmp_path, monkeypatch, kill_at=16)
    assert a["algorithm"].keys() == b["algorithm"].keys() and a["algorithm"]
    for k in a["algorithm"]:
        assert torch.equal(a["algorithm"][k], b["algorithm"][k]), k
    for k in a["ema"]:
        assert torch.equal(a["ema"][k], b["ema"][k]), k
    initial = trainer_for(algorithm, **extra).algorithm.state_dict()
    assert any(not torch.equal(initial[k], a["algorithm"][k]) for k in initial), "the state moved during the run"


def test_supervised_and_fixmatch_checkpoints_hold_no_algorithm_state(tmp_path):
    assert trainer_for("fixmatch").algorithm.state_dict() == {}
    assert trainer_for("supervised").algorithm.state_dict() == {}


def test_options_default_to_the_reference_configs():
    for dataset in ("cifar10", "digits", "stl10"):
        cfg = resolve(TrainConfig(dataset=dataset, algorithm="freematch"))
        assert (cfg.freematch_clip_thresh, cfg.ema_p, cfg.lambda_e, cfg.lambda_u) == (False, 0.999, 0.001, 1.0)
    assert resolve(TrainConfig(dataset="svhn", algorithm="freematch")).freematch_clip_thresh is True
    flex = resolve(TrainConfig(dataset="cifar10", algorithm="flexmatch"))
    assert (flex.threshold, flex.flexmatch_warmup) == (0.95, True)
    soft = resolve(TrainConfig(dataset="cifar10", algorithm="softmatch"))
    assert (soft.softmatch_n_sigma, soft.ema_p) == (2.0, 0.999)
    assert (soft.softmatch_dist_uniform, soft.softmatch_per_class) == (True, False)  # softmatch/*.yaml
    assert resolve(TrainConfig(dataset="cifar10", algorithm="freematch")).freematch_use_quantile is False
    ada = resolve(TrainConfig(dataset="cifar10", algorithm="adamatch"))  # config/classic_cv/adamatch/*.yaml
    assert (ada.threshold, ada.ema_p, ada.lambda_u, ada.adamatch_hard_label) == (0.95, 0.999, 1.0, True)
    dash = resolve(TrainConfig(dataset="cifar10", algorithm="dash"))  # config/classic_cv/dash/*.yaml
    assert (dash.dash_gamma, dash.dash_c, dash.dash_rho_min, dash.dash_temperature) == (1.27, 1.0001, 0.05, 0.5)
    # USB's 2^20-step run: 2048 warm-up steps, rho every 10 of its 1024 epochs; a shorter run in proportion
    usb = trainer_for("dash", steps=2**20, eval_every=2**20, lr_schedule_steps=2**20).algorithm
    assert (usb.warmup_steps, usb.decay_every) == (2048, 10240)
    assert (usb.gamma, usb.c, usb.rho_min, usb.t, usb.lambda_u) == (1.27, 1.0001, 0.05, 0.5, 1.0)
    short = trainer_for("dash", steps=5000, eval_every=100).algorithm
    assert (short.warmup_steps, short.decay_every) == (9, 40)
    options = dict(dash_warmup_steps=3, dash_decay_every=5, dash_temperature=0.25, dash_gamma=2.0, dash_c=1.5)
    mine = trainer_for("dash", **options, dash_rho_min=0.1, lambda_u=2.0).algorithm
    assert (mine.warmup_steps, mine.decay_every, mine.t, mine.gamma, mine.c) == (3, 5, 0.25, 2.0, 1.5)
    assert (mine.rho_min, mine.lambda_u) == (0.1, 2.0)
    ada = trainer_for("adamatch", adamatch_hard_label=False, ema_p=0.9, threshold=0.7, lambda_u=2.0).algorithm
    assert (ada.hard_label, ada.align.m, ada.threshold, ada.lambda_u) == (False, 0.9, 0.7, 2.0)
    freematch = trainer_for("freematch").algorithm
    assert (freematch.lambda_e, freematch.m, freematch.clip_thresh) == (0.001, 0.999, False)
    assert trainer_for("freematch", freematch_clip_thresh=True).algorithm.clip_thresh is True
    assert trainer_for("softmatch", softmatch_n_sigma=3.0, ema_p=0.9).algorithm.n_sigma == 3.0
    softmatch = trainer_for("softmatch", softmatch_dist_uniform=False, softmatch_per_class=True).algorithm
    assert (softmatch.align.from_labeled, softmatch.per_class) == (True, True)
    assert trainer_for("softmatch").algorithm.align.from_labeled is False
    assert trainer_for("freematch", freematch_use_quantile=True).algorithm.use_quantile is True
    assert trainer_for("flexmatch", flexmatch_warmup=False).algorithm.warmup is False


@pytest.mark.parametrize(
    "field,value,msg",
    [
        ("ema_p", 1.0, "ema_p must lie in"),
        ("lambda_e", -1.0, "lambda_e must be"),
        ("softmatch_n_sigma", 0.0, "n_sigma"),
    ],
)
def test_bad_options_are_one_clear_error(field, value, msg):
    with pytest.raises(UserError, match=msg):
        resolve(TrainConfig(algorithm="softmatch", **{field: value}))


def test_a_dash_warmup_as_long_as_the_run_is_refused():
    """It would train the labeled loss alone, silently: one clear error instead."""
    with pytest.raises(UserError, match=r"dash_warmup_steps \(24\) must be below steps \(24\)"):
        trainer_for("dash", dash_warmup_steps=24)
    assert trainer_for("dash", dash_warmup_steps=23).algorithm.warmup_steps == 23


def test_the_fast_recipe_fills_what_the_flags_leave_unset(tmp_path, capsys):
    from fixmatch.cli import main
    from fixmatch.config import RECIPES, from_dict

    fast = resolve(from_dict({"recipe": "fast"}))
    assert (fast.algorithm, fast.unlabeled_batch_curriculum, fast.labeled_strong) == ("flexmatch", "off", False)
    assert RECIPES["fast"].keys() <= set(fast.to_dict())
    mine = resolve(from_dict({"recipe": "fast", "labeled_strong": True, "algorithm": "softmatch"}))
    assert (mine.algorithm, mine.labeled_strong) == ("softmatch", True)
    run = tmp_path / "run"
    flags = ["--recipe", "fast", "--unlabeled-batch-curriculum", "linear", "--steps", "2", "--eval-every", "2"]
    assert main(["train", *flags, "--batch-size", "4", "--mu", "2", "--no-progress", "--out", str(run)]) == 0
    saved = (run / "config.yaml").read_text()
    assert "algorithm: flexmatch" in saved and "unlabeled_batch_curriculum: linear" in saved
    assert (
        main(
            [
                "train",
                "--recipe",
                "fast",
                "--algorithm",
                "freematch",
                "--steps",
                "1",
                "--eval-every",
                "1",
                "--batch-size",
                "4",
                "--mu",
                "1",
                "--no-progress",
                "--out",
                str(tmp_path / "r2"),
            ]
        )
        == 0
    )
    assert "algorithm: freematch" in (tmp_path / "r2" / "config.yaml").read_text()  # the flag wins
    assert main(["train", "--recipe", "slow"]) == 2 and "unknown recipe 'slow'" in capsys.readouterr().err
