"""An algorithm is one file: its class, registered under its own name, and its options, which the
config, the YAML file, `fixmatch train --help` and validation take from that file alone."""

from __future__ import annotations

import dataclasses
import importlib
import subprocess
import sys
import typing

import pytest

from fixmatch.algorithms import options as options_module
from fixmatch.algorithms.base import ALGORITHMS, Algorithm, register
from fixmatch.algorithms.options import ALGORITHM_MODULES, ALGORITHM_OPTIONS, read_algorithms
from fixmatch.algorithms.registry import build_algorithm
from fixmatch.config import TrainConfig
from fixmatch.errors import UserError
from fixmatch.training.resolve import resolve


def test_what_is_read_without_importing_is_what_each_file_defines():
    """options.py reads the files' source; here the files are imported and their dataclasses compared."""
    assert sorted(ALGORITHMS) == sorted(ALGORITHM_MODULES)
    for name, module_name in ALGORITHM_MODULES.items():
        module = importlib.import_module(f"fixmatch.algorithms.{module_name}")
        assert ALGORITHMS[name].__module__ == module.__name__
        declared = dataclasses.fields(module.Options) if hasattr(module, "Options") else ()
        hints = typing.get_type_hints(module.Options) if declared else {}
        for f in declared:
            spec = ALGORITHM_OPTIONS[f.name]
            assert name in spec.owners, (name, f.name)
            assert (spec.type, spec.default) == (hints[f.name], f.default), (name, f.name)
            assert (spec.help, spec.within, spec.fallback) == (
                f.metadata["help"],
                f.metadata["within"],
                f.metadata["fallback"],
            )
        owned = {n for n, s in ALGORITHM_OPTIONS.items() if name in s.owners}
        assert owned == {f.name for f in declared}, name


def test_every_option_is_a_config_field_a_flag_and_checked():
    from fixmatch.cli import build_parser

    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    train_help = build_parser()._subparsers._group_actions[0].choices["train"].format_help()  # type: ignore[union-attr]
    for name, spec in ALGORITHM_OPTIONS.items():
        assert fields[name].default == spec.default
        assert "--" + name.replace("_", "-") in train_help
        assert ", ".join(spec.owners) in fields[name].metadata["help"]  # the help names who reads it
        if spec.within is not None:  # outside its interval, infinite or NaN: one clear error
            for bad in (float("inf"), float("nan"), -1e9):
                with pytest.raises(UserError, match=name):
                    resolve(TrainConfig(algorithm="fixmatch", **{name: bad}))


def test_a_shared_option_must_be_declared_alike(tmp_path):
    head = "from dataclasses import dataclass\n\n\n@dataclass\nclass Options:\n"
    tmp_path.joinpath("one.py").write_text(head + '    x: float = opt(1.0, "x")\n\n\n@register\nclass One:\n    pass\n')
    tmp_path.joinpath("two.py").write_text(head + '    x: float = opt(2.0, "x")\n\n\n@register\nclass Two:\n    pass\n')
    with pytest.raises(RuntimeError, match="option 'x' is declared differently"):
        read_algorithms(tmp_path)
    tmp_path.joinpath("two.py").write_text(head + '    x: float = opt(1.0, "x")\n\n\n@register\nclass Two:\n    pass\n')
    names, opts = read_algorithms(tmp_path)
    assert names == {"one": "one", "two": "two"} and opts["x"].owners == ("one", "two")


def test_the_name_comes_from_the_class_and_a_second_one_is_refused():
    assert ALGORITHMS["flexmatch"].__name__ == "FlexMatch"

    class FixMatch(Algorithm):  # the same name as the registered one
        pass

    with pytest.raises(ValueError, match="two algorithms are named 'fixmatch'"):
        register(FixMatch)
    assert ALGORITHMS["fixmatch"].__module__ == "fixmatch.algorithms.fixmatch"


def test_each_algorithm_is_built_from_its_own_options():
    from fixmatch.algorithms.base import AlgorithmSetup

    for name in ALGORITHMS:
        cfg = resolve(TrainConfig(algorithm=name, dataset="digits"))
        assert type(build_algorithm(cfg, AlgorithmSetup(10, 32))) is ALGORITHMS[name]


def test_reading_the_options_loads_no_torch():
    code = f"import sys; import {options_module.__name__}, fixmatch.config; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr


def test_the_engine_logs_whatever_statistics_an_algorithm_returns():
    """FreeMatch's fairness loss, and a statistic no algorithm had before, reach the evaluation record."""
    from tiny_runs import tiny_config, tiny_trainer

    trainer = tiny_trainer(tiny_config(algorithm="freematch", device="cpu"))[0]
    algorithm = trainer.algorithm

    def with_a_new_statistic(*args, **kw):
        loss, stats = algorithm(*args, **kw)
        return loss, {**stats, "new_statistic": loss.detach() * 0 + 2.0}

    trainer.algorithm = with_a_new_statistic
    for _ in range(3):
        trainer.step()
    rec = trainer.record_evaluation(0.0)
    assert rec["new_statistic"] == 2.0 and "loss_e" in rec and rec["loss_u"] >= 0


def test_models_and_datasets_are_named_after_their_builders_and_a_second_one_is_refused():
    from fixmatch.data import DATASETS
    from fixmatch.data import register as register_dataset
    from fixmatch.models import MODELS
    from fixmatch.models.registry import register as register_model

    assert all(fn.__name__ == name for name, fn in MODELS.items())
    assert all(spec.loader.__name__ == f"load_{name}" for name, spec in DATASETS.items())

    def wrn28_2(num_classes, in_channels=3, wiring="official"):
        raise AssertionError("never built")

    def load_cifar10(data_dir=None, **_):
        raise AssertionError("never loaded")

    with pytest.raises(ValueError, match="two models are named 'wrn28_2'"):
        register_model(wrn28_2)
    with pytest.raises(ValueError, match="two datasets are named 'cifar10'"):
        register_dataset("another CIFAR-10")(load_cifar10)
    assert MODELS["wrn28_2"].__module__ == "fixmatch.models.wideresnet"
    assert DATASETS["cifar10"].loader.__module__ == "fixmatch.data.cifar"
