"""fixmatch: faithful, fast FixMatch semi-supervised image classification."""

__version__ = "0.1.0"
