"""Turn a user's digit image into the MNIST model's input.

The one place that knows what the network expects. Training uses ``normalize``; export writes
``preprocess_spec()`` into the bundle's inference.yml; the server builds a ``DigitPreprocessor``
from the bundle's PreProcess section (``DigitPreprocessor.from_spec``) and runs it on uploads, so
a bundle with other parameters is served with those, and one with steps this module does not
implement is refused instead of being served with ours.

``to_mnist`` repeats what LeCun et al. did to build MNIST from NIST scans, so a photo or a
drawing ends up looking like the training data: the digit, white on black, fitted into a
20x20 box keeping its aspect ratio (anti-aliased, hence grey levels), then moved so that its
centre of mass sits at pixel (14, 14) of the 28x28 field.

Every problem with a user's image raises ``ImageError`` (a ``ValueError``) whose message can be
shown to the client as it is.
"""
from __future__ import annotations

import io
import struct
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import ExifTags, Image

MEAN = 0.1307  # MNIST training-set pixel mean, on the [0, 1] scale
STD = 0.3081  # ... and standard deviation
CANVAS = 28  # side of the model's input
BOX = 20  # the digit is fitted into BOX x BOX, as in MNIST

MAX_PIXELS = 25_000_000  # default decode limit: a 5000 x 5000 photo is more than enough for a digit
_FORMATS = ("PNG", "JPEG", "BMP", "WEBP")  # what we accept; fewer decoders, less attack surface
_UNDECODABLE = "could not decode image: truncated or not a PNG/JPEG/BMP/WebP file"

# Background suppression (see _ink). Pixels closer to the background than _NOISE_SIGMAS noise
# standard deviations are background; the digit must stand out by _MIN_CONTRAST grey levels;
# blobs smaller than _SPECK_FRACTION of the largest blob are dust, not strokes.
_NOISE_SIGMAS = 4.0
_MIN_CONTRAST = 40
_SPECK_FRACTION = 0.02
_MAD_TO_SIGMA = 1.4826  # median absolute deviation -> standard deviation for Gaussian noise

# cv2 equivalents of the EXIF orientations (phones store photos sideways and set this tag).
_ORIENT = {
    2: lambda im: cv2.flip(im, 1),
    3: lambda im: cv2.rotate(im, cv2.ROTATE_180),
    4: lambda im: cv2.flip(im, 0),
    5: lambda im: cv2.transpose(im),
    6: lambda im: cv2.rotate(im, cv2.ROTATE_90_CLOCKWISE),
    7: lambda im: cv2.rotate(cv2.transpose(im), cv2.ROTATE_180),
    8: lambda im: cv2.rotate(im, cv2.ROTATE_90_COUNTERCLOCKWISE),
}


class ImageError(ValueError):
    """Something is wrong with a user's image; the message is meant for the client."""


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
    x = gray.reshape(-1, 1, CANVAS, CANVAS).astype(np.float32)
    if scale == 1 / 255:  # divide rather than multiply: bit-identical to the data training saw
        return (x / np.float32(255) - np.float32(mean)) / np.float32(std)
    return (x * np.float32(scale) - np.float32(mean)) / np.float32(std)


# ---------------------------------------------------------------------------------------------
# Decoding untrusted bytes


def decode(data: bytes, max_pixels: int = MAX_PIXELS, formats: tuple[str, ...] = _FORMATS) -> np.ndarray:
    """Decode PNG/JPEG/BMP/WebP bytes to a uint8 gray or BGR image, refusing oversized images.

    The size comes from the header (Pillow reads only that) and is checked before any pixel is
    decoded: a few KB can claim 30000 x 30000 pixels. 16-bit images are scaled to 8 bits,
    transparency is composited onto white and the EXIF orientation is applied.
    """
    if not data:
        raise ImageError("image is empty (0 bytes)")
    (width, height), orientation = _read_header(data, formats)
    if width * height > max_pixels:
        raise ImageError(
            f"image is {width}x{height} = {width * height} pixels; the limit is {max_pixels}"
        )
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None:  # OpenCV's answer to truncated or corrupt data
        raise ImageError(_UNDECODABLE)
    if orientation in _ORIENT:
        image = _ORIENT[orientation](image)
    return _drop_alpha(_to_uint8(image))


def _read_header(data: bytes, formats: tuple[str, ...] = _FORMATS) -> tuple[tuple[int, int], int]:
    """Return ((width, height), EXIF orientation) from the image header, decoding no pixels."""
    try:
        with Image.open(io.BytesIO(data), formats=formats) as im:
            # Only JPEG and WebP keep EXIF in the header; PNG may put it after the pixels.
            exif = im.getexif() if im.format in ("JPEG", "MPO", "WEBP") else {}
            if im.format == "PNG":
                # Walks the chunks and checks their CRCs, without inflating the pixels. Needed
                # because OpenCV 5 allocates whatever length a chunk claims: 400 bytes whose IDAT
                # says 3 GB cost 3 GB of memory and seconds before imdecode gives up.
                im.verify()
            return im.size, int(exif.get(ExifTags.Base.Orientation, 1))
    except Image.DecompressionBombError as exc:
        # Pillow has its own, higher limit and refuses before we see the size; its message
        # states the pixel count.
        raise ImageError(f"image is too large: {exc}") from exc
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as exc:
        raise ImageError(_UNDECODABLE) from exc


def _to_uint8(image: np.ndarray) -> np.ndarray:
    """Return 8-bit pixels; 16-bit images (PNG allows them) are scaled, not clipped."""
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.uint16:
        return cv2.convertScaleAbs(image, alpha=255.0 / 65535.0)
    raise ImageError(f"unsupported pixel type {image.dtype}; expected 8 or 16 bits per channel")


def _drop_alpha(image: np.ndarray) -> np.ndarray:
    """Composite a gray+alpha or BGRA image onto white; others are returned unchanged.

    White, because a drawing exported from a canvas is dark strokes on transparency, and
    transparent pixels are often stored as black: dropping alpha would give black on black.
    """
    if image.ndim != 3 or image.shape[2] not in (2, 4):
        return image
    alpha = image[:, :, -1:].astype(np.float32) / 255.0
    color = image[:, :, :-1].astype(np.float32)
    flat = np.rint(color * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
    return flat[:, :, 0] if flat.shape[2] == 1 else flat


# ---------------------------------------------------------------------------------------------
# Making an MNIST-like 28 x 28


def to_mnist(image: np.ndarray, box: int = BOX, noise_sigmas: float = _NOISE_SIGMAS,
             min_contrast: int = _MIN_CONTRAST, speck_fraction: float = _SPECK_FRACTION) -> np.ndarray:
    """Turn any gray/BGR/BGRA digit image into a uint8 (28, 28) white-on-black MNIST-like one.

    Dark-on-light or light-on-dark, any size, off-centre: the digit is found, cropped, fitted
    into BOX x BOX and centred by its centre of mass. Raises ImageError when there is no digit.
    """
    ink = _ink(_to_gray(image), noise_sigmas, min_contrast, speck_fraction)
    x, y, w, h = cv2.boundingRect(ink)
    digit = _fit_box(ink[y:y + h, x:x + w], box)
    if not digit.any():  # e.g. two dots in opposite corners of a big photo: averaged away
        raise ImageError(f"image has no visible digit: its marks vanish when scaled to {box}x{box} pixels")
    # Shrinking thins strokes and lowers their peak; MNIST strokes peak at 255.
    digit = cv2.convertScaleAbs(digit, alpha=255.0 / digit.max())
    return _center_of_mass(digit, CANVAS)


def _to_gray(image: np.ndarray) -> np.ndarray:
    """Return a uint8 single-channel image from gray, BGR or BGRA (alpha composited on white)."""
    image = _drop_alpha(_to_uint8(np.asarray(image)))
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 3 and image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    if image.ndim == 2 and image.size > 0:
        return image
    raise ImageError(f"expected a gray, BGR or BGRA image, got an array of shape {image.shape}")


def _ink(gray: np.ndarray, noise_sigmas: float = _NOISE_SIGMAS, min_contrast: int = _MIN_CONTRAST,
         speck_fraction: float = _SPECK_FRACTION) -> np.ndarray:
    """Return the ink as white on black with the background zeroed, or raise ImageError.

    The background is the median pixel (a digit covers well under half of its picture), so the
    ink is whichever extreme lies further from it: dark ink on light paper gets inverted. The
    paper's noise level is estimated robustly (median absolute deviation) and anything within
    _NOISE_SIGMAS of it is zeroed; what survives keeps its anti-aliased grey levels. For a clean
    image (MNIST, a canvas drawing) the noise is 0 and nothing but the background is removed.
    """
    background = _median_u8(gray)
    if int(background) - int(gray.min()) > int(gray.max()) - int(background):
        gray, background = cv2.bitwise_not(gray), 255 - background
    ink = cv2.subtract(gray, np.full_like(gray, background))  # saturates at 0
    noise = _MAD_TO_SIGMA * _median_u8(cv2.absdiff(gray, np.full_like(gray, background)))
    _, ink = cv2.threshold(ink, noise_sigmas * noise, 255, cv2.THRESH_TOZERO)
    # Measured after a light blur so that lone noisy pixels cannot pass for a digit.
    contrast = int(cv2.GaussianBlur(ink, (3, 3), 0).max())
    if contrast < min_contrast:
        raise ImageError(
            f"image has no visible digit: its strongest marks stand out from the background by "
            f"{contrast} grey levels, at least {min_contrast} are needed"
        )
    return _remove_specks(ink, speck_fraction)


def _median_u8(values: np.ndarray) -> int:
    """Median of uint8 values, from a histogram (much faster than np.median on big photos)."""
    counts = np.bincount(values.ravel(), minlength=256)
    return int(np.searchsorted(np.cumsum(counts), (values.size + 1) // 2))


def _remove_specks(ink: np.ndarray, speck_fraction: float = _SPECK_FRACTION) -> np.ndarray:
    """Zero the connected blobs that are tiny next to the largest one (dust, JPEG noise)."""
    _, labels, stats, _ = cv2.connectedComponentsWithStats(
        (ink > 0).astype(np.uint8), connectivity=8
    )
    areas = stats[:, cv2.CC_STAT_AREA]
    keep = areas >= speck_fraction * areas[1:].max()
    if keep[1:].all():  # the usual case for a drawing: nothing to remove, skip the per-pixel pass
        return ink
    keep[0] = False  # label 0 is the background
    return np.where(keep[labels], ink, 0).astype(np.uint8)


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

    formats: tuple[str, ...] = _FORMATS
    max_pixels: int = MAX_PIXELS
    noise_sigmas: float = _NOISE_SIGMAS
    min_contrast: int = _MIN_CONTRAST
    speck_fraction: float = _SPECK_FRACTION
    box: int = BOX
    canvas: int = CANVAS
    scale: float = 1 / 255
    mean: float = MEAN
    std: float = STD

    # op name -> the fields it carries, in the order the chain runs them
    OPS = {
        "DecodeImage": ("formats", "max_pixels"),
        "ToGray": (),
        "ExtractInk": ("noise_sigmas", "min_contrast", "speck_fraction"),
        "FitBox": ("box",),
        "CenterOfMass": ("canvas",),
        "Normalize": ("scale", "mean", "std"),
        "ToCHW": (),
    }

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
        unknown = set(self.formats) - set(_FORMATS)
        if unknown or not self.formats:
            raise ValueError(f"formats must be some of {list(_FORMATS)}, got {list(self.formats)}")
        if self.canvas != CANVAS or not 0 < self.box <= self.canvas:
            raise ValueError(f"canvas must be {CANVAS} and box between 1 and it, got {self.canvas} and {self.box}")
        if not (self.std > 0 and self.scale > 0 and self.max_pixels > 0):
            raise ValueError("std, scale and max_pixels must be positive")

    def to_mnist(self, image: np.ndarray) -> np.ndarray:
        """A decoded image -> uint8 (canvas, canvas), white on black: what the model sees, before scaling."""
        return to_mnist(image, box=self.box, noise_sigmas=self.noise_sigmas, min_contrast=self.min_contrast,
                        speck_fraction=self.speck_fraction)

    def __call__(self, data: bytes | np.ndarray) -> np.ndarray:
        """Bytes of an image file (or a decoded array) -> float32 (1, 1, canvas, canvas) model input."""
        return self.normalize(self.to_mnist(self.decode(data)))

    def decode(self, data: bytes | np.ndarray, max_pixels: int | None = None) -> np.ndarray:
        """Decode image bytes (arrays pass through); ``max_pixels`` may only lower the bundle's limit."""
        if isinstance(data, (bytes, bytearray, memoryview)):
            limit = self.max_pixels if max_pixels is None else min(self.max_pixels, max_pixels)
            return decode(bytes(data), limit, self.formats)
        return data

    def normalize(self, gray: np.ndarray) -> np.ndarray:
        return normalize(gray, self.mean, self.std, self.scale)


def preprocess_spec() -> dict:
    """The default chain's PreProcess section, as export writes it into inference.yml."""
    return DigitPreprocessor().spec()


def preprocess(data: bytes | np.ndarray, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Bytes of an image file (or a decoded array) -> float32 (1, 1, 28, 28), default parameters."""
    return DigitPreprocessor(max_pixels=max_pixels)(data)
