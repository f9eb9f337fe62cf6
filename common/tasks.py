"""What a task is, in one table: ``TASKS["mnist"]`` and ``TASKS["housing"]``.

Training reads its data splits, loss, metrics, which way "better" points and its default recipe
from here; export reads the graph's input and output signature, the head that turns the network's
raw output into what a client wants, the bundle's PreProcess/PostProcess, the parity samples and
tolerance. No other module asks ``if task == ...``: adding a task is a ``Task(...)`` entry here
plus its networks in ``models/``.

The server does not read this table: it is driven by the bundle's ``inference.yml`` alone.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import paddle.nn.functional as F
from paddle import nn

from . import datasets, digit_augment, digit_image, housing
from .bundle import Tolerance  # the parity rule: bundles record it, so it lives with them


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of an exported graph: its name, shape after the batch axis, dtype."""

    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"

    def declared(self, batch: int | None) -> dict:
        """The inference.yml entry: the full shape with -1 (any size) or a fixed batch first."""
        return {"name": self.name, "shape": [-1 if batch is None else batch, *self.shape], "dtype": self.dtype}


@dataclass(frozen=True)
class Samples:
    """Real inputs for the parity check (model inputs, as the exported graph takes them) and targets."""

    x: np.ndarray
    y: np.ndarray
    origin: str


@dataclass(frozen=True)
class Task:
    """Everything the toolkit knows about one task; see the module docstring for who reads what."""

    name: str
    description: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    train_samples: int                       # size of the official training split (bounds --val-size)
    load_splits: Callable[..., datasets.Splits]  # (data_dir, val_size, train_subset) -> Splits
    loss: Callable                           # (network output, target) -> scalar tensor
    metrics: Callable[..., dict]             # (network outputs, targets, stats) -> {"acc": ...} or {"mse": ...}
    select: tuple[str, str]                  # metric for model selection and "max" or "min"
    head: Callable[..., nn.Layer]            # (network, stats) -> the layer that is exported
    served_metrics: Callable[..., dict]      # (exported outputs, targets) -> metrics in served units
    parity_samples: Callable[..., Samples]   # (data_dir, stats) -> real test inputs
    tolerance: Tolerance
    preprocess: Callable[[dict], dict]       # stats -> inference.yml PreProcess
    postprocess: Callable[[dict], dict]      # stats -> inference.yml PostProcess
    labels: tuple[str, ...] = ()             # class names, for classifiers
    required_stats: tuple[str, ...] = ()     # what a checkpoint must carry for export
    chart: dict = field(default_factory=dict)  # titles of the training curves
    augment: Callable | None = None          # (batch, level) -> batch, training only; None: no --augment
    augment_levels: tuple[str, ...] = ("none",)
    train_defaults: dict = field(default_factory=dict)  # this task's defaults of `python -m train` flags
    model_defaults: dict = field(default_factory=dict)  # {model: {flag: default}} where a model differs

    def better(self, value: float, best: float | None) -> bool:
        """Whether ``value`` of the selection metric beats ``best`` (None: nothing yet)."""
        return best is None or (value > best if self.select[1] == "max" else value < best)


# ---- heads: what the exported graph answers ----------------------------------------------


class Probabilities(nn.Layer):
    """Logits -> class probabilities."""

    def __init__(self, net: nn.Layer):
        super().__init__()
        self.net = net

    def forward(self, image):
        return F.softmax(self.net(image), axis=-1)


class Denormalize(nn.Layer):
    """Normalised prediction -> the target's own unit (``pred * std + mean``)."""

    def __init__(self, net: nn.Layer, mean: float, std: float):
        super().__init__()
        self.net = net
        # Python floats become constants in the static graph: nothing to load, nothing to forget.
        self.mean, self.std = float(mean), float(std)

    def forward(self, features):
        return self.net(features) * self.std + self.mean


# ---- digits ----------------------------------------------------------------------------------


def _mnist_splits(data_dir, val_size: int, train_subset: int = 0) -> datasets.Splits:
    images, y = datasets.read_mnist("train", data_dir)
    x = digit_image.normalize(images)
    test_images, test_labels = datasets.read_mnist("test", data_dir)
    test = datasets.Arrays(digit_image.normalize(test_images), test_labels)
    train_idx, val_idx = datasets.carve(len(x), val_size)
    if train_subset:
        train_idx = train_idx[:train_subset]
    val = datasets.Arrays(x[val_idx], y[val_idx]) if val_size else None
    return datasets.Splits(datasets.Arrays(x[train_idx], y[train_idx]), val, test, stats={})


def _accuracy(outputs: np.ndarray, labels: np.ndarray, stats: dict | None = None) -> dict:
    return {"acc": float(np.mean(np.asarray(outputs).argmax(-1) == np.asarray(labels).reshape(-1)))}


MNIST_PARITY_SAMPLES = 320  # "a few hundred" test images: 5 batches of 64, about a second per setting


def _mnist_samples(data_dir, stats: dict) -> Samples:
    images, labels = datasets.read_mnist("test", data_dir, limit=MNIST_PARITY_SAMPLES)
    return Samples(digit_image.normalize(images), labels, f"first {len(labels)} MNIST test images")


# ---- house prices ---------------------------------------------------------------------------


def _housing_splits(data_dir, val_size: int, train_subset: int = 0) -> datasets.Splits:
    """Course split; normalisation from the training rows only (``UCIHousing`` uses all 506 rows,
    which leaks the test set). The target is standardised too; the exported head undoes it."""
    train_rows, test_rows = datasets.housing_split(data_dir)
    train_idx, val_idx = datasets.carve(len(train_rows), val_size)
    if train_subset:
        train_idx = train_idx[:train_subset]
    stats = housing.fit_stats(train_rows[train_idx])

    def arrays(rows: np.ndarray) -> datasets.Arrays:
        return datasets.Arrays(housing.normalize(rows[:, :13], stats["feature_mean"], stats["feature_std"]),
                               housing.standardize_target(rows[:, 13], stats))

    val = arrays(train_rows[val_idx]) if val_size else None
    return datasets.Splits(arrays(train_rows[train_idx]), val, arrays(test_rows), stats)


def _regression(prices: np.ndarray, targets: np.ndarray) -> dict:
    err = np.asarray(prices, np.float64).reshape(-1) - np.asarray(targets, np.float64).reshape(-1)
    return {"mse": float(np.mean(err ** 2)), "mae": float(np.mean(np.abs(err)))}


def _housing_metrics(outputs: np.ndarray, targets: np.ndarray, stats: dict) -> dict:
    """MSE and MAE in $1000s of normalised outputs and targets."""
    scale = stats["target_std"]
    return _regression(np.asarray(outputs, np.float64) * scale, np.asarray(targets, np.float64) * scale)


def _housing_samples(data_dir, stats: dict) -> Samples:
    _, test = datasets.housing_split(data_dir)
    first = datasets.HOUSING_TRAIN_ROWS
    return Samples(housing.normalize(test[:, :13], stats["feature_mean"], stats["feature_std"]),
                   test[:, 13].astype(np.float32), f"housing test split, rows {first}..{first + len(test) - 1}")


def _housing_preprocess(stats: dict) -> dict:
    return {"name": "NormalizeFeatures", "feature_names": list(stats["feature_names"]),
            "mean": [float(v) for v in stats["feature_mean"]], "std": [float(v) for v in stats["feature_std"]],
            "formula": "features = (raw - mean) / std, in feature_names order (training-split statistics)"}


def _housing_postprocess(stats: dict) -> dict:
    return {"name": "Regression", "target": housing.TARGET_NAME, "unit": "$1000s",
            "target_mean": float(stats["target_mean"]), "target_std": float(stats["target_std"]),
            "note": "de-normalisation is inside the graph: its output is already the price in $1000s"}


DIGIT_LABELS = tuple(str(d) for d in range(10))

TASKS: dict[str, Task] = {
    "mnist": Task(
        name="mnist", description="handwritten digits",
        inputs=(TensorSpec("image", (1, digit_image.CANVAS, digit_image.CANVAS)),),
        outputs=(TensorSpec("probabilities", (len(DIGIT_LABELS),)),),
        train_samples=60_000, load_splits=_mnist_splits,
        loss=F.cross_entropy, metrics=_accuracy, select=("acc", "max"),
        head=lambda net, stats: Probabilities(net), served_metrics=_accuracy,
        parity_samples=_mnist_samples,
        # 1e-5 on probabilities in [0, 1], and the answer (top-1) must not change.
        tolerance=Tolerance(atol=1e-5, top1=True),
        preprocess=lambda stats: digit_image.preprocess_spec(),
        postprocess=lambda stats: {"name": "Topk", "topk": 5, "label_list": list(DIGIT_LABELS)},
        labels=DIGIT_LABELS,
        chart={"metric": "acc", "metric_title": "accuracy", "loss_title": "loss", "log_loss": False},
        augment=digit_augment.augment, augment_levels=digit_augment.CHOICES,
        # >= 99.3% test accuracy with the default CNN, in 8 epochs on 2 CPU cores (docs/BENCHMARKS.md).
        train_defaults=dict(model="cnn", epochs=8, batch_size=256, optimizer="adam", lr=0.004,
                            lr_schedule="cosine", warmup_epochs=0.5, val_size=5000, augment="light",
                            procs="auto"),
        # The course's networks train as the course did, on the images as they are.
        model_defaults={name: dict(augment="none") for name in ("course_cnn", "course_cnn3", "mlp")},
    ),
    "housing": Task(
        name="housing", description="house prices",
        inputs=(TensorSpec("features", (len(housing.FEATURE_NAMES),)),),
        outputs=(TensorSpec("price", (1,)),),
        train_samples=datasets.HOUSING_TRAIN_ROWS, load_splits=_housing_splits,
        loss=F.mse_loss, metrics=_housing_metrics, select=("mse", "min"),
        head=lambda net, stats: Denormalize(net, stats["target_mean"], stats["target_std"]),
        served_metrics=_regression, parity_samples=_housing_samples,
        # Relative 1e-5 (1 cent per $1000): an absolute 1e-5 would be a few float32 ulps at $50k
        # (ulp 3.8e-6), so a harmless change in the order of additions could fail it.
        tolerance=Tolerance(atol=1e-5, rtol=1e-5),
        preprocess=_housing_preprocess, postprocess=_housing_postprocess,
        required_stats=housing.STATS_KEYS,
        chart={"metric": "mse", "metric_title": "MSE ($1000s squared)", "loss_title": "loss (normalised units)",
               "log_loss": True},
        # The course's linear regression with plain SGD, decayed (cosine) so that every late epoch sits
        # on the least-squares optimum, trained on all 404 training rows (val_size 0: the "best"
        # checkpoint is the last epoch). A 40-row validation split has a standard error (~9 on an MSE
        # of ~28) larger than the differences between epochs, so choosing on it picks lucky early
        # epochs (test MSE 53-87 instead of ~33), and a larger split costs the model rows it needs
        # (the optimum on 324 rows is 41.6 on test): docs/COURSE.md, "Choosing a house-price model".
        train_defaults=dict(model="linear", epochs=100, batch_size=32, optimizer="sgd", lr=0.05,
                            lr_schedule="cosine", warmup_epochs=0.0, val_size=0, augment="none", procs="1"),
        # The MLP overfits 404 rows without shrinkage (test MSE 44-88 over 3 seeds); L2 0.1 gives
        # 15-19 over 6 seeds (0.03 and 0.3 pass too).
        model_defaults={"mlp": dict(weight_decay=0.1)},
    ),
}


def get(name: str) -> Task:
    """The task called ``name``; ``ValueError`` listing the known ones otherwise."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose from {', '.join(TASKS)}")
    return TASKS[name]

