"""Digits as people really write them: the renderers, and accuracy through the server's preprocessing.

The accuracy tests run the first SAMPLE official test digits in every kind through the same
function as ``python -m bench.handwriting`` (which measures all 10,000 and writes docs/BENCHMARKS.md),
with the 2-epoch fixture model, against floors looser than the benchmark's targets (97% per kind).
"""
from __future__ import annotations

import numpy as np
import pytest

from bench.digit_renderings import HANDWRITING_KINDS, MASK, SHADED_PAGE, SMALL_PAGE, render_handwriting
from common.digit_image import decode

SAMPLE = 200

# Per-kind floors on SAMPLE digits. The fixture model (default CNN and augmentation, 2 epochs) scores
# rotated 99.5%, thick 99.0%, thin 99.0%, blurred 99.5%, small 99.5%, shaded 99.5%, colour 98.5% and
# jpeg 100% on them; the floors are about 4 points lower: room for noise, not for a regression.
FLOORS = {"rotated": 0.95, "thick": 0.94, "thin": 0.95, "blurred": 0.95, "small": 0.95, "shaded": 0.96,
          "colour": 0.95, "jpeg": 0.95}

# What each kind decodes to: (channels, smallest side, largest side).
SHAPES = {"rotated": (1, MASK + 60, MASK + 60), "thick": (1, MASK + 24, MASK + 24), "thin": (1, MASK, MASK),
          "blurred": (1, MASK, MASK), "small": (1, *SMALL_PAGE), "shaded": (1, *SHADED_PAGE),
          "colour": (3, MASK, MASK), "jpeg": (1, MASK, MASK)}


@pytest.fixture(scope="module")
def test_digits(data_dir):
    from common.datasets import read_mnist

    return read_mnist("test", data_dir, limit=SAMPLE)


def test_every_kind_has_a_floor_and_a_shape():
    assert set(FLOORS) == set(SHAPES) == set(HANDWRITING_KINDS)


@pytest.mark.parametrize("kind", HANDWRITING_KINDS)
def test_renderings_are_deterministic_for_a_seed(kind, test_digits):
    digit = test_digits[0][0]
    first = render_handwriting(digit, np.random.default_rng(7), kind)
    assert render_handwriting(digit, np.random.default_rng(7), kind) == first
    others = {render_handwriting(digit, np.random.default_rng(seed), kind) for seed in range(8, 12)}
    assert first not in others  # the seed matters: each kind draws something at random


@pytest.mark.parametrize("kind", HANDWRITING_KINDS)
def test_renderings_decode_to_the_expected_image(kind, test_digits):
    channels, smallest, largest = SHAPES[kind]
    for i, digit in enumerate(test_digits[0][:5]):
        image = decode(render_handwriting(digit, np.random.default_rng(i), kind))  # as the server decodes
        assert image.dtype == np.uint8
        assert (image.shape[2] if image.ndim == 3 else 1) == channels, image.shape
        assert smallest <= min(image.shape[:2]) and max(image.shape[:2]) <= largest, image.shape
        # Most pixels are paper, and the ink is clearly darker (pencil grey included).
        assert np.median(image) >= int(image.min()) + 60, (np.median(image), image.min())


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="unknown kind"):
        render_handwriting(np.zeros((28, 28), np.uint8), np.random.default_rng(0), "crayon")


@pytest.fixture(scope="module")
def accuracy(mnist_bundle, test_digits):
    """{kind: accuracy} on SAMPLE digits, exactly as bench/handwriting.py measures it."""
    from bench.handwriting import DigitModel, evaluate_kind

    model = DigitModel(mnist_bundle)
    images, labels = test_digits
    figures = {kind: evaluate_kind(model, kind, images, labels).accuracy for kind in HANDWRITING_KINDS}
    print(f"accuracy on {SAMPLE} digits per kind: {figures}")
    return figures


@pytest.mark.parametrize("kind", HANDWRITING_KINDS)
def test_accuracy_per_kind(kind, accuracy):
    assert accuracy[kind] >= FLOORS[kind], (kind, accuracy[kind], FLOORS[kind])
