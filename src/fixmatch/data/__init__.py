"""Dataset registry. Each module registers its loader; `load_dataset` looks it up by name."""

from fixmatch.data.base import DATASETS, DatasetSpec, ImageDataset, from_numpy, register
from fixmatch.errors import UserError

# Importing a module registers its datasets.
from fixmatch.data import digits  # noqa: F401,E402
from fixmatch.data import cifar, svhn, fer2013, folder  # noqa
from fixmatch.data import user_folders, stl10  # noqa: F401,E402


def get_spec(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise UserError(f"unknown dataset {name!r}; available: {', '.join(sorted(DATASETS))}")
    return DATASETS[name]


def load_dataset(name: str, data_dir=None, **options) -> ImageDataset:
    return get_spec(name).loader(data_dir, **options)


__all__ = ["DATASETS", "DatasetSpec", "ImageDataset", "from_numpy", "register", "get_spec", "load_dataset"]
