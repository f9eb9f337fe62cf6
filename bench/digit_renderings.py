"""Make what a person would upload for a given MNIST digit: photos and drawings, encoded.

A helper for tests (not a test file): ``render_like_user(mnist28, rng, kind)`` returns the bytes
of an image file showing the digit in ``mnist28`` (uint8 28x28, white on black) the way a user
might have drawn or photographed it.
"""
from __future__ import annotations

import cv2
import numpy as np

KINDS = ("inverted", "large", "shifted", "jpeg", "rgb")


def render_like_user(mnist28: np.ndarray, rng: np.random.Generator, kind: str) -> bytes:
    """Return the encoded image of ``mnist28`` rendered as ``kind`` (one of KINDS)."""
    renderers = {
        "inverted": _inverted,
        "large": _large,
        "shifted": _shifted,
        "jpeg": _jpeg,
        "rgb": _rgb,
    }
    if kind not in renderers:
        raise ValueError(f"unknown kind {kind!r}; expected one of {KINDS}")
    image, ext, params = renderers[kind](np.asarray(mnist28, dtype=np.uint8), rng)
    ok, buf = cv2.imencode(ext, image, params)
    assert ok, f"cv2.imencode({ext}) failed"
    return buf.tobytes()


def _inverted(digit: np.ndarray, rng: np.random.Generator):
    """Dark ink on white paper, at MNIST size."""
    return 255 - digit, ".png", []


def _large(digit: np.ndarray, rng: np.random.Generator):
    """Enlarged ten times to 280x280, like a drawing on a web canvas."""
    return cv2.resize(digit, (280, 280), interpolation=cv2.INTER_LINEAR), ".png", []


def _shifted(digit: np.ndarray, rng: np.random.Generator):
    """The digit at a random place on a larger 100 (wide) x 80 (high) black canvas."""
    canvas = np.zeros((80, 100), np.uint8)
    y, x = int(rng.integers(0, 80 - 28 + 1)), int(rng.integers(0, 100 - 28 + 1))
    canvas[y:y + 28, x:x + 28] = digit
    return canvas, ".png", []


def _jpeg(digit: np.ndarray, rng: np.random.Generator):
    """A photo: dark ink on grey-white, noisy paper, 4x size, JPEG quality 60."""
    big = cv2.resize(digit, (112, 112), interpolation=cv2.INTER_LINEAR).astype(np.float32) / 255
    paper = rng.uniform(190, 235)
    ink = rng.uniform(20, 60)
    photo = paper - (paper - ink) * big + rng.normal(0, 6, big.shape)
    photo = np.clip(np.rint(photo), 0, 255).astype(np.uint8)
    return photo, ".jpg", [cv2.IMWRITE_JPEG_QUALITY, 60]


def _rgb(digit: np.ndarray, rng: np.random.Generator):
    """Blue ballpoint on off-white paper, 3 channels (BGR), 3x size."""
    big = cv2.resize(digit, (84, 84), interpolation=cv2.INTER_LINEAR).astype(np.float32) / 255
    paper = np.float32([225, 240, 248])  # BGR: slightly warm white
    ink = np.float32([160, 50, 20])  # BGR: blue
    alpha = big[:, :, None]
    image = paper * (1 - alpha) + ink * alpha
    return np.rint(image).astype(np.uint8), ".png", []
