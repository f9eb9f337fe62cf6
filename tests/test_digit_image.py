"""Tests for common.digit_image: decoding untrusted bytes and making MNIST-like digits.

No trained model needed. The last test compares against genuine MNIST samples when the files
are in ../shared/data/mnist (required when CI=true).
"""
from __future__ import annotations

import io
import os
import struct
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from PIL import Image, ImageOps

from common.digit_image import (
    BOX, CANVAS, MEAN, MIN_STROKE, STD, DigitPreprocessor, ImageError, decode, normalize, preprocess, preprocess_spec,
    _median_and_mad_u8, _median_u8, strokes, to_mnist,
)
from bench.digit_renderings import KINDS, render_like_user

from tests.conftest import SHARED_DATA

MNIST_DIR = SHARED_DATA / "mnist"
CENTRE = CANVAS // 2  # MNIST puts the centre of mass on pixel (14, 14)


# ---------------------------------------------------------------------------------------------
# helpers


def seven() -> np.ndarray:
    """A hand-drawn-looking "7", white on black, 28x28, roughly where MNIST would put it."""
    img = np.zeros((28, 28), np.uint8)
    cv2.line(img, (8, 7), (20, 7), 255, 2, cv2.LINE_AA)
    cv2.line(img, (20, 7), (12, 22), 255, 2, cv2.LINE_AA)
    cv2.line(img, (11, 14), (19, 14), 255, 1, cv2.LINE_AA)  # the continental bar
    return img


def one() -> np.ndarray:
    """A slanted "1": tall and thin, so fitting the box must keep the aspect ratio."""
    img = np.zeros((28, 28), np.uint8)
    cv2.line(img, (15, 5), (12, 23), 255, 2, cv2.LINE_AA)
    return img


def encode(image: np.ndarray, ext: str = ".png") -> bytes:
    ok, buf = cv2.imencode(ext, image)
    assert ok
    return buf.tobytes()


def png_bomb(width: int, height: int) -> bytes:
    """A valid, all-black 1-bit PNG: about 1 KB per 10 megapixels once deflated."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + body))
        return struct.pack(">I", len(body)) + kind + body + crc

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1 bit, grayscale
    deflate = zlib.compressobj(9)
    row = bytes(1 + (width + 7) // 8)  # filter byte + packed pixels
    idat = b"".join(deflate.compress(row) for _ in range(height)) + deflate.flush()
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def centre_of_mass(img: np.ndarray) -> tuple[float, float]:
    m = cv2.moments(img)
    return m["m10"] / m["m00"], m["m01"] / m["m00"]


def assert_mnist_like(img: np.ndarray) -> None:
    """28x28 uint8, white digit on black, centred by mass, fitting the 20x20 box."""
    assert img.shape == (CANVAS, CANVAS) and img.dtype == np.uint8
    assert img.max() == 255
    border = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]])
    assert border.max() == 0, "background should be black"
    cx, cy = centre_of_mass(img)
    assert abs(cx - CENTRE) <= 1 and abs(cy - CENTRE) <= 1, (cx, cy)
    _, _, w, h = cv2.boundingRect(img)
    assert w <= BOX and h <= BOX and max(w, h) >= BOX - 1, (w, h)


def mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.astype(np.float64).ravel(), b.astype(np.float64).ravel())[0, 1])


def on_page(digit: np.ndarray, side: int, digit_side: int, at: tuple[int, int] | None = None) -> np.ndarray:
    """Ink coverage 0..1 of a side x side page with ``digit`` (white on black) enlarged to digit_side."""
    coverage = np.zeros((side, side), np.float32)
    y, x = at or ((side - digit_side) // 2,) * 2
    coverage[y:y + digit_side, x:x + digit_side] = cv2.resize(digit, (digit_side, digit_side)) / 255.0
    return coverage


def uneven_light(side: int, shadow_depth: float) -> np.ndarray:
    """A lamp's fall-off from left to right (-35%) and a soft-edged shadow over the lower right."""
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32) / side
    shadow = cv2.GaussianBlur(((xx + 0.6 * yy) > 0.75).astype(np.float32), (0, 0), side / 60)
    return (1 - 0.35 * xx) * (1 - shadow_depth * shadow)


def photograph(coverage: np.ndarray, paper, ink, light: np.ndarray | float = 1.0, noise: float = 4) -> np.ndarray:
    """uint8 photo of the page: paper and ink levels (or BGR colours), times the light, plus noise."""
    if np.ndim(paper):
        coverage, light = coverage[..., None], np.asarray(light)[..., None] if np.ndim(light) else light
    pixels = (np.float32(paper) * (1 - coverage) + np.float32(ink) * coverage) * light
    pixels += np.random.default_rng(0).normal(0, noise, pixels.shape)
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# normalize


def test_normalize_single_and_batch():
    black = normalize(np.zeros((28, 28), np.uint8))
    assert black.shape == (1, 1, 28, 28) and black.dtype == np.float32
    np.testing.assert_allclose(black, -MEAN / STD, rtol=1e-6)
    batch = normalize(np.full((5, 28, 28), 255, np.uint8))
    assert batch.shape == (5, 1, 28, 28) and batch.dtype == np.float32
    np.testing.assert_allclose(batch, (1 - MEAN) / STD, rtol=1e-6)


@pytest.mark.parametrize("bad", [
    np.zeros((28, 28), np.float32),  # ambiguous scale: refuse rather than guess
    np.zeros((32, 32), np.uint8),
    np.zeros((2, 1, 28, 28), np.uint8),
])
def test_normalize_refuses_other_dtypes_and_shapes(bad):
    with pytest.raises(ValueError):
        normalize(bad)


# ---------------------------------------------------------------------------------------------
# decode


def noisy_png() -> bytes:
    return encode(np.random.default_rng(0).integers(0, 256, (200, 200), dtype=np.uint8))


@pytest.mark.parametrize("data", [
    b"",
    np.random.default_rng(1).bytes(1000),
    b"GIF89a" + bytes(100),  # a real format, but not one we accept
    noisy_png()[: len(noisy_png()) // 2],  # truncated PNG
    encode(np.random.default_rng(2).integers(0, 256, (200, 200), dtype=np.uint8), ".jpg")[:5000],
], ids=["empty", "random", "gif", "truncated-png", "truncated-jpeg"])
def test_decode_refuses_bad_data(data):
    with pytest.raises(ImageError, match="empty|could not decode"):
        decode(data)


@pytest.mark.parametrize("side, mentions", [
    (7_000, "7000x7000 = 49000000 pixels; the limit is 25000000"),
    (30_000, "900000000 pixels"),  # so large that Pillow's own limit answers first
])
def test_decode_refuses_image_bombs_before_decoding(side, mentions):
    bomb = png_bomb(side, side)
    assert len(bomb) < 200_000
    start = time.perf_counter()
    with pytest.raises(ImageError, match="too large|pixels") as info:
        decode(bomb)
    assert time.perf_counter() - start < 0.5, "the pixels must not have been decoded"
    assert mentions in str(info.value)


def test_decode_refuses_png_whose_chunk_claims_gigabytes():
    # OpenCV 5 would allocate the claimed 3 GB before giving up; the header check must catch it.
    data = bytearray(encode(seven()))
    assert data[37:41] == b"IDAT"
    struct.pack_into(">I", data, 33, 0xC0000000)
    start = time.perf_counter()
    with pytest.raises(ImageError, match="could not decode"):
        decode(bytes(data))
    assert time.perf_counter() - start < 0.5


def test_decode_honours_max_pixels():
    data = encode(np.zeros((20, 30), np.uint8))
    assert decode(data).shape == (20, 30)
    with pytest.raises(ImageError, match="30x20 = 600 pixels; the limit is 599"):
        decode(data, max_pixels=599)


def test_decode_scales_16_bit_to_8_bit():
    deep = np.array([[0, 257, 65535]], np.uint16)
    out = decode(encode(deep))
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, [[0, 1, 255]])


def test_decode_composites_transparency_onto_white():
    # A canvas drawing: transparent black everywhere, opaque black strokes.
    bgra = np.zeros((60, 60, 4), np.uint8)
    cv2.line(bgra, (30, 10), (30, 50), (0, 0, 0, 255), 4)
    out = decode(encode(bgra))
    assert out.shape == (60, 60, 3) and out[0, 0].tolist() == [255, 255, 255]
    assert out[30, 30].tolist() == [0, 0, 0]
    assert_mnist_like(to_mnist(out))


def test_decode_reduces_big_jpegs_keeping_colour_and_orientation():
    photo = np.full((1500, 2000, 3), (40, 90, 200), np.uint8)  # BGR: an orange page
    photo[:, :100] = (255, 0, 0)  # and a blue band on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: turn 90 degrees clockwise
    buf = io.BytesIO()
    Image.fromarray(photo[:, :, ::-1]).save(buf, "JPEG", exif=exif.tobytes(), quality=95)
    full = decode(buf.getvalue())
    assert full.shape == (2000, 1500, 3)
    reduced = decode(buf.getvalue(), min_side=300)  # 1500 // 4 = 375 >= 300; 1500 // 8 < 300
    assert reduced.shape == (500, 375, 3)
    assert mean_abs_diff(reduced, cv2.resize(full, (375, 500), interpolation=cv2.INTER_AREA)) < 3
    assert reduced[:20].mean(axis=(0, 1)).round().tolist() == pytest.approx([255, 0, 0], abs=6)  # band now on top
    gray = cv2.imencode(".jpg", np.full((1600, 1600), 128, np.uint8))[1].tobytes()
    assert decode(gray, min_side=384).shape == (400, 400)
    assert DigitPreprocessor().decode(gray).shape == (400, 400)  # the chain's default: min_side 384


def test_decode_refuses_a_format_left_out():
    with pytest.raises(ImageError, match="could not decode"):
        decode(encode(seven()), formats=("JPEG",))


def test_decode_composites_gray_with_alpha_onto_white():
    png = io.BytesIO()
    la = np.zeros((20, 20, 2), np.uint8)
    la[5:15, 9:11] = (0, 255)  # an opaque black bar on transparent black
    Image.fromarray(la, "LA").save(png, "PNG")
    out = decode(png.getvalue())
    assert out.shape[:2] == (20, 20)  # OpenCV reads LA as BGRA: BGR once composited
    assert np.all(out[0, 0] == 255) and np.all(out[10, 10] == 0)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_decode_applies_exif_orientation_like_pillow(orientation):
    # Phones store photos sideways and say how to turn them in EXIF tag 0x0112.
    stored = np.zeros((40, 80, 3), np.uint8)
    stored[:10, :20] = 255  # a bright corner patch: every flip and turn moves it elsewhere
    stored[:, 70:, 2] = 200
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    Image.fromarray(stored).save(buf, "JPEG", exif=exif.tobytes(), quality=95)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(buf)))[:, :, ::-1]  # RGB -> BGR
    out = decode(buf.getvalue())
    assert out.shape == expected.shape
    assert mean_abs_diff(out, expected) < 2


# ---------------------------------------------------------------------------------------------
# to_mnist


@pytest.mark.parametrize("draw", [seven, one])
@pytest.mark.parametrize("kind", KINDS)
def test_to_mnist_recovers_each_rendering(kind, draw):
    reference = to_mnist(draw())
    out = to_mnist(decode(render_like_user(draw(), np.random.default_rng(3), kind)))
    assert_mnist_like(out)
    # Resampling blurs a little; a one-pixel shift of the same digit already differs by ~30.
    assert mean_abs_diff(out, reference) < 15, kind


@pytest.mark.parametrize("kind", KINDS)
def test_to_mnist_ignores_polarity(kind):
    image = decode(render_like_user(seven(), np.random.default_rng(4), kind))
    assert mean_abs_diff(to_mnist(image), to_mnist(255 - image)) < 1


def test_to_mnist_is_idempotent():
    once = to_mnist(seven())
    assert_mnist_like(once)
    np.testing.assert_array_equal(to_mnist(once), once)  # fitted and centred: left alone


def test_to_mnist_drops_dust_far_from_the_digit():
    page = np.full((200, 200), 240, np.uint8)
    page[50:162, 40:152] = 255 - cv2.resize(seven(), (112, 112))
    dusty = page.copy()
    dusty[5, 190] = dusty[190, 8] = dusty[100, 195] = 30  # specks that would stretch the crop
    assert mean_abs_diff(to_mnist(dusty), to_mnist(page)) < 1


@pytest.mark.parametrize("blank", [
    np.full((50, 50), 255, np.uint8),
    np.zeros((50, 50, 3), np.uint8),
    np.clip(np.random.default_rng(5).normal(200, 6, (300, 300)), 0, 255).astype(np.uint8),
    np.zeros((30, 30, 4), np.uint8),  # fully transparent canvas
], ids=["white", "black", "noisy-paper", "transparent"])
def test_to_mnist_refuses_blank_images(blank):
    with pytest.raises(ImageError, match="no visible digit"):
        to_mnist(blank)


@pytest.mark.parametrize("draw", [seven, one])
@pytest.mark.parametrize("depth", [0.55, 0.7])
def test_to_mnist_removes_shadows_and_uneven_light(draw, depth):
    # The shadow darkens paper more than the ink stands out: one global background made the
    # shadow "ink" (no digit found, or a crop of the shadow's edge).
    page = on_page(draw(), 600, 360)
    photo = photograph(page, 235, 45, uneven_light(600, depth))
    out = to_mnist(photo)
    assert_mnist_like(out)
    assert correlation(out, to_mnist(draw())) > 0.85


def test_to_mnist_reads_chalk_on_an_unevenly_lit_board():
    photo = photograph(on_page(seven(), 600, 360), 50, 230, uneven_light(600, 0.55))  # light ink
    assert correlation(to_mnist(photo), to_mnist(seven())) > 0.85


@pytest.mark.parametrize("paper, ink", [
    ((200, 190, 250), (40, 40, 210)),  # red on pink (BGR): darker, the luma suffices
    ((60, 150, 60), (40, 40, 230)),  # red on green, equally bright: only the colour differs
], ids=["red-on-pink", "red-on-green"])
def test_to_mnist_finds_coloured_ink_on_coloured_paper(paper, ink):
    photo = photograph(on_page(seven(), 300, 180), paper, ink, noise=3)
    assert correlation(to_mnist(photo), to_mnist(seven())) > 0.9


def test_to_mnist_finds_a_small_digit_on_a_big_page():
    photo = photograph(on_page(one(), 1000, 80, at=(700, 150)), 225, 45, noise=5)
    out = to_mnist(photo)
    assert_mnist_like(out)
    assert correlation(out, to_mnist(one())) > 0.9


def pencil_seven(side: int = 400, line: int = 3) -> np.ndarray:
    """A "7" drawn with a fine pencil on white paper: strokes ``line`` px wide on a ``side`` px page."""
    page = np.full((side, side), 240, np.uint8)
    s = side / 28
    for a, b in (((8, 7), (20, 7)), ((20, 7), (12, 22)), ((11, 14), (19, 14))):
        cv2.line(page, (round(a[0] * s), round(a[1] * s)), (round(b[0] * s), round(b[1] * s)), 110, line, cv2.LINE_AA)
    return page


def width_in_box(out: np.ndarray) -> float:
    x, y, w, h = cv2.boundingRect(out)
    return strokes(cv2.resize(out[y:y + h, x:x + w], (6 * w, 6 * h), interpolation=cv2.INTER_LINEAR))[0]


def test_to_mnist_thickens_pencil_lines_to_mnist_strokes():
    # A 3 px line on a 400 px page is 1/80 of the digit: at 20x20 a broken one-pixel trace.
    thin = to_mnist(pencil_seven(), min_stroke=0)
    thick = to_mnist(pencil_seven())
    assert_mnist_like(thick)
    assert width_in_box(thin) < MIN_STROKE <= width_in_box(thick)
    assert correlation(thick, to_mnist(seven())) > correlation(thin, to_mnist(seven())) + 0.05


def test_strokes_measures_width_and_length():
    bar = np.zeros((100, 100), np.uint8)
    bar[:, 45:55] = 255  # a vertical stroke 10 px wide, the digit's full height
    width, length = strokes(bar)
    assert width == pytest.approx(0.10, abs=0.015) and length == pytest.approx(1.0, abs=0.15)


def test_to_mnist_refuses_marks_too_small_to_survive_shrinking():
    page = np.zeros((2000, 2000), np.uint8)
    page[:3, :3] = page[-3:, -3:] = 255  # two dots 2000 px apart: the crop shrinks 100x
    # (thin marks, but not strokes: they must not be thickened into something visible)
    with pytest.raises(ImageError, match="no visible digit"):
        to_mnist(page)


def test_to_mnist_refuses_arrays_that_are_not_images():
    with pytest.raises(ImageError):
        to_mnist(np.zeros((0, 0), np.uint8))
    with pytest.raises(ImageError):
        to_mnist(np.zeros((28, 28), np.float64))


# ---------------------------------------------------------------------------------------------
# preprocess and its description


def test_preprocess_bytes_and_arrays():
    data = render_like_user(seven(), np.random.default_rng(6), "jpeg")
    from_bytes = preprocess(data)
    assert from_bytes.shape == (1, 1, 28, 28) and from_bytes.dtype == np.float32
    np.testing.assert_array_equal(from_bytes, normalize(to_mnist(decode(data))))
    np.testing.assert_array_equal(preprocess(decode(data)), from_bytes)
    with pytest.raises(ImageError, match="the limit is 100"):
        preprocess(data, max_pixels=100)


def test_preprocess_spec_is_plain_yaml_with_the_real_parameters():
    spec = preprocess_spec()
    text = yaml.safe_dump({"PreProcess": spec})
    assert yaml.safe_load(text)["PreProcess"] == spec
    ops = {name: args for op in spec["transform_ops"] for name, args in op.items()}
    assert ops["Normalize"] == {"scale": 1 / 255, "mean": MEAN, "std": STD}
    assert ops["FitBox"]["box"] == BOX and ops["CenterOfMass"]["canvas"] == CANVAS
    assert set(ops["DecodeImage"]) == {"formats", "max_pixels", "min_side"}
    assert set(ops["ExtractInk"]) == {"noise_sigmas", "min_contrast", "speck_fraction", "background_window"}
    assert DigitPreprocessor.from_spec(yaml.safe_load(text)["PreProcess"]) == DigitPreprocessor()
    assert ops["FitBox"]["min_stroke"] == MIN_STROKE
    other = DigitPreprocessor(min_side=200, background_window=0.4, noise_sigmas=3.0)
    assert DigitPreprocessor.from_spec(yaml.safe_load(yaml.safe_dump(other.spec()))) == other


def test_bundles_exported_before_stroke_thickening_are_served_as_they_were():
    spec = preprocess_spec()
    ops = {name: args for op in spec["transform_ops"] for name, args in op.items()}
    del ops["FitBox"]["min_stroke"]  # what export wrote before min_stroke existed
    old = DigitPreprocessor.from_spec(spec)
    assert old.min_stroke == 0
    np.testing.assert_array_equal(old.to_mnist(pencil_seven()), to_mnist(pencil_seven(), min_stroke=0))


def test_preprocessor_follows_the_spec_and_refuses_what_it_does_not_implement():
    spec = preprocess_spec()
    ops = {name: args for op in spec["transform_ops"] for name, args in op.items()}
    ops["Normalize"].update(mean=0.5, std=0.25)
    pre = DigitPreprocessor.from_spec(spec)
    np.testing.assert_array_equal(pre(seven()), (to_mnist(seven())[None, None].astype(np.float32) / 255 - 0.5) / 0.25)
    unknown = {**spec, "transform_ops": spec["transform_ops"][:-1] + [{"ResizeShort": {"size": 32}}]}
    with pytest.raises(ValueError, match="not implemented by this server"):
        DigitPreprocessor.from_spec(unknown)
    ops["FitBox"]["interpolation"] = "cubic"
    with pytest.raises(ValueError, match="FitBox takes exactly the parameters"):
        DigitPreprocessor.from_spec(spec)
    del ops["FitBox"]["interpolation"]
    ops["ExtractInk"]["background_window"] = 2.0
    with pytest.raises(ValueError, match="background_window"):
        DigitPreprocessor.from_spec(spec)
    ops["ExtractInk"]["background_window"] = 0.25
    ops["FitBox"]["min_stroke"] = 0.7
    with pytest.raises(ValueError, match="min_stroke"):
        DigitPreprocessor.from_spec(spec)


# ---------------------------------------------------------------------------------------------
# genuine MNIST


def mnist_test_images(count: int) -> np.ndarray:
    """The first ``count`` MNIST test images as uint8 (count, 28, 28), or skip/fail if absent."""
    images = MNIST_DIR / "t10k-images-idx3-ubyte.gz"
    labels = MNIST_DIR / "t10k-labels-idx1-ubyte.gz"
    if not (images.exists() and labels.exists()):
        if os.environ.get("CI") == "true":
            pytest.fail(f"MNIST test files missing: expected {images} and {labels}")
        pytest.skip(f"MNIST test files not found in {MNIST_DIR}")
    from paddle.vision.datasets import MNIST  # slow import: only when the data are there

    data = MNIST(image_path=str(images), label_path=str(labels), mode="test", download=False,
                 backend="cv2")
    return np.stack([data[i][0] for i in range(count)]).astype(np.uint8)


def test_to_mnist_leaves_genuine_mnist_samples_nearly_unchanged():
    originals = mnist_test_images(300)
    diffs, shifts = [], []
    for original in originals:
        out = to_mnist(original)
        diffs.append(mean_abs_diff(out, original))
        shifts.append(np.subtract(centre_of_mass(out), centre_of_mass(original)))
    diffs, shifts = np.array(diffs), np.abs(np.array(shifts))
    assert np.median(diffs) == 0  # MNIST is already what to_mnist makes: most are untouched
    assert diffs.max() < 2, f"worst sample {int(diffs.argmax())} differs by {diffs.max():.2f}"
    assert shifts.max() < 1, "centres of mass must stay put"
    x = normalize(originals)
    assert abs(float(x.mean())) < 0.1 and abs(float(x.std()) - 1) < 0.1


@pytest.mark.parametrize("seed", range(5))
def test_median_and_mad_from_one_histogram_match_two_passes(seed):
    rng = np.random.default_rng(seed)
    paper = int(rng.integers(0, 256))
    # paper with noise, some ink, values clipped at both ends: odd and even sizes
    values = np.clip(rng.normal(paper, rng.uniform(0, 20), 999 + seed), 0, 255).astype(np.uint8)
    values[: 100 * seed] = rng.integers(0, 256, 100 * seed)
    median = _median_u8(values)
    assert _median_and_mad_u8(values) == (median, _median_u8(cv2.absdiff(values, median)))
    assert _median_and_mad_u8(np.full(50, 7, np.uint8)) == (7, 0)


def test_normalize_table_gives_the_arithmetic_float32_values():
    levels = np.arange(256, dtype=np.uint8).reshape(1, 16, 16)
    gray = np.tile(levels, (1, 2, 2))[:, :28, :28].copy()
    x = gray.reshape(-1, 1, 28, 28).astype(np.float32)
    expected = (x / np.float32(255) - np.float32(0.1307)) / np.float32(0.3081)
    out = normalize(gray)
    assert out.dtype == np.float32 and out.shape == (1, 1, 28, 28)
    assert np.array_equal(out, expected)
    scaled = normalize(gray, 0.5, 0.25, scale=1 / 256)
    assert np.array_equal(scaled, (x * np.float32(1 / 256) - np.float32(0.5)) / np.float32(0.25))
    out[0, 0, 0, 0] = 99.0  # the answer is the caller's to change, not the shared table
    assert normalize(gray)[0, 0, 0, 0] == expected[0, 0, 0, 0]
