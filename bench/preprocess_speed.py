"""Speed of the digit preprocessing (common/digit_image.py) on typical uploads, stage by stage.

    nice python -m bench.preprocess_speed [--repeats 300] [--baseline REV] [--allow-busy]

Inputs, made here: a 200x200 PNG drawing (an MNIST test digit enlarged, dark on white, or
synthetic strokes when the MNIST files are absent), the same drawing as a browser canvas exports
it (RGBA on transparency), and phone-like JPEGs of 1 and 3 megapixels (the digit on shaded,
noisy paper). For each: median and p90 of decode, ink extraction (gray + ink), crop + fit + centre,
normalize, and the whole ``DigitPreprocessor()(bytes)`` call, after warm-up. With ``--baseline``
the whole call of that git revision's digit_image.py is timed too, interleaved with the current
one so that other work on the machine slows both alike. Refuses to write when the 1-minute load
average at the start is above 0.5, unless --allow-busy. Writes the ``preprocess_speed`` section
of docs/BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from bench.harness import ROOT, LoadWatch, add_write_flags, interleaved, median_p90_ms, timed
from bench.report import publish
from common import digit_image
from common.datasets import read_mnist


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.preprocess_speed", description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=300, help="timed calls per input (default: %(default)s)")
    p.add_argument("--baseline", help="git revision whose digit_image.py is timed alongside (whole call only)")
    add_write_flags(p)
    return p.parse_args(argv)


# ---- inputs ---------------------------------------------------------------------------------


def digit28() -> np.ndarray:
    """The first MNIST test digit (a 7, white on black), from Paddle's dataset cache."""
    return read_mnist("test", limit=1)[0][0]


def photo(digit: np.ndarray, width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """BGR phone photo: dark ink on off-white paper, lit unevenly, sensor noise."""
    side = int(min(width, height) * 0.6)
    alpha = np.zeros((height, width), np.float32)
    y, x = (height - side) // 2, (width - side) // 2
    alpha[y:y + side, x:x + side] = cv2.resize(digit, (side, side), interpolation=cv2.INTER_LINEAR) / 255.0
    light = np.linspace(1.0, 0.7, width, dtype=np.float32)[None, :]  # a lamp's fall-off
    paper, ink = np.float32([205, 220, 230]), np.float32([60, 45, 40])
    bgr = (paper * (1 - alpha[..., None]) + ink * alpha[..., None]) * light[..., None]
    bgr += rng.normal(0, 3, bgr.shape).astype(np.float32)
    return np.clip(bgr, 0, 255).astype(np.uint8)


def inputs() -> dict[str, bytes]:
    """name -> encoded file, the uploads timed."""
    digit, rng = digit28(), np.random.default_rng(0)
    drawing = 255 - cv2.resize(digit, (200, 200), interpolation=cv2.INTER_LINEAR)
    canvas = np.zeros((200, 200, 4), np.uint8)
    canvas[:, :, 3] = 255 - drawing  # black strokes on transparency
    encode = lambda ext, image, *params: cv2.imencode(ext, image, list(params))[1].tobytes()  # noqa: E731
    return {
        "drawing 200x200 PNG (gray)": encode(".png", drawing),
        "canvas 200x200 PNG (RGBA)": encode(".png", canvas),
        "photo 1 MP JPEG (1152x864)": encode(".jpg", photo(digit, 1152, 864, rng), cv2.IMWRITE_JPEG_QUALITY, 90),
        "photo 3 MP JPEG (2048x1536)": encode(".jpg", photo(digit, 2048, 1536, rng), cv2.IMWRITE_JPEG_QUALITY, 90),
    }


# ---- timing ---------------------------------------------------------------------------------


def stages(pre: digit_image.DigitPreprocessor, data: bytes) -> list[float]:
    """Seconds in decode, gray + ink, crop + fit + centre, normalize for one call (to_mnist's steps)."""
    t0 = time.perf_counter()
    image = pre.decode(data)
    t1 = time.perf_counter()
    ink, noiseless = digit_image._ink(digit_image._to_gray(image), pre.noise_sigmas, pre.min_contrast,
                                      pre.speck_fraction, pre.background_window)
    t2 = time.perf_counter()
    digit = digit_image._fit_box(digit_image._crop_digit(ink, pre.speck_fraction, noiseless), pre.box)
    gray = digit_image._center_of_mass(cv2.convertScaleAbs(digit, alpha=255.0 / digit.max()), pre.canvas)
    t3 = time.perf_counter()
    pre.normalize(gray)
    t4 = time.perf_counter()
    return [t1 - t0, t2 - t1, t3 - t2, t4 - t3]


def load_baseline(revision: str):
    """The ``DigitPreprocessor`` class of ``revision``'s common/digit_image.py, imported from a temp file."""
    source = subprocess.run(["git", "show", f"{revision}:common/digit_image.py"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp(prefix="preprocess-baseline-")) / "baseline_digit_image.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("baseline_digit_image", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module.DigitPreprocessor()


def measure(repeats: int, baseline=None) -> list[dict]:
    """Per input: the stages and the whole call, and the baseline's whole call, interleaved."""
    pre, rows = digit_image.DigitPreprocessor(), []
    for name, data in inputs().items():
        calls = {"parts": lambda: stages(pre, data), "total": timed(lambda: pre(data))}
        if baseline is not None:
            calls["baseline"] = timed(lambda: baseline(data))
        seconds = interleaved(calls, repeats, warmup=max(5, repeats // 20))  # warm-up: first calls allocate
        row = {"input": name, "bytes": len(data), **{k: np.array(v) for k, v in seconds.items()}}
        rows.append(row)
        print(f"[preprocess_speed] {name}: median {np.median(row['total']) * 1e3:.3f} ms", flush=True)
    return rows


def table(rows: list[dict], baseline: str | None) -> str:
    cell = lambda seconds: "{:.3f} / {:.3f}".format(*median_p90_ms(seconds))  # noqa: E731
    head = ["input", "size", "decode", "gray + ink", "crop + fit + centre", "normalize", "**total**"]
    if baseline:
        head += [f"total at {baseline}", "speed-up (medians)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [row["input"], f"{row['bytes'] / 1000:.1f} KB"] + [cell(row["parts"][:, i]) for i in range(4)]
        cells.append(f"**{cell(row['total'])}**")
        if baseline:
            cells += [cell(row["baseline"]), f"{np.median(row['baseline']) / np.median(row['total']):.1f}x"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    args = parse_args(argv)
    watch = LoadWatch()
    cv2.setNumThreads(1)  # as a server worker runs it: one request per thread
    baseline = load_baseline(args.baseline) if args.baseline else None
    rows = measure(args.repeats, baseline)
    body = (table(rows, args.baseline) + "\n\n" + f"Milliseconds, median / p90 of {args.repeats} calls per input, "
            f"OpenCV {cv2.__version__} with 1 thread. Stages add up to about the total (timer overhead aside). "
            + watch.note())
    command = "nice python -m bench.preprocess_speed " + " ".join(argv if argv is not None else sys.argv[1:])
    publish("preprocess_speed", "Digit preprocessing: time per upload, by stage", body, command.strip(), watch,
            args.allow_busy, write=not args.no_write)


if __name__ == "__main__":
    main()
