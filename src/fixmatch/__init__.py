"""fixmatch: faithful, fast FixMatch semi-supervised image classification.

The Python API (fixmatch.api): `fixmatch.train(...)`, `fixmatch.load(source)` -> a Model with
`.predict(images)`, `fixmatch.evaluate(model)`, and `fixmatch.TrainConfig`.
"""

from fixmatch.api import TrainConfig, evaluate, load, train

__version__ = "0.1.0"
__all__ = ["TrainConfig", "evaluate", "load", "train"]
