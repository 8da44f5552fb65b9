"""scikit-learn's load_digits: 1,797 real 8x8 grey digits that ship inside scikit-learn (no download).

The embedded default dataset: a fixed stratified test split of 500 images, the rest for training.
"""

import numpy as np

from fixmatch.data.base import from_numpy, register

TEST_SIZE = 500
SPLIT_SEED = 0  # fixed: the test split never changes between runs


@register(
    "scikit-learn load_digits, 8x8 grey, 10 classes (embedded, no download)",
    # A short CPU schedule: EMA warm-up and a faster BatchNorm momentum, since the official 0.999
    # averages (EMA and BN) still remember the random initialisation after only 1000 steps.
    defaults=dict(
        baseline="supervised",  # the demo: FixMatch beside supervised training on the same 20 labels
        model="cnn_small",
        num_labels=20,
        steps=1000,
        eval_every=100,
        batch_size=16,
        flip=False,
        ema_warmup=True,
        bn_momentum=0.1,
        lr=0.05,
    ),
    files="nothing: ships inside scikit-learn",
)
def load_digits(data_dir=None, **_):
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split

    d = sk_digits()
    # Pixel values are 0..16; scale to the 0..255 range the augmentations expect.
    x = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)
    y = d.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=TEST_SIZE, stratify=y, random_state=SPLIT_SEED)
    return from_numpy("digits", x_tr, y_tr, x_te, y_te, [str(i) for i in range(10)])
