"""The algorithm registry: every algorithm file of this package, imported, puts its class in
ALGORITHMS (base.register); `build_algorithm` makes the configured one."""

from __future__ import annotations

import importlib

from fixmatch.algorithms.base import ALGORITHMS, Algorithm, AlgorithmSetup
from fixmatch.algorithms.options import ALGORITHM_MODULES

for _module in sorted(set(ALGORITHM_MODULES.values())):
    importlib.import_module(f"{__package__}.{_module}")


def build_algorithm(cfg, setup: AlgorithmSetup) -> Algorithm:
    return ALGORITHMS[cfg.algorithm].from_config(cfg, setup)


__all__ = ["ALGORITHMS", "build_algorithm"]
