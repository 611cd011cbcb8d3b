"""Datasets for classification: scikit-learn's bundled digits, and MNIST / Fashion-MNIST from IDX files.

Nothing is downloaded: a missing dataset is a one-line :class:`DataError` saying where we looked and how to
get it, and so is a corrupt or mismatched file (bad magic, truncated, wrong dimensions, label count not the
image count, labels out of range, a gzip that does not decompress). Loaders return float32 features in
[0, 1] and int64 labels, as numpy arrays.
"""
from __future__ import annotations

import gzip
import io
import math
import os
import stat
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError, ScenarioError, short
from ..registry import DATASETS
from .files import FileProblem, check_regular, read_file

MAX_IDX_BYTES = 2**30  # one IDX file, uncompressed (MNIST's training images: 47 MB)

Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # x_train, y_train, x_test, y_test


@dataclass(frozen=True)
class DatasetInfo:
    """What validation knows about a dataset without loading it. ``train_size``: training examples when
    fixed (else checked when the files are read); ``reads_files``: it honours ``task.data_dir``."""

    features: int
    classes: int
    how_to_get: str
    train_size: int | None = None
    reads_files: bool = False


def register_dataset(name: str, info: DatasetInfo) -> Callable:
    return DATASETS.register(name, info)


@register_dataset("digits", DatasetInfo(64, 10, "it ships with scikit-learn: pip install scikit-learn", 1437))
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


def _idx_bytes(path: Path) -> bytes:
    """The (decompressed) bytes of one IDX file; DataError naming it when unreadable or not gzip."""
    try:
        data = read_file(path, MAX_IDX_BYTES)
        if path.suffix == ".gz":
            with gzip.GzipFile(fileobj=io.BytesIO(data)) as f:
                data = f.read(MAX_IDX_BYTES + 1)
    except FileProblem as e:
        raise DataError(f"{path}: the IDX file {e.reason}") from None
    except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        raise DataError(f"{path}: the gzip file does not decompress ({type(e).__name__}): download it again, "
                        "or put the uncompressed file there") from None
    if len(data) > MAX_IDX_BYTES:
        raise DataError(f"{path}: larger than {MAX_IDX_BYTES:_} bytes uncompressed, not an IDX dataset file")
    return data


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file (optionally gzipped): the format of MNIST and Fashion-MNIST."""
    data = _idx_bytes(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08 or data[3] == 0:
        raise DataError(f"{path}: not an IDX file of unsigned bytes (bad magic number): download it again")
    ndim = data[3]
    if len(data) < 4 + 4 * ndim:
        raise DataError(f"{path}: truncated IDX header ({len(data)} bytes for {ndim} dimensions)")
    shape = struct.unpack(">" + "I" * ndim, data[4: 4 + 4 * ndim])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != math.prod(shape):
        raise DataError(f"{path}: truncated or oversized IDX file ({body.size} bytes of data for shape {shape}): "
                        "download it again")
    return body.reshape(shape)


def check_arrays(name: str, paths: dict[str, Path], arrays: dict[str, np.ndarray]) -> None:
    """The four IDX arrays must fit the dataset: images (n, ...) of ``features`` pixels, labels (n,) in range."""
    meta = info(name)
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        px, py = paths[f"x_{split}"], paths[f"y_{split}"]
        if x.ndim < 2 or math.prod(x.shape[1:]) != meta.features:
            raise DataError(f"{px}: images of shape {x.shape[1:]} ({math.prod(x.shape[1:])} pixels), but "
                            f"'{name}' has {meta.features} pixels per image: this is not a {name} file")
        if y.ndim != 1:
            raise DataError(f"{py}: labels must be one-dimensional, got shape {y.shape}: is it an image file?")
        if len(x) == 0:
            raise DataError(f"{px}: the file holds no images: download it again")
        if len(x) != len(y):
            raise DataError(f"{py}: {len(y)} labels for {len(x)} images in {px}: the files do not belong together")
        if int(y.max()) >= meta.classes:
            raise DataError(f"{py}: label {int(y.max())} is out of range for '{name}' ({meta.classes} classes)")


def _find_idx(directory: Path, stem: str) -> Path | None:
    """The file of ``stem`` in ``directory`` (plain or .gz, '-idx' or '.idx' spelling), None if absent."""
    for candidate in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        path = directory / candidate
        try:
            check_regular(path)
        except FileProblem as e:
            if e.missing:
                continue
            raise DataError(f"{path}: the IDX file {e.reason}") from None
        return path
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
            check_arrays(name, paths, arrays)  # type: ignore[arg-type]
            x_tr = arrays["x_train"].reshape(len(arrays["x_train"]), -1).astype(np.float32) / 255.0
            x_te = arrays["x_test"].reshape(len(arrays["x_test"]), -1).astype(np.float32) / 255.0
            return x_tr, arrays["y_train"].astype(np.int64), x_te, arrays["y_test"].astype(np.int64)
    looked = ", ".join(str(d) for d in dirs) or "nowhere (no task.data_dir, no $CORPORATION_DATA)"
    raise DataError(f"dataset '{name}' not found: looked for {IDX_FILES['x_train']}[.gz] and the 3 other IDX "
                    f"files in {looked}; {how}")


FASHION_HOW = ("install it with 'apt-get install -y dataset-fashion-mnist', or put the IDX files in "
               "$CORPORATION_DATA/fashion_mnist or task.data_dir")
MNIST_HOW = "put the 4 MNIST IDX files in $CORPORATION_DATA/mnist or name their folder in task.data_dir"


@register_dataset("fashion_mnist", DatasetInfo(784, 10, FASHION_HOW, reads_files=True))
def load_fashion_mnist(data_dir: str | None = None) -> Arrays:
    return load_idx_dataset("fashion_mnist", data_dir, "/usr/share/datasets/fashion-mnist", FASHION_HOW)


@register_dataset("mnist", DatasetInfo(784, 10, MNIST_HOW, reads_files=True))
def load_mnist(data_dir: str | None = None) -> Arrays:
    return load_idx_dataset("mnist", data_dir, None, MNIST_HOW)


def load(name: str, data_dir: str | None = None) -> Arrays:
    return DATASETS.get(name).factory(data_dir)


def info(name: str) -> DatasetInfo:
    return DATASETS.get(name).params


def check_data_dir(dataset: str, data_dir: str | None, path: str) -> None:
    """A ``task.data_dir`` the user named must be a readable folder (when the dataset reads files)."""
    if data_dir is None or not info(dataset).reads_files:
        return
    try:
        mode = os.stat(data_dir).st_mode
    except (OSError, ValueError) as e:
        why = "does not exist" if isinstance(e, FileNotFoundError) else f"cannot be read ({type(e).__name__})"
        raise ScenarioError(f"folder {short(data_dir)} {why}: name the folder holding the {dataset} IDX files",
                            f"{path}.data_dir") from None
    if not stat.S_ISDIR(mode):
        raise ScenarioError(f"{short(data_dir)} is not a folder: name the folder holding the {dataset} IDX files",
                            f"{path}.data_dir")


def check_batch(dataset: str, batch_size: int, train_limit: int | None, path: str) -> None:
    """A training batch cannot be larger than the training set (known here for fixed datasets)."""
    size = info(dataset).train_size
    if size is not None and train_limit is not None and train_limit > size:
        raise ScenarioError(f"train_limit {train_limit:_} is above the {size:_} training examples of '{dataset}': "
                            "lower it or remove it", f"{path}.train_limit")
    if train_limit is not None:
        size = train_limit if size is None else min(size, train_limit)
    if size is not None and batch_size > size:
        raise ScenarioError(f"batch_size {batch_size:_} is above the {size:_} training examples of '{dataset}'"
                            f"{' (train_limit)' if train_limit is not None else ''}: lower it", f"{path}.batch_size")


def check_loaded(dataset: str, batch_size: int, train_size: int) -> None:
    """The same check once the files are read (their size is not known at validation)."""
    if batch_size > train_size:
        raise DataError(f"task.batch_size {batch_size:_} is above the {train_size:_} training examples of "
                        f"'{dataset}' as loaded: lower it")
