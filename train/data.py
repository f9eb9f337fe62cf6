"""Datasets and loaders: official MNIST and UCI housing files, read offline, split three ways.

train / validation (carved from the training data, for choices) / test (the official one, only
ever evaluated). Housing features are normalised with statistics of the training rows only.
"""
from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import paddle
from paddle.io import DataLoader, Dataset, DistributedBatchSampler

from common.digit_image import normalize
from common.housing import FEATURE_NAMES

from .errors import ConfigError, DataMissingError

MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
HOUSING_FILE = "housing.data"
HOUSING_TRAIN_ROWS = 404  # the course's and paddle.text.UCIHousing's split: first 80% train, rest test
SPLIT_SEED = 0  # the validation split is fixed, so runs with different --seed compare on the same rows


def paddle_cache_dir(name: str) -> Path:
    """Where Paddle's own dataset classes download ``name`` to (and look first)."""
    return Path(os.path.expanduser("~/.cache/paddle/dataset")) / name


def find_file(filename: str, data_dir: str | None, cache_name: str) -> Path:
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


class ArrayDataset(Dataset):
    """(features, label) pairs from two in-memory arrays; what both tasks' loaders iterate."""

    def __init__(self, x: np.ndarray, y: np.ndarray):
        assert len(x) == len(y)
        self.x, self.y = x, y

    def __getitem__(self, i):
        return self.x[i], self.y[i]

    def __len__(self):
        return len(self.x)


@dataclass
class Splits:
    train: ArrayDataset
    val: ArrayDataset | None
    test: ArrayDataset
    stats: dict  # what export and serve need to reproduce the inputs (housing normalisation)


def _carve(n: int, val_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Fixed random (train, val) index split of ``n`` training samples."""
    if val_size >= n:
        raise ConfigError(f"--val-size {val_size} leaves no training data out of {n} samples")
    order = np.random.RandomState(SPLIT_SEED).permutation(n)
    return np.sort(order[val_size:]), np.sort(order[:val_size])


def load_mnist(data_dir: str | None, val_size: int, train_subset: int = 0) -> Splits:
    """MNIST through ``paddle.vision.datasets.MNIST`` from local IDX files, normalised for training."""
    arrays = {}
    for mode, (images, labels) in MNIST_FILES.items():
        ds = paddle.vision.datasets.MNIST(
            image_path=str(find_file(images, data_dir, "mnist")),
            label_path=str(find_file(labels, data_dir, "mnist")),
            mode=mode, download=False, backend="cv2")
        x = normalize(np.asarray(ds.images, dtype=np.uint8).reshape(-1, 28, 28))
        arrays[mode] = (x, np.asarray(ds.labels, dtype=np.int64).reshape(-1))
    x, y = arrays["train"]
    train_idx, val_idx = _carve(len(x), val_size)
    if train_subset:
        train_idx = train_idx[:train_subset]
    val = ArrayDataset(x[val_idx], y[val_idx]) if val_size else None
    return Splits(ArrayDataset(x[train_idx], y[train_idx]), val, ArrayDataset(*arrays["test"]), stats={})


def read_housing(data_dir: str | None) -> np.ndarray:
    """The 506 x 14 UCI housing table (last column: median value, $1000s)."""
    path = find_file(HOUSING_FILE, data_dir, "uci_housing")
    table = np.fromfile(path, sep=" ", dtype=np.float64)
    if table.size != 506 * 14:
        raise DataMissingError(f"{path} holds {table.size} numbers, expected 506 rows x 14; "
                               "replace it with the official housing.data")
    return table.reshape(506, 14)


def load_housing(data_dir: str | None, val_size: int, train_subset: int = 0) -> Splits:
    """Course split (first 404 rows train, last 102 test); normalisation from training rows only.

    ``paddle.text.datasets.UCIHousing`` reads the same file but normalises with all 506 rows, which
    leaks the test set into training; so the file is parsed here and only the training rows count.
    The target is standardised too (the exported model de-normalises it back to $1000s).
    """
    table = read_housing(data_dir)
    train_rows, test_rows = table[:HOUSING_TRAIN_ROWS], table[HOUSING_TRAIN_ROWS:]
    train_idx, val_idx = _carve(len(train_rows), val_size)
    if train_subset:
        train_idx = train_idx[:train_subset]
    fit = train_rows[train_idx]
    stats = {
        "feature_names": list(FEATURE_NAMES),
        "feature_mean": fit[:, :13].mean(0).tolist(), "feature_std": fit[:, :13].std(0).tolist(),
        "target_mean": float(fit[:, 13].mean()), "target_std": float(fit[:, 13].std()),
    }

    def dataset(rows: np.ndarray) -> ArrayDataset:
        x, y = normalize_housing(rows[:, :13], stats), (rows[:, 13:] - stats["target_mean"]) / stats["target_std"]
        return ArrayDataset(x, y.astype(np.float32))

    val = dataset(train_rows[val_idx]) if val_size else None
    return Splits(dataset(fit), val, dataset(test_rows), stats)


def normalize_housing(features: np.ndarray, stats: dict) -> np.ndarray:
    """Standardise raw features with the saved training statistics (float32)."""
    mean, std = np.asarray(stats["feature_mean"]), np.asarray(stats["feature_std"])
    return ((np.asarray(features, dtype=np.float64) - mean) / std).astype(np.float32)


def load_splits(task: str, data_dir: str | None, val_size: int, train_subset: int = 0) -> Splits:
    """Train/val/test datasets for ``task``."""
    loader = {"mnist": load_mnist, "housing": load_housing}[task]
    return loader(data_dir, val_size, train_subset)


class SeededBatchSampler(DistributedBatchSampler):
    """``DistributedBatchSampler`` whose shuffle is a function of (seed, epoch) and can start mid-epoch.

    Paddle's sampler seeds its shuffle with the epoch number alone; here the run's seed enters too,
    and ``set_epoch(epoch, start_batch)`` skips the batches a resumed run has already trained on,
    so the data order after a resume is exactly the one the uninterrupted run would have seen.
    """

    def __init__(self, dataset, batch_size: int, seed: int, shuffle: bool = True):
        super().__init__(dataset, batch_size, shuffle=shuffle, drop_last=False)
        self.seed, self.logical_epoch, self.start_batch = seed, 0, 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.logical_epoch, self.start_batch = epoch, start_batch

    def __iter__(self):
        self.epoch = (self.seed * 1_000_003 + self.logical_epoch) % 2**32  # the parent's shuffle seed
        return itertools.islice(super().__iter__(), self.start_batch, None)

    def __len__(self):
        return super().__len__() - self.start_batch

    def batches_per_epoch(self) -> int:
        return super().__len__()


def train_loader(dataset: Dataset, batch_size: int, seed: int, num_workers: int) -> DataLoader:
    """Shuffled, resumable training loader (per-rank shard when data-parallel)."""
    sampler = SeededBatchSampler(dataset, batch_size, seed)
    return DataLoader(dataset, batch_sampler=sampler, num_workers=num_workers)


def eval_loader(dataset: Dataset, batch_size: int) -> DataLoader:
    """Plain in-order loader over the whole dataset (every rank evaluates all of it)."""
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, drop_last=False)
