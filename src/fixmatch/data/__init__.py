"""Dataset registry. Each module registers its loader; `load_dataset` looks it up by name."""

# Importing a module registers its datasets (each takes the registry from base.py).
from fixmatch.data import cifar, digits, fer2013, imagefolder, npz, stl10, svhn, user_folders  # noqa: F401
from fixmatch.data.base import DATASETS, DatasetSpec, ImageDataset, from_numpy, register
from fixmatch.errors import UserError


def get_spec(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise UserError(f"unknown dataset {name!r}; available: {', '.join(sorted(DATASETS))}")
    return DATASETS[name]


def load_dataset(name: str, data_dir=None, **options) -> ImageDataset:
    return get_spec(name).loader(data_dir, **options)


def load_data(cfg) -> ImageDataset:
    """The dataset a TrainConfig names, with the loader options it sets."""
    return load_dataset(
        cfg.dataset,
        cfg.data_dir,
        download=cfg.download,
        svhn_extra=cfg.svhn_extra,
        fer_test=cfg.fer_test,
        image_size=cfg.image_size,
        channels=cfg.channels,
        val_per_class=cfg.val_per_class,
    )


__all__ = ["DATASETS", "DatasetSpec", "ImageDataset", "from_numpy", "register", "get_spec", "load_dataset", "load_data"]
