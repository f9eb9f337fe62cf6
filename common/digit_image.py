"""Turn a user's digit image into the MNIST model's input.

The one place that knows what the network expects. Training uses ``normalize``; export writes
``preprocess_spec()`` into the bundle's inference.yml; the server builds a ``DigitPreprocessor``
from the bundle's PreProcess section (``DigitPreprocessor.from_spec``) and runs it on uploads, so
a bundle with other parameters is served with those, and one with steps this module does not
implement is refused instead of being served with ours.

``to_mnist`` repeats what LeCun et al. did to build MNIST from NIST scans, so a photo or a
drawing ends up looking like the training data: the digit, white on black, fitted into a
20x20 box keeping its aspect ratio (anti-aliased, hence grey levels), then moved so that its
centre of mass sits at pixel (14, 14) of the 28x28 field. Photos get more care than scans: the
paper's brightness is estimated locally (shadows, a lamp's fall-off), coloured ink on coloured
paper is separated by colour when brightness does not, and big JPEGs are decoded reduced.

Decoding the untrusted file (size limits, formats, memory) is common/image_decode.py's job. Every
problem with a user's image raises ``ImageError`` (a ``ValueError``) whose message can be shown to
the client as it is.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import cv2
import numpy as np

from .image_decode import FORMATS, MAX_PIXELS, MIN_SIDE, Header, ImageError, decode, drop_alpha, read_header, to_uint8

MEAN = 0.1307  # MNIST training-set pixel mean, on the [0, 1] scale
STD = 0.3081  # ... and standard deviation
CANVAS = 28  # side of the model's input
BOX = 20  # the digit is fitted into BOX x BOX, as in MNIST


# Background suppression (see _ink). Pixels closer to the background than _NOISE_SIGMAS noise
# standard deviations are background; the digit must stand out by _MIN_CONTRAST grey levels;
# blobs smaller than _SPECK_FRACTION of the largest blob are dust, not strokes.
_NOISE_SIGMAS = 4.0
_MIN_CONTRAST = 40
_SPECK_FRACTION = 0.02
_MAD_TO_SIGMA = 1.4826  # median absolute deviation -> standard deviation for Gaussian noise
# Local background (see _opening): a window this fraction of the image's longer side, wider
# than any stroke, on a copy shrunk to _ANALYSIS_SIDE (polarity: _POLARITY_SIDE) pixels.
_BACKGROUND_WINDOW = 0.25
_ANALYSIS_SIDE = 64
_POLARITY_SIDE = 32
_POLARITY_MEDIAN = 7  # see _light_ink
_SPECK_SIDE = 512  # dust is looked for on a mask shrunk to this side (coarser merges specks into the digit)
_COLOR_SIDE = 64  # the paper and ink colours are estimated on a copy this size
# Under uneven light, what is left of a shadow's edge after the background map is faint next to
# the strokes: ink below this fraction of the strongest is dropped (measured on bench.handwriting's
# shaded photos: 91% -> 94%).
_UNEVEN_FLOOR = 0.4
# Thin strokes (a pencil, a fine pen) are thickened before fitting the box: a stroke narrower than
# MIN_STROKE x the digit's longer side (MNIST's 0.5th percentile is 0.064, its median 0.125) ends
# up a broken one-pixel line at 20x20, unlike anything the model was trained on. It is grown to
# _STROKE_GROWTH x MIN_STROKE (bench.handwriting's pencil digits: 97.1% -> 98.1%; 1.75 and 2 did worse).
MIN_STROKE = 0.065
_STROKE_GROWTH = 1.5
_STROKE_SIDE = 64  # stroke width is measured on a copy of the crop this size
_MAX_GAIN = 4.0  # ink in a shadow is brightened at most this much (see _under_uneven_light)
_LUMA_ENOUGH = 0.5  # use the luma unless it keeps less than half the ink's colour contrast
_NEUTRAL = 6  # a BGR image whose channels differ by at most this is gray



# ---------------------------------------------------------------------------------------------
# Normalisation (training and serving)


def normalize(gray: np.ndarray, mean: float = MEAN, std: float = STD, scale: float = 1 / 255) -> np.ndarray:
    """Scale uint8 (28, 28) or (N, 28, 28) white-on-black digits to float32 (N, 1, 28, 28).

    Computes (x * scale - mean) / std. Only uint8 is accepted: a float array could be on the
    [0, 1] or the [0, 255] scale, and guessing wrong would silently ruin training.
    """
    gray = np.asarray(gray)
    if gray.dtype != np.uint8:
        raise ValueError(
            f"normalize expects uint8 pixels 0..255, got {gray.dtype}; paddle's MNIST dataset "
            "yields float32 0..255, convert it with .astype(np.uint8)"
        )
    if gray.shape[-2:] != (CANVAS, CANVAS) or gray.ndim not in (2, 3):
        raise ValueError(f"normalize expects shape (28, 28) or (N, 28, 28), got {gray.shape}")
    return _normalized_levels(mean, std, scale)[gray.reshape(-1, 1, CANVAS, CANVAS)]


@functools.lru_cache(maxsize=8)
def _normalized_levels(mean: float, std: float, scale: float) -> np.ndarray:
    """What ``normalize`` makes of each of the 256 grey levels: a table look-up is 5x cheaper
    than computing 784 pixels, and gives the same float32 numbers."""
    x = np.arange(256, dtype=np.float32)
    if scale == 1 / 255:  # divide rather than multiply: bit-identical to the data training saw
        levels = (x / np.float32(255) - np.float32(mean)) / np.float32(std)
    else:
        levels = (x * np.float32(scale) - np.float32(mean)) / np.float32(std)
    levels.flags.writeable = False  # shared by every call
    return levels


# ---------------------------------------------------------------------------------------------
# Making an MNIST-like 28 x 28


def to_mnist(image: np.ndarray, box: int = BOX, noise_sigmas: float = _NOISE_SIGMAS,
             min_contrast: int = _MIN_CONTRAST, speck_fraction: float = _SPECK_FRACTION,
             background_window: float = _BACKGROUND_WINDOW, min_stroke: float = MIN_STROKE) -> np.ndarray:
    """Turn any gray/BGR/BGRA digit image into a uint8 (28, 28) white-on-black MNIST-like one.

    Dark-on-light or light-on-dark, any size, off-centre, in a shadow or coloured: the digit is
    found, cropped, its strokes thickened if thinner than ``min_stroke`` (0: never), fitted into
    BOX x BOX and centred by its centre of mass. Raises ImageError when there is no digit.
    """
    ink, noiseless = _ink(_to_gray(image), noise_sigmas, min_contrast, speck_fraction, background_window)
    digit = _fit_box(_thicken(_crop_digit(ink, speck_fraction, noiseless), min_stroke), box)
    if not digit.any():  # e.g. two dots in opposite corners of a big photo: averaged away
        raise ImageError(f"image has no visible digit: its marks vanish when scaled to {box}x{box} pixels")
    # Shrinking thins strokes and lowers their peak; MNIST strokes peak at 255.
    digit = cv2.convertScaleAbs(digit, alpha=255.0 / digit.max())
    return _center_of_mass(digit, CANVAS)


def _to_gray(image: np.ndarray) -> np.ndarray:
    """Return a uint8 single-channel image from gray, BGR or BGRA (alpha composited on white)."""
    image = drop_alpha(to_uint8(np.asarray(image)))
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 3 and image.shape[2] == 3:
        return _color_to_gray(image)
    if image.ndim == 2 and image.size > 0:
        return image
    raise ImageError(f"expected a gray, BGR or BGRA image, got an array of shape {image.shape}")


def _color_to_gray(bgr: np.ndarray) -> np.ndarray:
    """Gray from BGR, keeping the contrast between ink and paper even when it is only in colour.

    Usually the luma (cvtColor) is enough: blue or red ink on white or pink paper differ in
    brightness too. When ink and paper are about as bright (red on green), the luma loses the
    digit, so the pixels are projected instead on the colour difference between paper (the
    median colour) and ink (the colours furthest from it), scaled so that gray ink on gray paper
    would give the same contrast as the luma.
    """
    small = _shrink(bgr, _COLOR_SIDE)
    channels = cv2.split(small)
    if max(int(cv2.absdiff(channels[0], channels[1]).max()), int(cv2.absdiff(channels[1], channels[2]).max())) \
            <= _NEUTRAL:  # a gray picture stored as BGR (a canvas drawing): no colour to use
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    paper = np.float32([_median_u8(c) for c in channels])
    pixels = small.reshape(-1, 3).astype(np.float32)
    distance = np.abs(pixels - paper).sum(axis=1)
    ink = pixels[distance >= 0.5 * distance.max()].mean(axis=0)
    difference = paper - ink  # points from ink to paper: the projection is dark ink on light
    weights = difference / max(float(np.abs(difference).sum()), 1e-6)
    luma_contrast = abs(float(difference @ np.float32([0.114, 0.587, 0.299])))
    if luma_contrast >= _LUMA_ENOUGH * float(difference @ weights):
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    offset = -255.0 * weights[weights < 0].sum()  # keeps every projected value within 0..255
    return cv2.transform(bgr, np.float32([[*weights, offset]]))


def _shrink(image: np.ndarray, side: int) -> np.ndarray:
    """A copy whose longer side is at most about ``side``: INTER_AREA by a whole factor (fast)."""
    factor = _factor(image, side)
    if factor == 1:
        return image
    h, w = max(1, image.shape[0] // factor), max(1, image.shape[1] // factor)
    return cv2.resize(image[:h * factor, :w * factor], (w, h), interpolation=cv2.INTER_AREA)


def _factor(image: np.ndarray, side: int) -> int:
    """The whole factor by which ``_shrink`` divides the image's sides."""
    return -(-max(image.shape[:2]) // side)


def _ink(gray: np.ndarray, noise_sigmas: float = _NOISE_SIGMAS, min_contrast: int = _MIN_CONTRAST,
         speck_fraction: float = _SPECK_FRACTION, background_window: float = _BACKGROUND_WINDOW
         ) -> tuple[np.ndarray, bool]:
    """Return (the ink, white on black with the background zeroed; whether the paper is noiseless).

    Raises ImageError when nothing stands out. Noiseless paper means a drawing, not a photo.

    The analysis runs on a copy shrunk to at most _ANALYSIS_SIDE pixels, where strokes are a few
    pixels wide and noise is averaged away. Polarity: when most of the border is evenly lit
    paper, the ink is the extreme further from it; otherwise the ink is the minority, so the
    image lies on the ink's side of its local median. Dark ink on light paper gets inverted. Unless the paper is
    even, its brightness is then estimated locally (``_opening``) and subtracted, so a shadow or
    a lamp's fall-off is not ink. The paper's noise level is estimated robustly (median
    absolute deviation) and anything within ``noise_sigmas`` of it is zeroed; what survives
    keeps its anti-aliased grey levels. For a clean image (MNIST, a canvas drawing) the paper is
    flat and noiseless and nothing but the background is removed.
    """
    small = _shrink(gray, _ANALYSIS_SIDE)
    tiny = _shrink(small, _POLARITY_SIDE)
    ring = np.sort(_border(tiny)).astype(int)
    tenth = len(ring) // 10
    if ring[-1 - tenth] - ring[tenth] < min_contrast / 2:
        # Most of the border is evenly lit paper (strokes may touch it): the ink is the extreme
        # further from the paper's level.
        paper = ring[len(ring) // 2]
        dark_ink = paper - int(tiny.min()) > int(tiny.max()) - paper
    else:
        dark_ink = not _light_ink(tiny)
    if dark_ink:
        gray, small, tiny = cv2.bitwise_not(gray), cv2.bitwise_not(small), cv2.bitwise_not(tiny)
    noiseless = False
    if ring[-1] - ring[0] < min_contrast / 2 or _even(tiny, background_window, min_contrast):  # one level
        # Full-resolution pixels: the noise is averaged away in ``small``.
        background, spread = _median_and_mad_u8(_sample(gray))
        ink = cv2.subtract(gray, background)  # saturates at 0
        noise = _MAD_TO_SIGMA * spread
        _, ink = cv2.threshold(ink, noise_sigmas * noise, 255, cv2.THRESH_TOZERO)
        noiseless = noise == 0
    else:
        ink = _under_uneven_light(gray, _opening(small, background_window), dark_ink, noise_sigmas)
    # Measured after a light blur so that lone noisy pixels cannot pass for a digit.
    contrast = int(cv2.GaussianBlur(ink, (3, 3), 0).max())
    if contrast < min_contrast:
        raise ImageError(
            f"image has no visible digit: its strongest marks stand out from the background by "
            f"{contrast} grey levels, at least {min_contrast} are needed"
        )
    return ink, noiseless


def _light_ink(tiny: np.ndarray) -> bool:
    """Whether the ink is lighter than the paper: the strongest mark a small median removes is light.

    A median over _POLARITY_MEDIAN pixels of the _POLARITY_SIDE copy keeps the paper, its
    gradients and a shadow's straight edge, and removes strokes; what it removes is mostly ink.
    The strongest removed mark, not the mean: a median half the image wide (as before) rounds a
    shadow's edge off, and the paper it misplaces outweighed a small digit's ink (99 of the first
    1,000 of bench.handwriting's shaded photos read as light ink on dark paper; now 1).
    """
    median = cv2.medianBlur(tiny, _POLARITY_MEDIAN)
    return int(cv2.subtract(tiny, median).max()) > int(cv2.subtract(median, tiny).max())


def _opening(light_ink: np.ndarray, window: float) -> np.ndarray:
    """The paper's level under light ink: strokes narrower than ``window`` x the longer side vanish.

    Steps such as a shadow's edge and smooth gradients are kept. Padded with white so that the
    window may stick out of the image: otherwise the paper's level is missed where a shadow's
    slanted edge meets the border (no square fits there).
    """
    side = max(3, round(window * max(light_ink.shape)) | 1)
    r = side // 2
    padded = cv2.copyMakeBorder(light_ink, r, r, r, r, cv2.BORDER_CONSTANT, value=255)
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (side, side))
    return cv2.morphologyEx(padded, cv2.MORPH_OPEN, kernel)[r:-r, r:-r]


def _even(tiny: np.ndarray, window: float, min_contrast: int) -> bool:
    """Whether the paper under light ink is evenly lit: its level varies by less than half
    ``min_contrast`` along the border, where the paper shows, once strokes are opened away.

    An even page gets one level (its median), exactly as before local backgrounds: an opening
    also eats strokes bolder than the window (2% of MNIST digits have blobs wider than a quarter
    of their 28 pixels), and flat paper needs no map.
    """
    border = _border(_opening(tiny, window))
    return int(border.max()) - int(border.min()) < min_contrast / 2


def _border(image: np.ndarray) -> np.ndarray:
    """The pixels along the image's four edges."""
    return np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])


def _sample(image: np.ndarray) -> np.ndarray:
    """Every 2nd or 4th pixel of a big image: enough for a noise estimate, 4-16x cheaper."""
    step = 1 if image.size < 20_000 else 2 if image.size < 1_000_000 else 4
    return image if step == 1 else np.ascontiguousarray(image[::step, ::step])


def _under_uneven_light(light_ink: np.ndarray, background: np.ndarray, inverted: bool,
                        noise_sigmas: float) -> np.ndarray:
    """Light ink minus the background map, thresholded, then rescaled to the best-lit contrast.

    The threshold (``noise_sigmas`` noise standard deviations) applies to the plain difference:
    the camera's noise does not grow in a shadow. Then, light multiplies: under a shadow that
    halves the paper's brightness the ink stands out half as much, so each pixel is scaled by
    (brightest paper / local paper), at most _MAX_GAIN times. The paper is 255 - background
    when the image was inverted (dark ink).
    """
    size = light_ink.shape[::-1]
    paper = cv2.bitwise_not(background) if inverted else background
    brightest = max(float(paper.max()), 1.0)  # 1: black paper all over would divide 0 by 0
    gain = brightest / np.maximum(paper.astype(np.float32), brightest / _MAX_GAIN)
    background = cv2.resize(background, size, interpolation=cv2.INTER_LINEAR)
    difference = cv2.subtract(light_ink, background)
    noise = _MAD_TO_SIGMA * _median_u8(cv2.absdiff(_sample(light_ink), _sample(background)))
    _, difference = cv2.threshold(difference, noise_sigmas * noise, 255, cv2.THRESH_TOZERO)
    ink = cv2.multiply(difference, cv2.resize(gain, size, interpolation=cv2.INTER_LINEAR), dtype=cv2.CV_8U)
    _, ink = cv2.threshold(ink, _UNEVEN_FLOOR * int(ink.max()), 255, cv2.THRESH_TOZERO)
    return ink


def _median_u8(values: np.ndarray) -> int:
    """Median of uint8 values, from a histogram (cv2.calcHist: faster than np.bincount or np.median)."""
    counts = cv2.calcHist([values], [0], None, [256], [0, 256]).ravel().cumsum()
    return int(np.searchsorted(counts, (values.size + 1) // 2))


def _median_and_mad_u8(values: np.ndarray) -> tuple[int, int]:
    """(median, median absolute deviation from it) of uint8 values, both from one histogram.

    The same numbers as ``_median_u8(values)`` and ``_median_u8(cv2.absdiff(values, median))``
    without a second pass over the pixels (20-45 us of a 200x200 drawing's 620-1000, as the machine varies).
    """
    counts = cv2.calcHist([values], [0], None, [256], [0, 256]).ravel()
    half = (values.size + 1) // 2
    median = int(np.searchsorted(counts.cumsum(), half))
    # |value - median| = d gathers the bins median + d and median - d.
    deviations = np.zeros(256, np.float32)
    deviations[:256 - median] += counts[median:]
    deviations[:median + 1] += counts[median::-1]
    deviations[0] -= counts[median]  # counted from both sides
    return median, int(np.searchsorted(deviations.cumsum(), half))


def _crop_digit(ink: np.ndarray, speck_fraction: float = _SPECK_FRACTION, noiseless: bool = False) -> np.ndarray:
    """The ink's bounding box, ignoring connected blobs tiny next to the largest (dust, JPEG noise).

    Labelled on a mask shrunk to _SPECK_SIDE when the image is bigger (a speck stays a pixel
    there; each blob's area is counted in the image's pixels), and specks are zeroed only in the
    crop. On ``noiseless`` paper (a drawing) the specks are dust, which lies apart from the
    digit: when a copy shrunk to _ANALYSIS_SIDE shows one blob, the pixels need no labelling.
    """
    mask = cv2.threshold(ink, 0, 255, cv2.THRESH_BINARY)[1]
    if noiseless and _factor(mask, _ANALYSIS_SIDE) > 1 \
            and cv2.connectedComponents(_shrink(mask, _ANALYSIS_SIDE), connectivity=8)[0] <= 2:
        x, y, w, h = cv2.boundingRect(mask)
        return ink[y:y + h, x:x + w]
    small = _shrink(mask, _SPECK_SIDE)
    # Plain labelling: connectedComponentsWithStats costs 3-4x more, and one blob needs no stats.
    count, labels = cv2.connectedComponents(cv2.threshold(small, 0, 1, cv2.THRESH_BINARY)[1], connectivity=8)
    keep = np.ones(count, bool)
    if count > 2:
        # Summing the mask counts the image's ink pixels (255 each), also when shrunk.
        areas = np.bincount(labels.ravel(), weights=small.ravel(), minlength=count)
        keep = areas >= speck_fraction * areas[1:].max()
    keep[0] = False  # label 0 is the background
    if keep[1:].all():
        x, y, w, h = cv2.boundingRect(mask)
        return ink[y:y + h, x:x + w]
    inside = keep[labels].astype(np.uint8)
    x, y, w, h = cv2.boundingRect(inside)
    f = _factor(ink, _SPECK_SIDE)
    crop = ink[y * f:(y + h) * f, x * f:(x + w) * f]
    inside = inside[y:y + h, x:x + w]
    if f > 1:
        inside = cv2.resize(inside, crop.shape[::-1], interpolation=cv2.INTER_NEAREST)
    crop = cv2.multiply(crop, inside)
    x, y, w, h = cv2.boundingRect(crop)
    return crop[y:y + h, x:x + w]


def strokes(digit: np.ndarray) -> tuple[float, float]:
    """(mean width, total length) of a cropped digit's strokes, as fractions of its longer side.

    Inside the strokes (pixels at least half the strongest ink), the mean distance to the paper
    is a quarter of the width for a stroke of even width, plus half a pixel (distances run from
    pixel centres); the length is the strokes' area over that width.
    """
    inside = cv2.threshold(digit, int(digit.max()) // 2, 255, cv2.THRESH_BINARY)[1]
    area = cv2.countNonZero(inside)
    if not area:
        return 0.0, 0.0
    padded = cv2.copyMakeBorder(inside, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)  # the crop's edge is paper
    width = max(1.0, 4 * (cv2.mean(cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_5), mask=padded)[0] - 0.5))
    side = max(digit.shape)
    return width / side, area / width / side


def _thicken(digit: np.ndarray, min_stroke: float) -> np.ndarray:
    """Grow strokes thinner than ``min_stroke`` (see ``strokes``) to _STROKE_GROWTH x it.

    A grey dilation with a round pen keeps the ink's grey levels. Only lines count as strokes
    (at least as long as the digit is high: a "1"); dots are left alone, and so are strokes
    whose growth would be under two pixels: their width cannot be measured that finely.
    """
    if min_stroke <= 0:
        return digit
    width, length = strokes(_shrink(digit, _STROKE_SIDE))  # a ratio: measured on a small copy, 4x cheaper
    if width >= min_stroke or length < 1:
        return digit
    grow = round((_STROKE_GROWTH * min_stroke - width) * max(digit.shape))
    if grow < 2:
        return digit
    r = grow // 2
    padded = cv2.copyMakeBorder(digit, r, r, r, r, cv2.BORDER_CONSTANT, value=0)
    return cv2.dilate(padded, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)))


def _fit_box(digit: np.ndarray, box: int) -> np.ndarray:
    """Resize so the longer side is ``box`` pixels, keeping the aspect ratio."""
    h, w = digit.shape
    scale = box / max(h, w)
    if scale == 1:
        return digit  # already MNIST-sized: leave the pixels alone
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    # INTER_AREA averages when shrinking (anti-aliasing, like MNIST); it is blocky when enlarging.
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return cv2.resize(digit, size, interpolation=interpolation)


def _center_of_mass(digit: np.ndarray, canvas: int) -> np.ndarray:
    """Paste ``digit`` on a black canvas so its centre of mass lands on pixel (canvas // 2).

    MNIST's centres of mass sit at (14, 14) +- 0.5 in pixel indices: whole-pixel shifts, so we
    shift by whole pixels too (no resampling blur). Parts pushed off the canvas are clipped.
    """
    m = cv2.moments(digit)
    target = canvas // 2
    dx = int(np.floor(target - m["m10"] / m["m00"] + 0.5))
    dy = int(np.floor(target - m["m01"] / m["m00"] + 0.5))
    shift = np.float32([[1, 0, dx], [0, 1, dy]])
    return cv2.warpAffine(digit, shift, (canvas, canvas), flags=cv2.INTER_NEAREST,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


# ---------------------------------------------------------------------------------------------
# The whole chain, built from (and described by) the bundle's PreProcess section


@dataclass(frozen=True)
class DigitPreprocessor:
    """decode -> to_mnist -> normalize with the parameters of one bundle.

    ``preprocess_spec()`` writes the parameters as PaddleClas-style ``transform_ops``; ``from_spec``
    reads them back and refuses any step, order or parameter this module does not implement.
    """

    formats: tuple[str, ...] = FORMATS
    max_pixels: int = MAX_PIXELS
    min_side: int = MIN_SIDE
    noise_sigmas: float = _NOISE_SIGMAS
    min_contrast: int = _MIN_CONTRAST
    speck_fraction: float = _SPECK_FRACTION
    background_window: float = _BACKGROUND_WINDOW
    min_stroke: float = MIN_STROKE
    box: int = BOX
    canvas: int = CANVAS
    scale: float = 1 / 255
    mean: float = MEAN
    std: float = STD

    # op name -> the fields it carries, in the order the chain runs them
    OPS = {
        "DecodeImage": ("formats", "max_pixels", "min_side"),
        "ToGray": (),
        "ExtractInk": ("noise_sigmas", "min_contrast", "speck_fraction", "background_window"),
        "FitBox": ("min_stroke", "box"),
        "CenterOfMass": ("canvas",),
        "Normalize": ("scale", "mean", "std"),
        "ToCHW": (),
    }

    # Parameters that bundles exported before them lack, with the value that reproduces what
    # those bundles were served with.
    ADDED = {"min_stroke": 0.0}

    def spec(self) -> dict:
        """The PreProcess section of inference.yml (plain types only, for yaml.safe_dump)."""
        def plain(value):
            return list(value) if isinstance(value, tuple) else value
        return {"name": "DigitImage", "transform_ops": [
            {op: {f: plain(getattr(self, f)) for f in fields}} for op, fields in self.OPS.items()]}

    @classmethod
    def from_spec(cls, spec) -> "DigitPreprocessor":
        """Parse a bundle's PreProcess; ``ValueError`` saying what is not implemented here."""
        ops = spec.get("transform_ops") if isinstance(spec, dict) else None
        if not isinstance(ops, list) or not all(isinstance(op, dict) and len(op) == 1 for op in ops):
            raise ValueError("PreProcess needs transform_ops: a list of {OpName: {parameters}}")
        names = [next(iter(op)) for op in ops]
        if names != list(cls.OPS):
            raise ValueError(f"PreProcess transform_ops {names} are not implemented by this server; it runs "
                             f"exactly {list(cls.OPS)} (with any parameters)")
        values = {}
        for op in ops:
            (name, params), = op.items()
            params = params or {}
            if isinstance(params, dict):
                params = {**{f: cls.ADDED[f] for f in cls.OPS[name] if f in cls.ADDED}, **params}
            if not isinstance(params, dict) or set(params) != set(cls.OPS[name]):
                raise ValueError(f"PreProcess {name} takes exactly the parameters {list(cls.OPS[name]) or 'none'}, "
                                 f"got {params!r}")
            values.update(params)
        try:
            made = cls(**{**values, "formats": tuple(values["formats"])})
            made._check()
        except (TypeError, ValueError) as exc:
            raise ValueError(f"PreProcess parameters are not usable: {exc}") from None
        return made

    def _check(self) -> None:
        unknown = set(self.formats) - set(FORMATS)
        if unknown or not self.formats:
            raise ValueError(f"formats must be some of {list(FORMATS)}, got {list(self.formats)}")
        if self.canvas != CANVAS or not 0 < self.box <= self.canvas:
            raise ValueError(f"canvas must be {CANVAS} and box between 1 and it, got {self.canvas} and {self.box}")
        if not (self.std > 0 and self.scale > 0 and self.max_pixels > 0 and self.min_side > 0):
            raise ValueError("std, scale, max_pixels and min_side must be positive")
        if not 0 <= self.min_stroke < 0.5:
            raise ValueError(f"min_stroke is a fraction of the digit's side below 0.5 (0: off), got {self.min_stroke}")
        if not 0 < self.background_window <= 1:
            raise ValueError(f"background_window is a fraction of the image's side, got {self.background_window}")

    def to_mnist(self, image: np.ndarray) -> np.ndarray:
        """A decoded image -> uint8 (canvas, canvas), white on black: what the model sees, before scaling."""
        return to_mnist(image, box=self.box, noise_sigmas=self.noise_sigmas, min_contrast=self.min_contrast,
                        speck_fraction=self.speck_fraction, background_window=self.background_window,
                        min_stroke=self.min_stroke)

    def __call__(self, data: bytes | np.ndarray) -> np.ndarray:
        """Bytes of an image file (or a decoded array) -> float32 (1, 1, canvas, canvas) model input."""
        return self.normalize(self.to_mnist(self.decode(data)))

    def header(self, data: bytes) -> Header:
        """The image file's header (size, pixel layout), in one of this bundle's formats; ``ImageError`` if not."""
        return read_header(bytes(data), self.formats)

    def decode(self, data: bytes | np.ndarray, max_pixels: int | None = None, header: Header | None = None
               ) -> np.ndarray:
        """Decode image bytes (arrays pass through); ``max_pixels`` may only lower the bundle's limit;
        ``header``: what ``self.header(data)`` said, when the caller read it already."""
        if isinstance(data, (bytes, bytearray, memoryview)):
            limit = self.max_pixels if max_pixels is None else min(self.max_pixels, max_pixels)
            return decode(bytes(data), limit, self.formats, self.min_side, header)
        return data

    def normalize(self, gray: np.ndarray) -> np.ndarray:
        return normalize(gray, self.mean, self.std, self.scale)


def preprocess_spec() -> dict:
    """The default chain's PreProcess section, as export writes it into inference.yml."""
    return DigitPreprocessor().spec()


def preprocess(data: bytes | np.ndarray, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Bytes of an image file (or a decoded array) -> float32 (1, 1, 28, 28), default parameters."""
    return DigitPreprocessor(max_pixels=max_pixels)(data)
