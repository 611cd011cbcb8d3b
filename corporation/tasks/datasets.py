"""Datasets for classification: scikit-learn's bundled digits, and MNIST / Fashion-MNIST from IDX files.

Nothing is downloaded: a missing dataset is a one-line :class:`DataError` saying where we looked and how to
get it. Loaders return float32 features in [0, 1] and int64 labels, as numpy arrays.
"""
from __future__ import annotations

import gzip
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..registry import DATASETS

Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # x_train, y_train, x_test, y_test


@dataclass(frozen=True)
class DatasetInfo:
    features: int
    classes: int
    how_to_get: str


def register_dataset(name: str, info: DatasetInfo) -> Callable:
    return DATASETS.register(name, info)


@register_dataset("digits", DatasetInfo(64, 10, "it ships with scikit-learn: pip install scikit-learn"))
def load_digits(data_dir: str | None = None) -> Arrays:
    """scikit-learn's 1,797 real 8x8 digits; a fixed stratified split: 1,437 train / 360 test."""
    try:
        from sklearn.datasets import load_digits as sk_load
        from sklearn.model_selection import train_test_split
    except ImportError:
        raise DataError("dataset 'digits' needs scikit-learn: pip install scikit-learn") from None
    x, y = sk_load(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.2, random_state=0, stratify=y)
    return x_tr, y_tr.astype(np.int64), x_te, y_te.astype(np.int64)


IDX_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file (optionally gzipped): the format of MNIST and Fashion-MNIST."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DataError(f"{path}: not an IDX file of unsigned bytes")
    ndim = data[3]
    shape = struct.unpack(">" + "I" * ndim, data[4: 4 + 4 * ndim])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise DataError(f"{path}: truncated IDX file ({body.size} bytes for shape {shape})")
    return body.reshape(shape)


def _find_idx(directory: Path, stem: str) -> Path | None:
    for candidate in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (directory / candidate).is_file():
            return directory / candidate
    return None


def idx_dirs(name: str, data_dir: str | None, system_dir: str | None) -> list[Path]:
    """Where we look for an IDX dataset, in order."""
    dirs: list[Path] = []
    if data_dir:
        dirs += [Path(data_dir), Path(data_dir) / name]
    env = os.environ.get("CORPORATION_DATA")
    if env:
        dirs += [Path(env) / name, Path(env)]
    if system_dir:
        dirs.append(Path(system_dir))
    return dirs


def load_idx_dataset(name: str, data_dir: str | None, system_dir: str | None, how: str) -> Arrays:
    dirs = idx_dirs(name, data_dir, system_dir)
    for d in dirs:
        paths = {k: _find_idx(d, stem) for k, stem in IDX_FILES.items()}
        if all(paths.values()):
            arrays = {k: read_idx(p) for k, p in paths.items()}  # type: ignore[arg-type]
            x_tr = arrays["x_train"].reshape(len(arrays["x_train"]), -1).astype(np.float32) / 255.0
            x_te = arrays["x_test"].reshape(len(arrays["x_test"]), -1).astype(np.float32) / 255.0
            return x_tr, arrays["y_train"].astype(np.int64), x_te, arrays["y_test"].astype(np.int64)
    looked = ", ".join(str(d) for d in dirs) or "nowhere (no task.data_dir, no $CORPORATION_DATA)"
    raise DataError(f"dataset '{name}' not found: looked for {IDX_FILES['x_train']}[.gz] and the 3 other IDX "
                    f"files in {looked}; {how}")


FASHION_HOW = ("install it with 'apt-get install -y dataset-fashion-mnist', or put the IDX files in "
               "$CORPORATION_DATA/fashion_mnist or task.data_dir")
MNIST_HOW = "put the 4 MNIST IDX files in $CORPORATION_DATA/mnist or name their folder in task.data_dir"


@register_dataset("fashion_mnist", DatasetInfo(784, 10, FASHION_HOW))
def load_fashion_mnist(data_dir: str | None = None) -> Arrays:
    return load_idx_dataset("fashion_mnist", data_dir, "/usr/share/datasets/fashion-mnist", FASHION_HOW)


@register_dataset("mnist", DatasetInfo(784, 10, MNIST_HOW))
def load_mnist(data_dir: str | None = None) -> Arrays:
    return load_idx_dataset("mnist", data_dir, None, MNIST_HOW)


def load(name: str, data_dir: str | None = None) -> Arrays:
    return DATASETS.get(name).factory(data_dir)


def info(name: str) -> DatasetInfo:
    return DATASETS.get(name).params
