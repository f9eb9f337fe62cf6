"""The friendly API: ``POST /predict/digit`` (images in) and ``POST /predict/house`` (features in).

Inputs are decoded here and preprocessed as the model's bundle declares (``serve/pipelines.py``:
its digit-image parameters, its feature names, mean and std), and a request with several inputs
runs as one predictor call. Choose a model other than the default one with ``?model=NAME&version=N``.
"""
from __future__ import annotations

import base64
import binascii
import math
import time

import cv2
import numpy as np
from flask import Blueprint, current_app, g, jsonify, request

from . import registry
from .config import current as settings
from .errors import ApiError
from .pipelines import ImageError

bp = Blueprint("predict", __name__, url_prefix="/predict")

IMAGE_TYPES = ("image/png", "image/jpeg", "image/bmp", "image/webp")


def elapsed_ms() -> float:
    """Milliseconds since the request arrived."""
    return round((time.perf_counter() - g.started) * 1000.0, 3)


def json_body(allow_missing_type: bool = False):
    """The parsed JSON body; 415 if it is not JSON, 400 if it does not parse.

    ``allow_missing_type``: also parse a body sent with no Content-Type (stock V2 clients send none).

    Parsed here rather than with ``request.get_json(silent=True)``, which only swallows
    ``ValueError``: a body nested thousands of levels deep (``[[[[...``) raises ``RecursionError``
    in the JSON parser, and must be a 400 like any other unparsable body, not a 500.
    """
    if request.mimetype != "application/json" and not (allow_missing_type and not request.mimetype):
        raise ApiError(415, "unsupported_media_type",
                       f"expected Content-Type application/json, got {request.mimetype or 'none'!r}")
    try:
        body = current_app.json.loads(request.get_data(cache=True))
    except RecursionError:
        raise ApiError(400, "invalid_json", "request body nests JSON arrays or objects too deeply") from None
    except ValueError:  # bad syntax, bad UTF-8, empty body
        body = None
    if body is None:
        raise ApiError(400, "invalid_json", "request body is not valid JSON")
    return body


def finite_float32(values, code: str, what: str, name_of=None) -> np.ndarray:
    """``values`` cast to float32; a 400 (``code``) if any is NaN or infinite *after* the cast.

    Checked after the cast because a finite float64 beyond float32's range (1e308, or a feature
    that normalisation makes huge) becomes infinity in float32; the model's answer would then be
    infinite or NaN, which JSON cannot carry. ``name_of(index)`` names the first bad value.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        array = np.asarray(values).astype(np.float32)
    bad = ~np.isfinite(array)
    if bad.any():
        index = tuple(int(i) for i in np.argwhere(bad)[0])
        where = name_of(index) if name_of else f"index {list(index)}"
        raise ApiError(400, code, f"{what} holds non-finite values after conversion to float32 (NaN, infinity, "
                                  f"or beyond +-3.4e38), first at {where}")
    return array


def check_finite_output(mv, out: np.ndarray) -> np.ndarray:
    """422 if the model answered NaN or infinity (finite inputs far outside the training data can
    overflow inside the model); JSON has no such numbers, and a price of "Infinity" is no answer."""
    if out.dtype.kind in "fc" and not np.isfinite(out).all():
        raise ApiError(422, "non_finite_output", f"model {mv.name!r} version {mv.version} produced a non-finite "
                       "output (NaN or infinity) for this input; inputs this far outside the training data "
                       "cannot be answered")
    return out


def run_model(mv, inputs: list[np.ndarray]) -> tuple[list[np.ndarray], float]:
    """Run ``inputs`` (one array per bundle input) through the model version; returns its outputs
    (one array per bundle output) and the time in ms.

    422 (``non_finite_output``) if an output holds NaN or infinity.
    """
    metrics = current_app.extensions["metrics"]
    if not settings()["DYNAMIC_BATCHING"]:
        metrics.batch_size.labels(mv.name).observe(len(inputs[0]))  # the batcher reports its own
    started = time.perf_counter()
    outputs = [np.asarray(out) for out in mv.runner.run(inputs)]
    seconds = time.perf_counter() - started
    metrics.inference.labels(mv.name).observe(seconds)
    for out in outputs:
        check_finite_output(mv, out)
    return outputs, round(seconds * 1000.0, 3)


# ---- digits ---------------------------------------------------------------------------------


def _b64(text, where: str) -> bytes:
    """Decode a base64 string (a ``data:image/...;base64,`` prefix is allowed)."""
    if not isinstance(text, str):
        raise ApiError(400, "invalid_image", f"{where} must be a base64 string, got {type(text).__name__}")
    if text.startswith("data:") and "," in text:
        text = text.split(",", 1)[1]
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, "invalid_image", f"{where} is not valid base64") from None


def digit_images() -> tuple[list[bytes], bool]:
    """The uploaded images and whether the request was a batch (several files, or "images")."""
    if request.mimetype == "multipart/form-data":
        files = request.files.getlist("file")
        if not files:
            raise ApiError(400, "missing_file", "multipart upload needs a part named 'file'")
        return [f.read() for f in files], len(files) > 1
    if request.mimetype in IMAGE_TYPES:
        return [request.get_data()], False
    if request.mimetype != "application/json":
        raise ApiError(415, "unsupported_media_type", f"send the image as multipart/form-data (field 'file'), "
                       f"a raw {' or '.join(IMAGE_TYPES[:2])} body, or JSON {{\"image\": base64}}; "
                       f"got Content-Type {request.mimetype or 'none'!r}")
    body = json_body()
    if isinstance(body, dict) and "image" in body:
        return [_b64(body["image"], "'image'")], False
    if isinstance(body, dict) and isinstance(body.get("images"), list) and body["images"]:
        return [_b64(item, f"'images'[{i}]") for i, item in enumerate(body["images"])], True
    raise ApiError(400, "invalid_request", 'JSON body must be {"image": "<base64>"} or {"images": ["<base64>", ...]}')


def preprocess_all(pipeline, images: list[bytes]) -> tuple[np.ndarray, list[np.ndarray]]:
    """Decode and preprocess every image into one (N, 1, 28, 28) batch, with the uint8 28x28 images
    the model sees; 400 names the bad one."""
    limit = settings()["MAX_IMAGES"]
    if len(images) > limit:
        raise ApiError(400, "too_many_inputs", f"{len(images)} images in one request; the limit is {limit}")
    arrays, seen = [], []
    for i, data in enumerate(images):
        try:
            gray, x = pipeline.preview_and_inputs(data, settings()["MAX_PIXELS"])
        except ImageError as exc:
            where = f"image {i}: " if len(images) > 1 else ""
            raise ApiError(400, "invalid_image", f"{where}{exc}") from None
        arrays.append(x)
        seen.append(gray)
    return np.concatenate(arrays), seen


def preview_png(gray: np.ndarray) -> str:
    """The 28x28 the model saw, as a ``data:image/png;base64,...`` URL (a few hundred bytes)."""
    ok, encoded = cv2.imencode(".png", gray)
    return "data:image/png;base64," + base64.b64encode(encoded.tobytes()).decode()


@bp.post("/digit")
def predict_digit():
    """Classify one image, or a batch in one predictor call; ``?preview=1`` adds the 28x28 the model saw."""
    images, is_batch = digit_images()
    mv = registry.current().for_kind("digit", request.args.get("model"), request.args.get("version"))
    batch, seen = preprocess_all(mv.pipeline, images)
    (probabilities,), inference_ms = run_model(mv, [batch])
    answers = [mv.pipeline.answer(p) for p in probabilities]
    if request.args.get("preview", "").lower() in ("1", "true", "yes"):
        for answer, gray in zip(answers, seen):
            answer["preview"] = preview_png(gray)
    head = {"model": mv.name, "version": mv.version}
    body = {**head, "predictions": answers} if is_batch else {**head, **answers[0]}
    return jsonify({**body, "inference_ms": inference_ms, "time_ms": elapsed_ms()})


# ---- houses ---------------------------------------------------------------------------------


def _number(value, where: str) -> float:
    """A finite real number, or a 400 saying what is wrong."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ApiError(400, "invalid_features", f"{where} must be a number, got {type(value).__name__}")
    try:
        number = float(value)
    except OverflowError:  # a JSON integer with hundreds of digits
        number = math.inf
    if not math.isfinite(number):
        raise ApiError(400, "invalid_features", f"{where} must be a finite number, got {str(value)[:40]}")
    return number


def feature_row(row, names: list[str], where: str) -> list[float]:
    """One house, given as a list of 13 numbers or an object keyed by feature names."""
    if isinstance(row, list):
        if len(row) != len(names):
            raise ApiError(400, "invalid_features", f"{where} has {len(row)} numbers, expected {len(names)} "
                           f"({', '.join(names)})")
        return [_number(v, f"{where}[{i}] ({names[i]})") for i, v in enumerate(row)]
    if isinstance(row, dict):
        missing = [n for n in names if n not in row]
        unknown = [k for k in row if k not in names]
        if missing or unknown:
            raise ApiError(400, "invalid_features", f"{where}: " + "; ".join(
                part for part in (f"missing features {', '.join(missing)}" if missing else "",
                                  f"unknown features {', '.join(map(str, unknown))}" if unknown else "") if part))
        return [_number(row[n], f"{where}.{n}") for n in names]
    raise ApiError(400, "invalid_features", f"{where} must be a list of {len(names)} numbers or an object "
                   f"keyed by feature names, got {type(row).__name__}")


def feature_rows(body, names: list[str]) -> tuple[list[list[float]], bool]:
    """All houses in the body, and whether it was a batch (a list of houses)."""
    if isinstance(body, list) and body and all(isinstance(r, (list, dict)) for r in body):
        limit = settings()["MAX_IMAGES"]
        if len(body) > limit:
            raise ApiError(400, "too_many_inputs", f"{len(body)} houses in one request; the limit is {limit}")
        return [feature_row(r, names, f"house {i}") for i, r in enumerate(body)], True
    return [feature_row(body, names, "features")], False


@bp.post("/house")
def predict_house():
    """Price one house, or a batch in one predictor call, in $1000s."""
    body = json_body()
    mv = registry.current().for_kind("house", request.args.get("model"), request.args.get("version"))
    names = mv.pipeline.names
    rows, is_batch = feature_rows(body, names)
    batch = finite_float32(mv.pipeline.inputs(rows), "invalid_features", "features (normalised with the bundle's "
                           "mean/std)", lambda ix: f"{f'house {ix[0]} ' if is_batch else ''}{names[ix[1]]}")
    (prices,), inference_ms = run_model(mv, [batch])
    answers = [{"price": float(p)} for p in np.asarray(prices).reshape(len(rows), -1)[:, 0]]
    head = {"model": mv.name, "version": mv.version, "unit": mv.pipeline.unit}
    body = {**head, "predictions": answers} if is_batch else {**head, **answers[0]}
    return jsonify({**body, "inference_ms": inference_ms, "time_ms": elapsed_ms()})
