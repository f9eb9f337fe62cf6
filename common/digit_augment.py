"""Training-time augmentation for digits: make MNIST look like what people upload.

People draw rotated, slanted, bigger or smaller than MNIST's 20x20 box, with felt-tips and
pencils, and photograph out of focus. These ops copy that on a whole batch at once, as Paddle
tensor ops (one ``affine_grid`` + ``grid_sample`` for all the geometry, max-pooling for stroke
width, a 3x3 convolution for blur): about 40 us per image, against ~1 ms per image for the
training step, where per-sample ``paddle.vision.transforms`` (PIL) calls would cost more than
that from Python alone.

Every random number comes from Paddle's global generator, which the checkpoint saves, so a
resumed run draws exactly what the uninterrupted run would have. The images arrive normalised
((x / 255 - mean) / std, see ``digit_image.normalize``) and leave normalised; the ops themselves
work on [0, 1] ink so that the black background stays black under resampling and pooling.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import paddle
import paddle.nn.functional as F

from .digit_image import CANVAS, MEAN, STD


@dataclass(frozen=True)
class Level:
    """How hard one augmentation level pushes: ranges are +- around the identity."""

    rotate_deg: float    # rotation, uniform in +-rotate_deg
    scale: float         # zoom factor, uniform in 1 +- scale
    shear: float         # horizontal shear (slant), uniform in +-shear (tan of the angle)
    shift_px: float      # translation, uniform in +-shift_px pixels on each axis
    thicker: float       # probability of dilating the strokes by one pixel (felt-tip)
    thinner: float       # probability of eroding them by one pixel (pencil)
    blur: float          # probability of a 3x3 Gaussian blur (out of focus)


LEVELS: dict[str, Level] = {
    "light": Level(rotate_deg=15, scale=0.1, shear=0.2, shift_px=2, thicker=0.15, thinner=0.15, blur=0.1),
    "strong": Level(rotate_deg=20, scale=0.2, shear=0.3, shift_px=3, thicker=0.25, thinner=0.25, blur=0.2),
}
CHOICES = ("none", *LEVELS)

_BLUR = paddle.to_tensor([[1, 2, 1], [2, 4, 2], [1, 2, 1]], dtype="float32").reshape([1, 1, 3, 3]) / 16


def augment(x: paddle.Tensor, level: str) -> paddle.Tensor:
    """Randomly transform a normalised (N, 1, 28, 28) batch; ``level`` is one of ``CHOICES``."""
    if level == "none":
        return x
    lv = LEVELS[level]
    ink = x * STD + MEAN  # back to [0, 1], background 0
    ink = _affine(ink, lv)
    ink = _stroke_width(ink, lv)
    ink = _where(_coin(ink.shape[0], lv.blur), F.conv2d(ink, _BLUR, padding=1), ink)
    # The server stretches every digit so its strongest ink is white (as MNIST's are); do the same
    # here, or thinned and blurred digits would be fainter than anything the model is ever shown.
    peak = ink.reshape([ink.shape[0], -1]).max(axis=1).reshape([-1, 1, 1, 1])
    ink = ink / paddle.maximum(peak, paddle.to_tensor(1e-3))
    return (ink - MEAN) / STD


def _uniform(n: int, half_width: float) -> paddle.Tensor:
    return (paddle.rand([n]) * 2 - 1) * half_width


def _coin(n: int, p: float) -> paddle.Tensor:
    return paddle.rand([n]) < p


def _where(mask: paddle.Tensor, a: paddle.Tensor, b: paddle.Tensor) -> paddle.Tensor:
    return paddle.where(mask.reshape([-1, 1, 1, 1]), a, b)


def _affine(ink: paddle.Tensor, lv: Level) -> paddle.Tensor:
    """Rotation, zoom, slant and shift in one resampling (bilinear, zeros outside)."""
    n = ink.shape[0]
    angle = _uniform(n, math.radians(lv.rotate_deg))
    zoom = 1 + _uniform(n, lv.scale)
    shear = _uniform(n, lv.shear)
    shift = _uniform(2 * n, lv.shift_px * 2 / CANVAS).reshape([n, 2])  # grid units: the canvas is 2 wide
    cos, sin = paddle.cos(angle) / zoom, paddle.sin(angle) / zoom
    # theta maps output coordinates to input ones: rotation @ shear, divided by the zoom.
    theta = paddle.stack([
        paddle.stack([cos, cos * shear - sin, shift[:, 0]], axis=1),
        paddle.stack([sin, sin * shear + cos, shift[:, 1]], axis=1),
    ], axis=1)
    grid = F.affine_grid(theta, [n, 1, CANVAS, CANVAS], align_corners=False)
    return F.grid_sample(ink, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _stroke_width(ink: paddle.Tensor, lv: Level) -> paddle.Tensor:
    """Dilate (felt-tip: 3x3 max) or erode (pencil: minimum over the pixel and its 4 neighbours) some images.

    Erosion uses the cross, not the 3x3 square: MNIST strokes are 2-3 pixels wide, and a square
    erosion wipes out most of them.
    """
    n = ink.shape[0]
    draw = paddle.rand([n])
    thicker = draw < lv.thicker
    thinner = (draw >= lv.thicker) & (draw < lv.thicker + lv.thinner)
    dilated = F.max_pool2d(ink, 3, stride=1, padding=1)
    padded = F.pad(ink, [1, 1, 1, 1])
    eroded = paddle.minimum(paddle.minimum(paddle.minimum(padded[:, :, 1:-1, :-2], padded[:, :, 1:-1, 2:]),
                                           paddle.minimum(padded[:, :, :-2, 1:-1], padded[:, :, 2:, 1:-1])), ink)
    return _where(thicker, dilated, _where(thinner, eroded, ink))
