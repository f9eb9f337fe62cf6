"""Make what a person would upload for a given MNIST digit: photos and drawings, encoded.

Used by the tests and by ``bench/handwriting.py``. Two families, each a function returning the
bytes of an image file that shows the digit in ``mnist28`` (uint8 28x28, white on black):

- ``render_like_user(mnist28, rng, kind)``, kind in KINDS: the same pixels, re-encoded the ways an
  upload differs from MNIST (inverted, enlarged, shifted, JPEG, colour). Little changes in the digit.
- ``render_handwriting(mnist28, rng, kind)``, kind in HANDWRITING_KINDS: the digit as people really
  write and photograph it: rotated, felt-tip or pencil strokes, out of focus, small on a
  page, a phone photo under uneven light, coloured ink, heavy JPEG. Each starts from a smooth
  high-resolution ink mask (``ink_mask``) and draws it the way the real thing would look, with no
  regard for what the server's preprocessing finds easy.

Every renderer is deterministic for a given ``rng`` state; the random ranges are the constants below.
"""
from __future__ import annotations

import cv2
import numpy as np

KINDS = ("inverted", "large", "shifted", "jpeg", "rgb")
HANDWRITING_KINDS = ("rotated", "thick", "thin", "blurred", "small", "shaded", "colour", "jpeg")

# The ink mask: the 28x28 digit upscaled to MASK x MASK and given clean edges. MNIST's strokes are
# 2-3 px wide, so about 14-20 px here; the digit itself is about 20/28 of the side.
MASK = 180
DIGIT_HEIGHT = MASK * 20 / 28
PAPER = (225, 250)  # grey level of white paper in a scan or drawing
INK = (10, 50)  # ... of black or dark blue ink
ROTATE_DEGREES = 20  # rotated: uniform in [-20, 20]
THICK_GROW = (12, 20)  # thick: felt-tip, the stroke grown by this many px in all (MNIST's own: 14-20)
PENCIL_WIDTH = (3, 6)  # thin: pencil line width in px, 2-5% of the digit's height
PENCIL = (90, 150)  # thin: graphite grey, not black
_STROKE_RADIUS = 4  # thin: how far to look for a stroke's centre line (> half the widest pencil)
BLUR_SIGMA = (0.03, 0.06)  # blurred: Gaussian sigma as a fraction of the digit's height
BLURRED_JPEG_QUALITY = 90
SMALL_PAGE = (600, 1000)  # small: side of the page
SMALL_FRACTION = (1 / 8, 1 / 5)  # ... and of the digit's box (the mask's side), as a fraction of it
SHADED_PAGE = (400, 1200)  # shaded: phone photo, width and height each drawn from this
SHADED_DIGIT = (0.3, 0.6)  # ... digit box side as a fraction of the photo's shorter side
SHADED_GRADIENT = (0.1, 0.35)  # ... light falling off across the page by this fraction
SHADED_SHADOW = (0.45, 0.75)  # ... light left inside the shadow (a hand or a phone held over the page)
SHADED_SHADOW_EDGE = (0.02, 0.08)  # ... blur of the shadow's edge, as a fraction of the shorter side
SHADED_NOISE = (2, 6)  # ... sensor noise sigma, grey levels; paper texture on top of it
SHADED_INK = (40, 90)  # dark grey: pencil or a pen in a photo
SHADED_JPEG_QUALITY = 85
JPEG_QUALITY = (30, 60)  # jpeg: quality, uniform integer
JPEG_PAPER = (170, 215)  # ... light grey paper
JPEG_NOISE = (3, 10)  # ... noise sigma, grey levels
BALLPOINT = {  # colour: BGR ink, lighter and thinner than a marker
    "blue": ((140, 200), (30, 80), (0, 40)),
    "red": ((20, 70), (20, 70), (160, 220)),
}
COLOUR_PAPERS = {  # BGR
    "white": (245, 245, 245),
    "cream": (205, 235, 245),
    "light yellow": (180, 240, 250),
    "light blue": (245, 225, 205),
    "light green": (210, 240, 215),
}


def render_like_user(mnist28: np.ndarray, rng: np.random.Generator, kind: str) -> bytes:
    """Return the encoded image of ``mnist28`` rendered as ``kind`` (one of KINDS)."""
    renderers = {"inverted": _inverted, "large": _large, "shifted": _shifted, "jpeg": _jpeg, "rgb": _rgb}
    return _encode(renderers, mnist28, rng, kind)


def _encode(renderers: dict, mnist28: np.ndarray, rng: np.random.Generator, kind: str) -> bytes:
    """Run ``renderers[kind]`` on the digit and encode what it drew, in the format it chose."""
    if kind not in renderers:
        raise ValueError(f"unknown kind {kind!r}; expected one of {tuple(renderers)}")
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


# ---------------------------------------------------------------------------------------------
# Handwriting as people really write it


def render_handwriting(mnist28: np.ndarray, rng: np.random.Generator, kind: str) -> bytes:
    """Return the encoded image of ``mnist28`` written or photographed as ``kind`` (one of HANDWRITING_KINDS)."""
    renderers = {"rotated": _rotated, "thick": _thick, "thin": _thin, "blurred": _blurred, "small": _small,
                 "shaded": _shaded, "colour": _colour, "jpeg": _heavy_jpeg}
    return _encode(renderers, mnist28, rng, kind)


def ink_mask(mnist28: np.ndarray) -> np.ndarray:
    """float32 MASK x MASK in [0, 1]: where the pen went, with smooth strokes and clean edges.

    Bicubic enlargement alone shows MNIST's pixel grid as wobbly edges; a blur of about one
    source pixel smooths it out, and a steep ramp around half intensity then gives edges a couple
    of pixels wide, as a scanned pen stroke has.
    """
    big = cv2.resize(mnist28.astype(np.float32) / 255, (MASK, MASK), interpolation=cv2.INTER_CUBIC)
    big = cv2.GaussianBlur(big, (0, 0), MASK / 28 * 0.6)
    return np.clip((big - 0.4) / 0.2, 0, 1)


def _grow(mask: np.ndarray, pixels: int) -> np.ndarray:
    """Widen (pixels > 0) or narrow (< 0) every stroke by ``|pixels|`` in all, with a round pen."""
    radius = abs(pixels) // 2
    if radius == 0:
        return mask
    pen = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    return cv2.dilate(mask, pen) if pixels > 0 else cv2.erode(mask, pen)


def _on_paper(mask: np.ndarray, paper, ink) -> np.ndarray:
    """Ink over paper (grey levels or BGR triples), as float32."""
    paper, ink = np.float32(paper), np.float32(ink)
    alpha = mask[:, :, None] if paper.ndim else mask
    return paper * (1 - alpha) + ink * alpha


def _u8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def _rotated(digit: np.ndarray, rng: np.random.Generator):
    """Dark ink on white, the digit turned by up to ROTATE_DEGREES either way; PNG."""
    mask = cv2.copyMakeBorder(ink_mask(digit), 30, 30, 30, 30, cv2.BORDER_CONSTANT, value=0)  # room for corners
    centre = (mask.shape[1] / 2, mask.shape[0] / 2)
    turn = cv2.getRotationMatrix2D(centre, rng.uniform(-ROTATE_DEGREES, ROTATE_DEGREES), 1.0)
    mask = cv2.warpAffine(mask, turn, mask.shape[::-1], flags=cv2.INTER_LINEAR, borderValue=0)
    return _u8(_on_paper(mask, rng.uniform(*PAPER), rng.uniform(*INK))), ".png", []


def _thick(digit: np.ndarray, rng: np.random.Generator):
    """Felt-tip: every stroke about twice as wide, black on white; PNG."""
    mask = cv2.copyMakeBorder(ink_mask(digit), 12, 12, 12, 12, cv2.BORDER_CONSTANT, value=0)
    mask = _grow(mask, int(rng.integers(*THICK_GROW, endpoint=True)))
    return _u8(_on_paper(mask, rng.uniform(*PAPER), rng.uniform(*INK))), ".png", []


def _thin(digit: np.ndarray, rng: np.random.Generator):
    """Pencil: lines PENCIL_WIDTH px wide along the strokes' middles, graphite grey on white; PNG."""
    mask = _pencil(ink_mask(digit), rng.uniform(*PENCIL_WIDTH))
    return _u8(_on_paper(mask, rng.uniform(*PAPER), rng.uniform(*PENCIL))), ".png", []


def _pencil(mask: np.ndarray, width: float) -> np.ndarray:
    """The middle ``width`` px of every stroke (strokes already thinner stay whole).

    Plain erosion would also delete MNIST's thinnest strokes. Here a pixel is kept when its
    distance to the stroke's edge is within ``width / 2`` of the centre line's (the largest such
    distance within ``_STROKE_RADIUS``): a band of the same width whatever the stroke's width.
    """
    inside = (mask > 0.5).astype(np.uint8)
    depth = cv2.distanceTransform(inside, cv2.DIST_L2, 5)
    reach = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * _STROKE_RADIUS + 1,) * 2)
    centre = cv2.dilate(depth, reach)
    return np.clip(depth - (centre - width / 2) + 0.5, 0, 1) * inside


def _blurred(digit: np.ndarray, rng: np.random.Generator):
    """An out-of-focus photo: Gaussian blur of a few % of the digit's height; JPEG quality 90."""
    sigma = rng.uniform(*BLUR_SIGMA) * DIGIT_HEIGHT
    mask = cv2.GaussianBlur(ink_mask(digit), (0, 0), sigma)
    photo = _on_paper(mask, rng.uniform(*PAPER), rng.uniform(*INK)) + rng.normal(0, 2, mask.shape)
    return _u8(photo), ".jpg", [cv2.IMWRITE_JPEG_QUALITY, BLURRED_JPEG_QUALITY]


def _small(digit: np.ndarray, rng: np.random.Generator):
    """A scanned page: the digit 1/8-1/5 of its side, anywhere on it (a corner, often); PNG."""
    side = int(rng.integers(*SMALL_PAGE, endpoint=True))
    size = int(round(side * rng.uniform(*SMALL_FRACTION)))
    mask = cv2.resize(ink_mask(digit), (size, size), interpolation=cv2.INTER_AREA)
    page = np.zeros((side, side), np.float32)
    y, x = (int(rng.integers(0, side - size + 1)) for _ in range(2))
    page[y:y + size, x:x + size] = mask
    return _u8(_on_paper(page, rng.uniform(*PAPER), rng.uniform(*INK))), ".png", []


def _shaded(digit: np.ndarray, rng: np.random.Generator):
    """A phone photo of paper under uneven light: a brightness gradient across the page, the soft
    shadow of a hand or phone crossing the digit, paper texture and sensor noise; JPEG quality 85."""
    h, w = (int(rng.integers(*SHADED_PAGE, endpoint=True)) for _ in range(2))
    short = min(h, w)
    size = int(round(short * rng.uniform(*SHADED_DIGIT)))
    y, x = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
    mask = np.zeros((h, w), np.float32)
    mask[y:y + size, x:x + size] = cv2.resize(ink_mask(digit), (size, size), interpolation=cv2.INTER_AREA)

    rows, cols = np.arange(h, dtype=np.float32)[:, None], np.arange(w, dtype=np.float32)[None, :]
    # Light falls off along a random direction, from 1 on one side of the page to 1 - gradient.
    angle = rng.uniform(0, 2 * np.pi)
    along = np.cos(angle) * cols + np.sin(angle) * rows
    along = (along - along.min()) / (along.max() - along.min())
    light = 1 - np.float32(rng.uniform(*SHADED_GRADIENT)) * along
    # The shadow: a half-plane whose edge crosses the digit's box, with a soft (logistic) penumbra.
    angle = rng.uniform(0, 2 * np.pi)
    cy, cx = y + rng.uniform(0.2, 0.8) * size, x + rng.uniform(0.2, 0.8) * size
    depth = np.cos(angle) * (cols - cx) + np.sin(angle) * (rows - cy)
    edge = rng.uniform(*SHADED_SHADOW_EDGE) * short
    inside = 1 / (1 + np.exp(-depth / np.float32(edge)))
    light *= 1 - np.float32(1 - rng.uniform(*SHADED_SHADOW)) * inside

    # Paper texture: unevenness at a few pixels' scale, a few grey levels deep (noise drawn at a
    # quarter of the size and enlarged: smooth, and 16x fewer random numbers).
    coarse = rng.standard_normal(((h + 3) // 4, (w + 3) // 4), dtype=np.float32)
    paper = rng.uniform(*PAPER) + 3 * cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
    photo = (paper * (1 - mask) + np.float32(rng.uniform(*SHADED_INK)) * mask) * light
    photo += np.float32(rng.uniform(*SHADED_NOISE)) * rng.standard_normal((h, w), dtype=np.float32)
    return _u8(photo), ".jpg", [cv2.IMWRITE_JPEG_QUALITY, SHADED_JPEG_QUALITY]


def _colour(digit: np.ndarray, rng: np.random.Generator):
    """Blue or red ballpoint (a thinner line than MNIST's) on white, cream or light-coloured paper; 3 channels."""
    ink_name = ("blue", "red")[int(rng.integers(2))]
    ink = [rng.uniform(*channel) for channel in BALLPOINT[ink_name]]
    paper = COLOUR_PAPERS[list(COLOUR_PAPERS)[int(rng.integers(len(COLOUR_PAPERS)))]]
    mask = _grow(ink_mask(digit), -4)
    image = _u8(_on_paper(mask, paper, ink) + rng.normal(0, 2, mask.shape + (3,)))
    if rng.random() < 0.5:
        return image, ".png", []
    return image, ".jpg", [cv2.IMWRITE_JPEG_QUALITY, 90]


def _heavy_jpeg(digit: np.ndarray, rng: np.random.Generator):
    """Dark ink on light grey noisy paper, JPEG at a quality drawn from JPEG_QUALITY."""
    photo = _on_paper(ink_mask(digit), rng.uniform(*JPEG_PAPER), rng.uniform(*INK))
    photo += rng.normal(0, rng.uniform(*JPEG_NOISE), photo.shape)
    quality = int(rng.integers(*JPEG_QUALITY, endpoint=True))
    return _u8(photo), ".jpg", [cv2.IMWRITE_JPEG_QUALITY, quality]
