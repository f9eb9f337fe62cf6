"""The one path from a request's inputs to a model's outputs: bundle -> preprocess -> run -> (the route answers).

The routes (serve/predict.py, serve/v2.py) parse requests and write answers; everything in between
happens here, for every route alike: the bundle's preprocessing, under the request's pixel and time
limits and the worker's decode budget, then the model. Each stage is timed (serve/record.py); what
a route needs from a model version comes from the registry (serve/registry.py).
"""
from __future__ import annotations

import time

import numpy as np
from flask import current_app, g, request

from common.image_decode import ImageError, check_pixels

from .config import current as settings
from .errors import ApiError
from .fields import finite_float32
from .front import DEADLINE
from .record import stage


def check_deadline(what: str) -> None:
    """504 if this request is past its deadline (``REQUEST_TIMEOUT_S`` after its body arrived) before ``what``."""
    deadline = request.environ.get(DEADLINE)
    if deadline is not None and time.perf_counter() > deadline:
        raise ApiError(504, "deadline_exceeded", f"the request ran out of time (REQUEST_TIMEOUT_S "
                       f"{settings()['REQUEST_TIMEOUT_S']:g} s) before {what}; send fewer or smaller inputs")


def run(mv, inputs: list) -> list[np.ndarray]:
    """The model version's outputs for ``inputs`` (one array per bundle input, in order).

    422 (``non_finite_output``) if an output holds NaN or infinity.
    """
    check_deadline("running the model")
    with stage("infer"):
        outputs = [np.asarray(out) for out in mv.runner.run(inputs)]
    g.record.model_run = (mv.name, len(inputs[0]))  # serve/metrics.py: batch size and model time per model
    for out in outputs:
        check_finite_output(mv, out)
    return outputs


def check_finite_output(mv, out: np.ndarray) -> np.ndarray:
    """422 if the model answered NaN or infinity (finite inputs far outside the training data can
    overflow inside the model); JSON has no such numbers, and a price of "Infinity" is no answer."""
    if out.dtype.kind in "fc" and not np.isfinite(out).all():
        raise ApiError(422, "non_finite_output", f"model {mv.name!r} version {mv.version} produced a non-finite "
                       "output (NaN or infinity) for this input; inputs this far outside the training data "
                       "cannot be answered")
    return out


def digit_inputs(mv, images: list[bytes]) -> tuple[np.ndarray, list[np.ndarray]]:
    """Every uploaded image through the bundle's preprocessing: the (N, 1, 28, 28) batch, and the uint8
    28x28 each became; 400 names the bad image.

    All headers are read first, so a request whose images claim more than ``MAX_REQUEST_PIXELS``
    together is refused before any is decoded. Each image then reserves its decoding memory from
    the worker's budget (503 if it is spent by other requests, 413 if it alone is more than the
    whole budget), and the deadline is checked between images.
    """
    limits = settings()
    if len(images) > limits["MAX_IMAGES"]:
        raise ApiError(400, "too_many_inputs", f"{len(images)} images in one request; the limit is {limits['MAX_IMAGES']}")
    pipeline = mv.pipeline

    def bad(i: int, exc: Exception) -> ApiError:
        return ApiError(400, "invalid_image", f"{f'image {i}: ' if len(images) > 1 else ''}{exc}")

    with stage("decode"):
        headers = []
        for i, data in enumerate(images):
            try:
                headers.append(check_pixels(pipeline.header(data), limits["MAX_PIXELS"]))
            except ImageError as exc:
                raise bad(i, exc) from None
    total = sum(h.pixels for h in headers)
    if total > limits["MAX_REQUEST_PIXELS"]:
        raise ApiError(413, "too_many_pixels", f"the images of this request have {total} pixels together; the limit "
                       f"is {limits['MAX_REQUEST_PIXELS']} (MAX_REQUEST_PIXELS): send them in several requests")
    budget = current_app.extensions["decode_budget"]
    batch, seen = [], []
    for i, (data, header) in enumerate(zip(images, headers)):
        check_deadline(f"image {i}")
        need = pipeline.peak_bytes(header)
        if need > budget.total:
            raise ApiError(413, "image_too_large", f"{f'image {i}: ' if len(images) > 1 else ''}decoding this "
                           f"{header.width}x{header.height} image takes about {need >> 20} MB, more than this server's "
                           f"budget of {budget.total >> 20} MB (DECODE_BUDGET_MB); send a smaller image")
        if not budget.take(need):
            raise ApiError(503, "busy", "this worker is decoding as many images as its memory budget allows "
                           "(DECODE_BUDGET_MB); retry shortly", {"Retry-After": "1"})
        try:
            with stage("decode"):
                image = pipeline.decode(data, limits["MAX_PIXELS"], header)
            with stage("preprocess"):
                gray, x = pipeline.model_input(image)
        except ImageError as exc:
            raise bad(i, exc) from None
        finally:
            image = None  # the decoded pixels go before the budget is given back
            budget.give(need)
        batch.append(x)
        seen.append(gray)
    return np.concatenate(batch), seen


def house_inputs(mv, rows: list[list[float]], is_batch: bool) -> np.ndarray:
    """Raw feature rows normalised with the bundle's statistics; 400 names a value that overflows float32."""
    names = mv.pipeline.names
    with stage("preprocess"):
        return finite_float32(mv.pipeline.inputs(rows), "invalid_features", "features (normalised with the bundle's "
                              "mean/std)", lambda ix: f"{f'house {ix[0]} ' if is_batch else ''}{names[ix[1]]}")
