"""fixmatch: faithful, fast FixMatch semi-supervised image classification.

The Python API (fixmatch.api): `fixmatch.train(...)`, `fixmatch.load(source)` -> a Model with
`.predict(images)`, `fixmatch.evaluate(model)`, and `fixmatch.TrainConfig`.
"""

__version__ = "0.1.0"
__all__ = ["TrainConfig", "evaluate", "load", "train"]


def __getattr__(name: str):
    # Looked up on first use: `import fixmatch` (every command, `fixmatch --help` and the ONNX server
    # included) must not import torch, which the API's modules do.
    if name in __all__:
        from fixmatch import api

        return getattr(api, name)
    raise AttributeError(f"module 'fixmatch' has no attribute {name!r}")
