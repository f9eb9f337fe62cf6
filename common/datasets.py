"""The official MNIST and UCI housing files, read offline: the one reader of each, for every stage.

Training splits them three ways, export takes its parity samples from the test split, scripts and
benchmarks take real test digits: all through the functions here. Nothing is ever downloaded; a
missing file raises ``DataMissingError`` naming the file and the folder to put it in.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
HOUSING_FILE = "housing.data"
HOUSING_ROWS, HOUSING_COLUMNS = 506, 14
HOUSING_TRAIN_ROWS = 404  # the course's and paddle.text.UCIHousing's split: first 80% train, rest test
SPLIT_SEED = 0  # the validation split is fixed, so runs with different --seed compare on the same rows


class DataMissingError(FileNotFoundError):
    """A dataset file is not where the reader looks for it (the message says where to put it)."""


def paddle_cache_dir(name: str) -> Path:
    """Where Paddle's own dataset classes download ``name`` to (and look first)."""
    return Path(os.path.expanduser("~/.cache/paddle/dataset")) / name


def find_file(filename: str, data_dir: str | os.PathLike | None, cache_name: str) -> Path:
    """Locate a dataset file in ``data_dir`` (or its ``cache_name`` subfolder) or Paddle's cache."""
    folders = [Path(data_dir), Path(data_dir) / cache_name] if data_dir else [paddle_cache_dir(cache_name)]
    for folder in folders:
        if (folder / filename).is_file():
            return folder / filename
    where = folders[0]
    raise DataMissingError(
        f"dataset file {filename} not found in {where}. These machines cannot download it: copy the "
        f"official file there (e.g. mkdir -p {where} && cp ../shared/data/{cache_name}/* {where}/), "
        f"or pass --data-dir FOLDER that holds it")


def read_mnist(split: str, data_dir: str | os.PathLike | None = None, limit: int | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
    """MNIST ``split`` ("train" or "test") via ``paddle.vision.datasets.MNIST`` from local IDX files.

    Returns uint8 images (N, 28, 28), white on black as in the files, and int64 labels (N,);
    ``limit`` keeps the first N. The arrays are read-only: one parse of each file is kept per
    process (Paddle's parser takes seconds for the training split), and runs in one process (a
    notebook, export after training) share it.
    """
    images, labels = (find_file(name, data_dir, "mnist") for name in MNIST_FILES[split])
    x, y = _parse_mnist(split, images, labels, *(os.stat(p).st_mtime_ns for p in (images, labels)))
    return x[:limit], y[:limit]


@functools.lru_cache(maxsize=2)  # a training run holds both splits
def _parse_mnist(split: str, images: Path, labels: Path, *mtimes: int) -> tuple[np.ndarray, np.ndarray]:
    """One parse of a split's two files (``mtimes``: a file replaced on disk is read again)."""
    import paddle

    ds = paddle.vision.datasets.MNIST(image_path=str(images), label_path=str(labels), mode=split,
                                      download=False, backend="cv2")
    x = np.asarray(ds.images, dtype=np.uint8).reshape(-1, 28, 28)
    y = np.asarray(ds.labels, dtype=np.int64).reshape(-1)
    x.flags.writeable = y.flags.writeable = False
    return x, y


def read_housing(data_dir: str | os.PathLike | None = None) -> np.ndarray:
    """The 506 x 14 UCI housing table, float64 (last column: median value, $1000s)."""
    path = find_file(HOUSING_FILE, data_dir, "uci_housing")
    table = np.fromfile(path, sep=" ", dtype=np.float64)
    if table.size != HOUSING_ROWS * HOUSING_COLUMNS:
        raise DataMissingError(f"{path} holds {table.size} numbers, expected {HOUSING_ROWS} rows x "
                               f"{HOUSING_COLUMNS}; replace it with the official housing.data")
    return table.reshape(HOUSING_ROWS, HOUSING_COLUMNS)


def housing_split(data_dir: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(training rows, test rows): the course's first 404 and last 102 rows of the table."""
    table = read_housing(data_dir)
    return table[:HOUSING_TRAIN_ROWS], table[HOUSING_TRAIN_ROWS:]


def carve(n: int, val_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Fixed random (train, validation) index split of ``n`` training samples."""
    if val_size >= n:
        raise ValueError(f"--val-size {val_size} leaves no training data out of {n} samples")
    order = np.random.RandomState(SPLIT_SEED).permutation(n)
    return np.sort(order[val_size:]), np.sort(order[:val_size])


@dataclass
class Arrays:
    """Inputs and targets of one split, in memory (what the loaders and evaluations iterate)."""

    x: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.x)


@dataclass
class Splits:
    """train / validation (carved from the training data, for choices) / test (the official one)."""

    train: Arrays
    val: Arrays | None
    test: Arrays
    stats: dict  # what export and serving need to reproduce the inputs (housing normalisation)
