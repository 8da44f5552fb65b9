"""The training configuration (fixmatch.config): every invalid value is one clear error before any
work starts, and the shipped configs hold the paper's settings."""

from __future__ import annotations

import pytest

from fixmatch.cli import main
from fixmatch.config import TrainConfig
from fixmatch.errors import UserError
from fixmatch.training.resolve import resolve


@pytest.mark.parametrize(
    "field,value,msg",
    [
        ("steps", -1, "steps must be a positive integer"),
        ("threshold", 1.5, "threshold"),
        ("dataset", "mnist", "unknown dataset"),
        ("model", "resnet9000", "unknown model"),
        ("randaugment", "fancy", "randaugment"),
        ("mu", 0, "mu=0 leaves FixMatch no unlabeled images"),
        ("fold", 10, "fold must be 0..9"),
        ("input_scaling", "zscore", "input_scaling"),
        ("time_budget", -1, "time_budget"),
        ("image_size", 513, "image_size must be 8 to 512"),  # a model predict and serve would refuse
        ("lr", "abc", "lr must be float, got 'abc'"),  # a YAML file can hold any type
        ("steps", 1.5, "steps must be int, got 1.5"),
        ("flip", 1, "flip must be bool, got 1"),
    ],
)
def test_invalid_config_is_one_clear_error(field, value, msg):
    with pytest.raises(UserError, match=msg):
        resolve(TrainConfig(**{field: value}))


def test_a_baseline_that_cannot_run_is_refused_before_either_run(tmp_path, capsys):
    """The config is resolved once, for the algorithm; the baseline's run is checked before any work."""
    argv = ["train", "--dataset", "digits", "--algorithm", "supervised", "--mu", "0", "--baseline", "fixmatch"]
    assert main([*argv, "--steps", "4", "--out", str(tmp_path / "runs")]) == 2
    assert "the baseline run (--baseline fixmatch): mu=0" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_cli_reports_bad_input_with_exit_code_2(capsys):
    assert main(["train", "--threshold", "0"]) == 2
    assert "threshold" in capsys.readouterr().err
    assert main(["train", "--num-labels", "5000", "--algorithm", "fixmatch"]) == 2


def test_shipped_configs_load_and_validate():
    from pathlib import Path

    from fixmatch.config import from_dict, load_yaml

    configs = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))
    assert len(configs) >= 10
    for path in configs:
        cfg = resolve(from_dict(load_yaml(path)))
        assert cfg.algorithm == "fixmatch", path
        if cfg.dataset == "cifar100":
            assert cfg.model == "wrn28_8" and cfg.weight_decay == 1e-3


def test_a_baseline_is_an_option_not_an_algorithm():
    demo = resolve(TrainConfig())  # digits with no --algorithm: its demo, FixMatch beside supervised
    assert (demo.algorithm, demo.baseline) == ("fixmatch", "supervised")
    assert resolve(TrainConfig(algorithm="fixmatch")).baseline == "none"  # a chosen algorithm runs alone
    chosen = resolve(TrainConfig(algorithm="flexmatch", baseline="fixmatch"))
    assert (chosen.algorithm, chosen.baseline) == ("flexmatch", "fixmatch")
    with pytest.raises(UserError, match="unknown algorithm 'both'"):  # the comparison is --baseline, not a name
        resolve(TrainConfig(algorithm="both"))
    with pytest.raises(UserError, match="unknown baseline 'ssl'"):
        resolve(TrainConfig(baseline="ssl"))


def test_paper_defaults_are_the_official_recipe():
    cfg = resolve(TrainConfig(dataset="cifar10"))
    assert (cfg.algorithm, cfg.model, cfg.num_labels, cfg.batch_size, cfg.mu) == ("fixmatch", "wrn28_2", 4000, 64, 7)
    assert (cfg.threshold, cfg.lambda_u, cfg.lr, cfg.momentum, cfg.nesterov) == (0.95, 1.0, 0.03, 0.9, True)
    assert (cfg.weight_decay, cfg.ema_decay, cfg.ema_warmup, cfg.bn_momentum) == (5e-4, 0.999, False, 0.001)
    assert (cfg.steps, cfg.lr_schedule_steps, cfg.eval_every, cfg.median_of) == (2**20, 2**20, 1024, 20)
    assert (cfg.flip, cfg.randaugment, cfg.input_scaling) == (True, "official", "official")
    assert resolve(TrainConfig(dataset="svhn")).flip is False
    c100 = resolve(TrainConfig(dataset="cifar100"))
    assert (c100.model, c100.weight_decay) == ("wrn28_8", 1e-3)


@pytest.mark.parametrize(
    "flag, value",
    [
        ("--lambda-u", "inf"),
        ("--lambda-e", "inf"),
        ("--weight-decay", "inf"),
        ("--softmatch-n-sigma", "inf"),
        ("--threshold", "nan"),
        ("--ema-p", "nan"),
        ("--lr", "1e308"),  # finite in Python, inf in torch's float32
        ("--momentum", "-inf"),
        ("--seed", "99999999999999999999999"),
        ("--steps", str(2**63)),
    ],
)
def test_numbers_torch_cannot_hold_are_refused_by_one_rule(flag, value, tmp_path, capsys):
    """Every float option finite and within float32, every integer within 64 bits: refused before any
    work, whichever option (the rule is generic, so an option declared elsewhere is held too)."""
    argv = ["train", "--dataset", "digits", "--algorithm", "fixmatch", "--steps", "4", f"{flag}={value}"]
    assert main([*argv, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    key = flag[2:].replace("-", "_")
    assert f"{key} must be" in err and "Traceback" not in err, err
    assert not (tmp_path / "run").exists()


def test_the_generic_bound_holds_every_numeric_field():
    from dataclasses import fields

    from fixmatch.training.resolve import check_types

    hints = __import__("typing").get_type_hints(TrainConfig)
    for f in fields(TrainConfig):
        kinds = __import__("typing").get_args(hints[f.name]) or (hints[f.name],)
        if float in kinds:
            with pytest.raises(UserError, match=f"{f.name} must be a finite number"):
                check_types({f.name: float("inf")})
        elif int in kinds:
            with pytest.raises(UserError, match=f"{f.name} must be an integer below 2"):
                check_types({f.name: 2**64})


def test_a_step_that_cannot_fit_in_memory_is_refused_saying_what_fits():
    from types import SimpleNamespace

    import torch

    from fixmatch.training.step_memory import check_step_fits

    cpu = torch.device("cpu")
    cfg = SimpleNamespace(batch_size=64, mu=7, algorithm="fixmatch")
    per_step = 64 * 15 * 3 * 32 * 32 * 4  # inputs of one CIFAR step, float32
    check_step_fits(cfg, (3, 32, 32), cpu, free=per_step)  # exactly fits: allowed
    with pytest.raises(UserError, match=r"at most --batch-size 63 fits with --mu 7"):
        check_step_fits(cfg, (3, 32, 32), cpu, free=per_step - 1)
    huge_mu = SimpleNamespace(batch_size=64, mu=100000, algorithm="fixmatch")
    with pytest.raises(UserError, match=r"not even --batch-size 1 fits with --mu 100000; lower --mu \(at most 7 "):
        check_step_fits(huge_mu, (3, 32, 32), cpu, free=per_step)
    supervised = SimpleNamespace(batch_size=64 * 15, mu=7, algorithm="supervised")  # draws no unlabeled images
    check_step_fits(supervised, (3, 32, 32), cpu, free=per_step)
    with pytest.raises(UserError, match="per rank|at most --batch-size"):
        check_step_fits(cfg, (3, 32, 32), cpu, world=1, free=per_step // 2)
    check_step_fits(cfg, (3, 32, 32), cpu, world=2, free=per_step // 2)  # under torchrun each rank holds B/2


def test_a_batch_of_a_hundred_million_is_refused_up_front(tmp_path, capsys):
    argv = ["train", "--dataset", "digits", "--algorithm", "fixmatch", "--steps", "4", "--batch-size", "100000000"]
    assert main([*argv, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "needs" in err and "GiB for its inputs alone" in err and "at most --batch-size" in err, err
    assert not (tmp_path / "run").exists()
