"""Models: `build_model(name, num_classes, in_channels, wiring=..., bn_momentum=...)` from the
registry (registry.py) that the network modules fill (wideresnet.py, small.py), their layers
(layers.py) and the input scaling they are trained with (input_scaling.py)."""

from fixmatch.models import small, wideresnet  # noqa: F401  (importing them registers the models)
from fixmatch.models.registry import MODELS, OFFICIAL_BN_MOMENTUM, build_model, count_parameters, register

__all__ = ["MODELS", "OFFICIAL_BN_MOMENTUM", "build_model", "count_parameters", "register"]
