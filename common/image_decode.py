"""Decoding untrusted image files: sizes read from the header first, memory and time bounded, one error type.

Every endpoint that takes an image (the server's ``/predict/digit``, V2's ``NAME-image``, the digit
preprocessing) decodes through ``decode``. What a file may cost is known before a pixel is decoded:

- ``read_header`` reads the size, pixel layout and EXIF orientation without decoding (a few KB can
  claim 30000 x 30000 pixels; PNG chunks that claim more than the file holds are refused, since
  OpenCV would allocate what they claim);
- ``peak_bytes`` says how much memory decoding that file takes at its peak, so that a server can
  reserve it from a budget first (serve/budget.py);
- big JPEGs are decoded at 1/2, 1/4 or 1/8 of their size by libjpeg; other images whose pixels
  would take more than ``LEAN_BYTES`` are decoded by Pillow at 8 bits and shrunk by a whole factor
  at once (OpenCV holds them at full size and depth, twice: a 5000x5000 16-bit RGBA PNG takes
  385 MB to decode that way and 576 MB to preprocess, against about 200 MB and 0.45 s this way).

Problems raise ``ImageError`` (a ``ValueError``) whose message can be shown to the client as it is.
"""
from __future__ import annotations

import io
import struct
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import ExifTags, Image

FORMATS = ("PNG", "JPEG", "BMP", "WEBP")  # what we accept; fewer decoders, less attack surface
MAX_PIXELS = 25_000_000  # default limit: a 5000 x 5000 photo is more than enough for a digit
MIN_SIDE = 384  # big images are decoded reduced down to this shorter side (the digit ends up 20x20)
LEAN_BYTES = 16 * 1024 * 1024  # pixels of a non-JPEG image above this (decoded by OpenCV) go the lean way
UNDECODABLE = "could not decode image: truncated or not a PNG/JPEG/BMP/WebP file"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# PNG colour type -> channels OpenCV decodes it to (palette: BGR, or BGRA with transparency; say 4)
_PNG_CHANNELS = {0: 1, 2: 3, 3: 4, 4: 2, 6: 4}
# Pillow mode -> (channels, bytes per channel) OpenCV decodes such a file to
_MODE_LAYOUT = {"1": (1, 1), "L": (1, 1), "P": (4, 1), "RGB": (3, 1), "RGBA": (4, 1), "LA": (2, 1),
                "CMYK": (3, 1), "YCbCr": (3, 1), "I;16": (1, 2), "I": (1, 2), "F": (1, 4)}
# imdecode flags for JPEG decoding at 1/2, 1/4, 1/8 of the size: [gray?][reduction]
_REDUCED = {
    False: {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8},
    True: {2: cv2.IMREAD_REDUCED_GRAYSCALE_2, 4: cv2.IMREAD_REDUCED_GRAYSCALE_4, 8: cv2.IMREAD_REDUCED_GRAYSCALE_8},
}
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


@dataclass(frozen=True)
class Header:
    """What an image file's header says: size, pixel layout, EXIF orientation and format."""

    width: int
    height: int
    channels: int
    depth: int  # bytes per channel once decoded
    orientation: int
    kind: str  # PNG, JPEG, JPEG-gray (one-channel JPEG), BMP, WEBP

    @property
    def pixels(self) -> int:
        return self.width * self.height

    def reduction(self, min_side: int | None) -> int:
        """How much ``decode`` shrinks it while decoding: the largest of 8, 4, 2 keeping the shorter side at
        ``min_side`` or more, for JPEGs (always) and for images too big for OpenCV's way; else 1."""
        if not min_side or not (self.kind.startswith("JPEG") or self.lean):
            return 1
        return next((f for f in (8, 4, 2) if min(self.width, self.height) // f >= min_side), 1)

    @property
    def lean(self) -> bool:
        """Decoded by Pillow at 8 bits and shrunk, rather than by OpenCV at full size and depth."""
        return not self.kind.startswith("JPEG") and self.pixels * self.channels * self.depth > LEAN_BYTES


def read_header(data: bytes, formats: tuple[str, ...] = FORMATS) -> Header:
    """The header of an image file, decoding no pixels; ``ImageError`` if it is none of ``formats``."""
    if not data:
        raise ImageError("image is empty (0 bytes)")
    if data.startswith(_PNG_SIGNATURE):
        if "PNG" not in formats:
            raise ImageError(UNDECODABLE)
        (width, height), depth, color = _png_header(data)
        return Header(width, height, _PNG_CHANNELS.get(color, 4), 2 if depth == 16 else 1, 1, "PNG")
    try:
        with Image.open(io.BytesIO(data), formats=[f for f in formats if f != "PNG"]) as im:
            # Only JPEG and WebP keep EXIF in the header.
            exif = im.getexif() if im.format in ("JPEG", "MPO", "WEBP") else {}
            kind = "JPEG-gray" if im.format in ("JPEG", "MPO") and im.mode == "L" else \
                "JPEG" if im.format in ("JPEG", "MPO") else im.format
            channels, depth = _MODE_LAYOUT.get(im.mode, (4, 1))
            return Header(*im.size, channels, depth, int(exif.get(ExifTags.Base.Orientation, 1)), kind)
    except Image.DecompressionBombError as exc:
        # Pillow has its own, higher limit and refuses before we see the size; its message
        # states the pixel count.
        raise ImageError(f"image is too large: {exc}") from exc
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as exc:
        raise ImageError(UNDECODABLE) from exc


def check_pixels(header: Header, max_pixels: int) -> Header:
    """``header`` if its image has at most ``max_pixels`` pixels, else ``ImageError`` saying so."""
    if header.pixels > max_pixels:
        raise ImageError(f"image is {header.width}x{header.height} = {header.pixels} pixels; the limit is {max_pixels}")
    return header


def peak_bytes(header: Header, min_side: int | None = MIN_SIDE) -> int:
    """Memory that decoding and preprocessing this image takes at its peak, an upper estimate.

    OpenCV's decoding holds the pixels twice at their full depth; converting to 8 bits and
    compositing transparency onto white hold a few 8-bit copies more. Pillow's lean way holds the
    8-bit pixels twice, the reduced copy being small. Measured with tests/test_image_decode.py.
    """
    n = header.pixels // header.reduction(min_side) ** 2 if header.kind.startswith("JPEG") else header.pixels
    if header.lean:
        return 2 * n * max(header.channels, 3) + n  # Pillow's RGB(A) at 8 bits, twice; the 16-bit gray's copy
    return 2 * n * header.channels * header.depth + 5 * n * 3  # OpenCV's decode, twice; 8-bit working copies


def decode(data: bytes, max_pixels: int = MAX_PIXELS, formats: tuple[str, ...] = FORMATS,
           min_side: int | None = None, header: Header | None = None) -> np.ndarray:
    """Decode PNG/JPEG/BMP/WebP bytes to a uint8 gray or BGR image, refusing oversized images.

    The size comes from the header (``header``, when the caller read it already) and is checked
    before any pixel is decoded. 16-bit images are scaled to 8 bits, transparency is composited
    onto white and the EXIF orientation is applied. With ``min_side``, a JPEG is decoded at 1/2,
    1/4 or 1/8 of its size (libjpeg scales while decoding, several times faster), and so is an
    image too big for OpenCV's way (see ``Header.lean``), as long as its shorter side keeps at
    least ``min_side`` pixels.
    """
    header = check_pixels(header or read_header(data, formats), max_pixels)
    if header.lean:
        image = _decode_lean(data, header.reduction(min_side))
    else:
        image = _decode_opencv(data, header, header.reduction(min_side))
    if header.orientation in _ORIENT:
        image = _ORIENT[header.orientation](image)
    return image


def _decode_opencv(data: bytes, header: Header, reduction: int) -> np.ndarray:
    # Orientation is applied by the caller, from the header we read; OpenCV looking for EXIF itself
    # costs 40 us on a 200x200 PNG (a sixth of its decoding).
    flags = cv2.IMREAD_UNCHANGED | cv2.IMREAD_IGNORE_ORIENTATION
    if reduction > 1:
        flags = _REDUCED[header.kind == "JPEG-gray"][reduction] | cv2.IMREAD_IGNORE_ORIENTATION
    image = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    if image is None:  # OpenCV's answer to truncated or corrupt data
        raise ImageError(UNDECODABLE)
    image = to_uint8(image)  # the full-depth pixels are freed here, before compositing
    return drop_alpha(image)


def _decode_lean(data: bytes, reduction: int) -> np.ndarray:
    """Pillow: pixels at 8 bits, shrunk by ``reduction`` (a box filter), as gray or BGR(A) for OpenCV."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            if im.mode in ("I;16", "I;16B", "I"):  # 16-bit gray: scaled to 8 bits, not clipped
                small = Image.fromarray((np.asarray(im, np.uint32) >> 8).astype(np.uint8))
            elif im.mode in ("L", "RGB", "RGBA", "LA"):
                small = im
            else:
                small = im.convert("RGBA" if "transparency" in im.info or im.mode in ("P", "PA") else "RGB")
            if reduction > 1:
                small = small.reduce(reduction)
            pixels = np.asarray(small)
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as exc:
        raise ImageError(UNDECODABLE) from exc
    if pixels.ndim == 3:
        pixels = cv2.cvtColor(pixels, {2: cv2.COLOR_GRAY2BGR, 3: cv2.COLOR_RGB2BGR, 4: cv2.COLOR_RGBA2BGRA}[
            pixels.shape[2]]) if pixels.shape[2] != 2 else pixels
    return drop_alpha(pixels)


def _png_header(data: bytes) -> tuple[tuple[int, int], int, int]:
    """((width, height), bit depth, colour type) from IHDR, after checking that every chunk fits inside ``data``.

    Needed because OpenCV 5 allocates whatever length a chunk claims: 400 bytes whose IDAT says
    3 GB cost 3 GB of memory and seconds before imdecode gives up. Walking the chunk headers
    bounds every claim by the file's size; it is what Pillow's ``verify()`` did for us, minus the
    CRCs (libpng checks those while decoding) and ~20x cheaper.
    """
    pos, ihdr = len(_PNG_SIGNATURE), None
    while pos + 8 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, pos)
        end = pos + 12 + length  # length, type, body, CRC
        if end > len(data):
            break  # truncated, or a chunk claiming more than the file holds
        if ihdr is None:
            if kind != b"IHDR" or length != 13:
                break
            width, height, depth, color = struct.unpack_from(">IIBB", data, pos + 8)
            if 0 in (width, height) or max(width, height) >= 2 ** 31:
                break
            ihdr = (width, height), depth, color
        if kind == b"IEND":
            return ihdr
        pos = end
    raise ImageError(UNDECODABLE)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Return 8-bit pixels; 16-bit images (PNG allows them) are scaled, not clipped."""
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.uint16:
        return cv2.convertScaleAbs(image, alpha=255.0 / 65535.0)
    raise ImageError(f"unsupported pixel type {image.dtype}; expected 8 or 16 bits per channel")


def drop_alpha(image: np.ndarray) -> np.ndarray:
    """Composite a gray+alpha or BGRA image onto white; others are returned unchanged.

    White, because a drawing exported from a canvas is dark strokes on transparency, and
    transparent pixels are often stored as black: dropping alpha would give black on black.
    """
    if image.ndim != 3 or image.shape[2] not in (2, 4):
        return image
    alpha = image[:, :, -1]
    # A copy of the colour channels either way: they are overwritten below, the caller's array is not.
    color = image[:, :, 0].copy() if image.shape[2] == 2 else cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if image.shape[2] == 4:
        alpha = cv2.cvtColor(alpha, cv2.COLOR_GRAY2BGR)
    # color * a + 255 * (1 - a) = 255 - (255 - color) * a, in uint8 with rounding (cv2 rounds);
    # computed in place in ``color`` so that only one more copy is held at a time.
    cv2.bitwise_not(color, dst=color)
    cv2.multiply(color, alpha, dst=color, scale=1 / 255)
    return cv2.bitwise_not(color, dst=color)
