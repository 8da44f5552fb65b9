"""Augmentation on the device, batched per sample: the weak view, RandAugment (randaugment.py) and
CTAugment (ctaugment.py, its ops in ctaugment_ops.py), both built on the PIL-exact kernels
(kernels.py, pil_resample.py). Each op equals its PIL counterpart bit-exactly (tests/test_augment.py,
tests/test_ctaugment.py)."""
