"""Digits as people really write them (issue 10): the renderers, and accuracy through the server's preprocessing.

The accuracy tests run the first SAMPLE official test digits in every kind through the same
function as ``python -m bench.handwriting`` (which measures all 10,000 and writes docs/BENCHMARKS.md),
with the 2-epoch fixture model, against floors looser than the benchmark's targets (97% per kind).
"""
from __future__ import annotations

import numpy as np
import pytest

from bench.digit_renderings import HANDWRITING_KINDS, MASK, SHADED_PAGE, SMALL_PAGE, render_handwriting
from common.digit_image import decode

SAMPLE = 300

# Per-kind floors on SAMPLE digits. Measured 2026-11-23 with a weaker model than the fixture's
# (default CNN, 1 epoch on 20,000 training images, 97.8% on the plain test digits), through the
# preprocessing of main at 7141e10: rotated 94.0%, thick 93.0%, small 97.0%, colour 94.3%, jpeg 96.7%;
# floors are those minus 5 points (the fixture model is stronger, so this leaves room for noise).
FLOORS = {"rotated": 0.89, "thick": 0.88, "small": 0.92, "colour": 0.89, "jpeg": 0.91}
# Kinds the current preprocessing gets far wrong (same measurement: thin 83.0%, blurred 79.7%,
# shaded 38.3% with 85 of 300 refused). Their floor is what the issue asks of them, 97% less the
# same looseness as above; they are expected to fail until the preprocessing (and the training
# augmentation) are reworked: strict, so that passing says "remove the marker".
BROKEN = {
    "thin": "pencil lines reach the model ~1 px wide and grey: to_mnist keeps the stroke width it finds, "
            "MNIST's is 2-3 px",
    "blurred": "the grey halo of an out-of-focus stroke is kept as ink: fuzzy digits the model reads as 1",
    "shaded": "one global background level: a shadow across the page is taken for ink, or lifts the noise "
              "estimate so high that the digit is thresholded away (refused)",
}
FLOORS.update({kind: 0.93 for kind in BROKEN})

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


@pytest.mark.parametrize("kind", [
    pytest.param(kind, marks=pytest.mark.xfail(strict=True, reason=BROKEN[kind])) if kind in BROKEN else kind
    for kind in HANDWRITING_KINDS])
def test_accuracy_per_kind(kind, accuracy):
    assert accuracy[kind] >= FLOORS[kind], (kind, accuracy[kind], FLOORS[kind])
