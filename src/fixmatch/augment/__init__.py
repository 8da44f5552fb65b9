"""Augmentation on the device, batched per sample: the weak view (weak.py) and two strong policies,
RandAugment (randaugment.py) and CTAugment (ctaugment.py), that draw from one op table (kernels.py,
its rescale in pil_resample.py) through their own magnitude maps. Each op equals its PIL counterpart
bit-exactly (tests/augment/test_augment.py, tests/augment/test_ctaugment.py)."""
