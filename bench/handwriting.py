"""Accuracy on digits as people really write them, through the server's preprocessing.

    nice python -m bench.handwriting --bundle bundles/mnist [--limit N] [--kinds rotated thin ...]

Renders each of the 10,000 official MNIST test digits in every kind of ``HANDWRITING_KINDS``
(bench/digit_renderings.py: rotated, felt-tip, pencil, out of focus, small on a page, a photo under
uneven light, coloured ink, heavy JPEG), turns each image into the model's input exactly as
``POST /predict/digit`` does (the server's ``DigitPipeline``, built from the bundle's PreProcess),
runs the inputs through the bundle with Paddle Inference in batches and reports the accuracy per
kind, over all kinds, and on the plain test digits, with the median preprocessing time per image.
An image the preprocessing refuses (``ImageError``) counts as wrong.

A full run (no --limit, every kind) writes the ``handwriting`` section of docs/BENCHMARKS.md and a
contact sheet, docs/handwriting_kinds.png; it refuses to write when the load average at the start
is above 0.5 (it times the preprocessing), unless --allow-busy. Partial runs only print.
"""
from __future__ import annotations

import argparse
import sys
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from bench.digit_renderings import HANDWRITING_KINDS, render_handwriting
from bench.harness import ROOT, SHARED_DATA, Check, LoadWatch, add_write_flags, stopwatch, verdict_table
from bench.report import publish

SEED = 0  # with the kind's name and the digit's index, fixes every rendering (see digit_rng)
BATCH = 256  # images per predictor call
TARGET_KIND, TARGET_ALL = 0.97, 0.985  # the targets: each kind, and all kinds together
SHEET = ROOT / "docs" / "handwriting_kinds.png"
SHEET_EXAMPLES, SHEET_FAILURES = 4, 4  # per kind: the first digits, then the first it got wrong
THUMB = 56  # px per picture on the sheet


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.handwriting", description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", required=True, help="exported digit bundle (python -m export)")
    p.add_argument("--data-dir", default=str(SHARED_DATA), help="folder with mnist/ (default ../shared/data)")
    p.add_argument("--limit", type=int, help="only the first N test digits (prints, writes nothing)")
    p.add_argument("--kinds", nargs="+", choices=HANDWRITING_KINDS, default=list(HANDWRITING_KINDS),
                   help="kinds to render (default: all; a subset prints, writes nothing)")
    p.add_argument("--sheet", help=f"also write the contact sheet here (a full run writes {SHEET.relative_to(ROOT)})")
    add_write_flags(p)
    return p.parse_args(argv)


def digit_rng(kind: str, index: int) -> np.random.Generator:
    """The generator for test digit ``index`` rendered as ``kind``: the same image whatever subset is run."""
    return np.random.default_rng([SEED, zlib.crc32(kind.encode()), index])


@dataclass
class KindResult:
    """One kind's figures, and what the model saw (for the contact sheet and for debugging)."""

    kind: str
    labels: np.ndarray  # (N,) int64
    predicted: np.ndarray  # (N,) int64; -1 where the preprocessing refused the image
    seen: np.ndarray  # (N, 28, 28) uint8: the preprocessed digit, zeros where refused
    refused: int  # images the preprocessing raised ImageError on
    preprocess_ms: float  # median per image: decode + to_mnist + normalize, as the server does
    examples: list  # the first few rendered images, decoded (for the sheet)

    @property
    def accuracy(self) -> float:
        return float(np.mean(self.predicted == self.labels))


class DigitModel:
    """A digit bundle as the server runs it: its DigitPipeline and a Paddle Inference predictor."""

    def __init__(self, bundle: str | Path):
        from common.bundle import read_bundle
        from common.runtimes import PredictorRunner, create_predictor
        from serve.config import DEFAULTS
        from serve.pipelines import DigitPipeline

        loaded = read_bundle(bundle)
        self.pipeline = DigitPipeline(loaded)
        self.max_pixels = DEFAULTS["MAX_PIXELS"]
        self.runner = PredictorRunner(create_predictor(loaded, threads=DEFAULTS["THREADS"],
                                                       mkldnn=DEFAULTS["MKLDNN"], ir_optim=DEFAULTS["IR_OPTIM"]))

    def classify(self, inputs: np.ndarray) -> np.ndarray:
        """float32 (N, 1, 28, 28) model inputs -> (N,) predicted class indices, BATCH at a time."""
        out = [self.runner.run(np.ascontiguousarray(inputs[i:i + BATCH]))[0].argmax(1)
               for i in range(0, len(inputs), BATCH)]
        return np.concatenate(out) if out else np.zeros(0, np.int64)


def evaluate_kind(model: DigitModel, kind: str, images: np.ndarray, labels: np.ndarray,
                  keep_examples: int = SHEET_EXAMPLES) -> KindResult:
    """Render every digit as ``kind``, preprocess it as the server does, classify; figures for the kind."""
    from common.digit_image import ImageError

    seen = np.zeros((len(images), 28, 28), np.uint8)
    inputs = np.zeros((len(images), 1, 28, 28), np.float32)
    ok = np.ones(len(images), bool)
    times, examples = [], []
    for i, digit in enumerate(images):
        data = render_handwriting(digit, digit_rng(kind, i), kind)
        if i < keep_examples:
            examples.append(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR))
        try:
            with stopwatch(times):
                pipeline = model.pipeline
                gray, x = pipeline.model_input(pipeline.decode(data, model.max_pixels, pipeline.header(data)))
        except ImageError:
            ok[i] = False
            continue
        seen[i], inputs[i] = gray, x[0]
    predicted = np.full(len(images), -1, np.int64)
    predicted[ok] = model.classify(inputs[ok])
    return KindResult(kind, labels, predicted, seen, int((~ok).sum()), float(np.median(times) * 1e3), examples)


def clean_accuracy(model: DigitModel, images: np.ndarray, labels: np.ndarray) -> float:
    """Accuracy on the test digits as they are: 28x28, only normalised (what training measures)."""
    return float(np.mean(model.classify(model.pipeline.preprocessor.normalize(images)) == labels))


def table(results: list[KindResult], clean: float) -> str:
    lines = ["| kind | digits | accuracy | refused by preprocessing | preprocessing median (ms/image) |",
             "|---|---:|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r.kind} | {len(r.labels)} | {r.accuracy:.2%} | {r.refused} | {r.preprocess_ms:.2f} |")
    lines.append(f"| all kinds together | {sum(len(r.labels) for r in results)} | {pooled_accuracy(results):.2%} | "
                 f"{sum(r.refused for r in results)} | |")
    lines.append(f"| plain test digits (28x28, normalised only) | {len(results[0].labels) if results else 0} | "
                 f"{clean:.2%} | | |")
    return "\n".join(lines)


def checks(results: list[KindResult]) -> list[Check]:
    """Each kind against ``TARGET_KIND``, all kinds together against ``TARGET_ALL``."""
    return ([Check(f"accuracy, {r.kind}", r.accuracy, TARGET_KIND, fmt="{:.2%}") for r in results]
            + [Check("accuracy, all kinds together", pooled_accuracy(results), TARGET_ALL, fmt="{:.2%}")])


def pooled_accuracy(results: list[KindResult]) -> float:
    return float(np.mean(np.concatenate([r.predicted == r.labels for r in results])))


def contact_sheet(results: list[KindResult], path: str | Path) -> None:
    """A PNG, one row per kind: the first few renderings beside the 28x28 the model saw, then the
    first failures (28x28 seen; the red number is what the model answered, - if refused)."""
    def thumb(image):
        image = image if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        h, w = image.shape[:2]
        side = max(h, w)  # letterbox onto white, keeping the aspect ratio
        square = np.full((side, side, 3), 255, np.uint8)
        square[(side - h) // 2:(side - h) // 2 + h, (side - w) // 2:(side - w) // 2 + w] = image
        return cv2.resize(square, (THUMB, THUMB), interpolation=cv2.INTER_AREA)

    def seen(gray, answer=None):
        tile = cv2.cvtColor(cv2.resize(gray, (THUMB, THUMB), interpolation=cv2.INTER_NEAREST), cv2.COLOR_GRAY2BGR)
        if answer is not None:
            cv2.putText(tile, answer, (2, THUMB - 4), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 255), 1, cv2.LINE_AA)
        return tile

    rows = []
    for r in results:
        name = np.full((THUMB, 2 * THUMB, 3), 255, np.uint8)
        cv2.putText(name, r.kind, (4, THUMB // 2 + 5), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
        tiles = [name]
        for image, gray in zip(r.examples, r.seen):
            tiles += [thumb(image), seen(gray)]
        wrong = np.flatnonzero(r.predicted != r.labels)[:SHEET_FAILURES]
        gap = np.full((THUMB, THUMB // 2, 3), 255, np.uint8)
        tiles.append(gap)
        for i in wrong:
            tiles.append(seen(r.seen[i], "-" if r.predicted[i] < 0 else str(r.predicted[i])))
        blank = np.full((THUMB, THUMB, 3), 255, np.uint8)
        tiles += [blank] * (SHEET_FAILURES - len(wrong))
        rows.append(np.hstack(tiles))
    width = max(row.shape[1] for row in rows)
    rows = [np.pad(row, ((0, 2), (0, width - row.shape[1]), (0, 0)), constant_values=255) for row in rows]
    cv2.imwrite(str(path), np.vstack(rows), [cv2.IMWRITE_PNG_COMPRESSION, 9])


def main(argv=None) -> int:
    args = parse_args(argv)
    from common.datasets import read_mnist

    watch = LoadWatch()
    images, labels = read_mnist("test", args.data_dir, limit=args.limit)
    model = DigitModel(args.bundle)
    clean = clean_accuracy(model, images, labels)
    results = []
    for kind in args.kinds:
        started = time.perf_counter()
        results.append(evaluate_kind(model, kind, images, labels))
        r = results[-1]
        print(f"{kind}: {r.accuracy:.2%} of {len(labels)}, {r.refused} refused, preprocessing "
              f"{r.preprocess_ms:.2f} ms/image median ({time.perf_counter() - started:.0f} s)", flush=True)
    body = "\n\n".join([table(results, clean), verdict_table(checks(results)),
                         f"Model: `{args.bundle}`, Paddle Inference with the server's settings. " + watch.note()
                         + f" Examples of each kind, the 28x28 the model saw and its first failures: "
                         f"[handwriting_kinds.png]({SHEET.name})."])
    if args.sheet:
        contact_sheet(results, args.sheet)
        print(f"contact sheet: {args.sheet}")
    full = args.limit is None and list(args.kinds) == list(HANDWRITING_KINDS)  # a sample's figures are not the benchmark's
    if full and not args.no_write:
        watch.banner(args.allow_busy)  # a busy start writes nothing, the sheet included
        contact_sheet(results, SHEET)
    publish("handwriting", "Digits as people write them: accuracy through the server's preprocessing", body,
            f"nice python -m bench.handwriting --bundle {args.bundle}", watch, args.allow_busy,
            write=full and not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
