"""Real samples for the parity check: MNIST test images, or the housing test split."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import ExportError
from .source import Source

MNIST_SAMPLES = 320  # "a few hundred" test images: 5 batches of 64, about a second per setting


@dataclass
class Samples:
    """Model inputs (float32, normalised as in training), their labels and where they came from."""

    x: np.ndarray
    y: np.ndarray
    origin: str


def load_samples(source: Source, data_dir: str | None = None) -> Samples:
    """Test samples for ``source``'s task, from ``data_dir``, the checkpoint's data_dir or Paddle's cache."""
    from train.errors import DataMissingError

    folder = data_dir or source.config.get("data_dir")
    try:
        return _mnist(folder) if source.task == "mnist" else _housing(folder, source.stats)
    except DataMissingError as exc:
        raise ExportError(f"the parity check needs real test samples: {exc}") from exc


def _mnist(folder: str | None) -> Samples:
    import paddle

    from common.digit_image import normalize
    from train.data import MNIST_FILES, find_file

    images, labels = MNIST_FILES["test"]
    image_path, label_path = find_file(images, folder, "mnist"), find_file(labels, folder, "mnist")
    ds = paddle.vision.datasets.MNIST(image_path=str(image_path), label_path=str(label_path),
                                      mode="test", download=False, backend="cv2")
    pixels = np.asarray(ds.images[:MNIST_SAMPLES], dtype=np.uint8).reshape(-1, 28, 28)
    labels = np.asarray(ds.labels[:MNIST_SAMPLES], dtype=np.int64).reshape(-1)
    return Samples(normalize(pixels), labels, f"first {len(labels)} MNIST test images ({image_path})")


def _housing(folder: str | None, stats: dict) -> Samples:
    from train.data import HOUSING_TRAIN_ROWS, normalize_housing, read_housing

    test = read_housing(folder)[HOUSING_TRAIN_ROWS:]
    return Samples(normalize_housing(test[:, :13], stats), test[:, 13].astype(np.float32),
                   f"housing test split, rows {HOUSING_TRAIN_ROWS}..{HOUSING_TRAIN_ROWS + len(test) - 1}")
