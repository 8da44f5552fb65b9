"""benchmarks/reproduce.py builds the `fixmatch train` commands of a RESULTS.md row: the row's recipe
from configs/ when there is one, its labels, folds and budget; the CLI accepts each as the config
the row names, and a tiny row runs end to end into its table."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from repo import REPO

from fixmatch.cli import build_parser
from fixmatch.config import from_dict, load_yaml
from fixmatch.training.resolve import resolve

sys.path.insert(0, str(REPO / "benchmarks"))

import reproduce  # noqa: E402  (from benchmarks/, put on the path above)


def built(*argv: str) -> list[tuple[Path, list[str]]]:
    return reproduce.commands(reproduce.parse(list(argv)))


def as_config(cmd: list[str]):
    """The run config the CLI makes of a built command (the YAML file, then the flags)."""
    assert cmd[:2] == ["fixmatch", "train"]
    args = build_parser().parse_args(cmd[1:])
    flags = {k: v for k, v in vars(args).items() if k not in ("command", "func", "config", "resume")}
    return resolve(from_dict({**(load_yaml(args.config) if args.config else {}), **flags}))


def test_a_budget_row_uses_its_recipe_fold_and_budget():
    ((run, cmd),) = built("--dataset", "cifar10", "--num-labels", "250", "--fold", "1", "--minutes", "1.9167",
                          "--data-dir", "DATA")  # fmt: skip
    assert cmd[cmd.index("--config") + 1] == str(REPO / "configs" / "cifar10_250.yaml")
    cfg = as_config(cmd)
    assert (cfg.dataset, cfg.num_labels, cfg.fold, cfg.time_budget) == ("cifar10", 250, 1, 1.9167)
    assert (cfg.model, cfg.steps, cfg.strong_augment, cfg.data_dir) == ("wrn28_2", 2**20, "ra", "DATA")
    assert run == Path("runs/reproduce/cifar10-250-ra-fixmatch-fold1")


def test_the_full_protocol_over_five_folds_with_cta():
    planned = built("--dataset", "cifar10", "--num-labels", "40", "--folds", "1", "2", "3", "4", "5", "--full",
                    "--strong-augment", "cta")  # fmt: skip
    configs = [as_config(cmd) for _, cmd in planned]
    assert [c.fold for c in configs] == [1, 2, 3, 4, 5] and len({run for run, _ in planned}) == 5
    assert all(c.strong_augment == "cta" and c.time_budget is None and c.steps == 2**20 for c in configs)
    assert all(cmd[cmd.index("--config") + 1].endswith("cifar10_40_cta.yaml") for _, cmd in planned)


def test_a_row_without_a_recipe_names_its_dataset_and_labels():
    ((_, cmd),) = built(
        "--dataset", "fer2013", "--num-labels", "70", "--algorithm", "supervised", "--minutes", "1.4439"
    )
    assert "--config" not in cmd
    cfg = as_config(cmd)
    assert (cfg.dataset, cfg.num_labels, cfg.algorithm, cfg.fold, cfg.time_budget) == (
        "fer2013",
        70,
        "supervised",
        1,
        1.4439,
    )


def test_the_length_is_required():
    with pytest.raises(SystemExit):
        reproduce.parse(["--dataset", "cifar10", "--num-labels", "250"])


def test_a_tiny_row_runs_into_its_table(tmp_path, capsys):
    fixmatch = f"{sys.executable} -m fixmatch"
    code = reproduce.main(["--dataset", "digits", "--num-labels", "20", "--folds", "1", "2", "--full",
                           "--out", str(tmp_path), "--fixmatch", fixmatch,
                           "--", "--steps", "4", "--eval-every", "2", "--threads", "1"])  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert "| digits-20-ra-fixmatch-fold1 |" in out and "| digits-20-ra-fixmatch-fold2 |" in out
    assert (tmp_path / "digits-20-ra-fixmatch-fold2" / "summary.json").is_file()
