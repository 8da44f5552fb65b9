"""Algorithm registry: each algorithm turns the logits of one step into a loss and statistics."""

from fixmatch.algorithms.fixmatch import FixMatch
from fixmatch.algorithms.supervised import Supervised

ALGORITHMS = {"fixmatch": FixMatch, "supervised": Supervised}

__all__ = ["ALGORITHMS", "FixMatch", "Supervised"]
