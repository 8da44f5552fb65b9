"""Algorithm registry: each algorithm turns the logits of one step into a loss and statistics
(fixmatch.algorithms.base says what a stateful one adds)."""

from fixmatch.algorithms.base import Algorithm, AlgorithmSetup
from fixmatch.algorithms.fixmatch import FixMatch
from fixmatch.algorithms.flexmatch import FlexMatch
from fixmatch.algorithms.freematch import FreeMatch
from fixmatch.algorithms.softmatch import SoftMatch
from fixmatch.algorithms.supervised import Supervised

ALGORITHMS: dict[str, type[Algorithm]] = {
    "fixmatch": FixMatch,
    "supervised": Supervised,
    "flexmatch": FlexMatch,
    "freematch": FreeMatch,
    "softmatch": SoftMatch,
}


def build_algorithm(cfg, setup: AlgorithmSetup) -> Algorithm:
    return ALGORITHMS[cfg.algorithm].from_config(cfg, setup)


__all__ = [
    "ALGORITHMS",
    "Algorithm",
    "AlgorithmSetup",
    "FixMatch",
    "FlexMatch",
    "FreeMatch",
    "SoftMatch",
    "Supervised",
    "build_algorithm",
]
