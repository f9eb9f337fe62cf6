"""Training and evaluation loaders over a task's in-memory splits (``common.tasks``).

The datasets themselves are read in ``common/datasets.py``, split and normalised by the task's
``load_splits``; here they become ``paddle.io`` datasets and loaders whose shuffle is seeded by
(seed, epoch) and can start mid-epoch, so a resumed run sees exactly the data order it would have.
"""
from __future__ import annotations

import itertools

from paddle.io import DataLoader, Dataset, DistributedBatchSampler

from common.datasets import Arrays


class ArrayDataset(Dataset):
    """(input, target) pairs from a split's two in-memory arrays."""

    def __init__(self, arrays: Arrays):
        self.x, self.y = arrays.x, arrays.y

    def __getitem__(self, i):
        return self.x[i], self.y[i]

    def __len__(self):
        return len(self.x)


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


def train_loader(arrays: Arrays, batch_size: int, seed: int, num_workers: int) -> DataLoader:
    """Shuffled, resumable training loader (per-rank shard when data-parallel)."""
    dataset = ArrayDataset(arrays)
    sampler = SeededBatchSampler(dataset, batch_size, seed)
    return DataLoader(dataset, batch_sampler=sampler, num_workers=num_workers)


def eval_loader(arrays: Arrays, batch_size: int) -> DataLoader:
    """Plain in-order loader over the whole split (every rank evaluates all of it)."""
    return DataLoader(ArrayDataset(arrays), batch_size=batch_size, shuffle=False, drop_last=False)
