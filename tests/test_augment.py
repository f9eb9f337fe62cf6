"""Training-time digit augmentation (common/digit_augment.py) on real MNIST digits."""
import numpy as np
import paddle
import pytest

from common import datasets, digit_image
from common.digit_augment import CHOICES, augment


@pytest.fixture(scope="module")
def batch(data_dir):
    images, _ = datasets.read_mnist("test", data_dir, limit=64)
    return paddle.to_tensor(digit_image.normalize(images))


def ink(x) -> np.ndarray:
    return x.numpy()[:, 0] * digit_image.STD + digit_image.MEAN


def test_none_is_the_identity(batch):
    assert augment(batch, "none") is batch


@pytest.mark.parametrize("level", [c for c in CHOICES if c != "none"])
def test_levels_keep_digits_mnist_like(batch, level):
    paddle.seed(3)
    out = augment(batch, level)
    assert out.shape == batch.shape and out.dtype == batch.dtype
    pixels = ink(out)
    # Every digit still has white ink at its peak (as the server's preprocessing guarantees) on a
    # black background, and nothing leaves the [0, 1] range.
    assert np.allclose(pixels.reshape(len(pixels), -1).max(1), 1.0, atol=1e-5)
    assert pixels.min() >= -1e-6 and pixels.max() <= 1 + 1e-6
    assert np.median(pixels) < 0.02
    # ... and the images did change, each one differently.
    diff = np.abs(pixels - ink(batch)).reshape(len(pixels), -1).mean(1)
    assert (diff > 0.01).mean() > 0.9


def test_same_seed_same_images_and_draws_move_on(batch):
    paddle.seed(7)
    first, second = augment(batch, "light").numpy(), augment(batch, "light").numpy()
    paddle.seed(7)
    again = augment(batch, "light").numpy()
    assert np.array_equal(first, again)
    assert not np.array_equal(first, second)


def test_strong_moves_digits_further_than_light(batch):
    def mean_change(level):
        paddle.seed(11)
        return float(np.abs(ink(augment(batch, level)) - ink(batch)).mean())
    assert mean_change("strong") > mean_change("light")
