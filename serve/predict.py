"""The friendly API: ``POST /predict/digit`` (images in) and ``POST /predict/house`` (features in).

This module reads requests and writes answers; the bundle's preprocessing and the model run in
serve/inference.py, as the bundle's ``inference.yml`` declares (serve/pipelines.py). A request with
several inputs runs as one predictor call. Choose a model other than the default one with
``?model=NAME&version=N``.
"""
from __future__ import annotations

import base64
import math

import cv2
import numpy as np
from flask import Blueprint, g, jsonify, request

from . import inference, registry
from .config import current as settings
from .errors import ApiError
from .fields import base64_bytes, json_body, query_flag
from .record import stage

bp = Blueprint("predict", __name__, url_prefix="/predict")

IMAGE_TYPES = ("image/png", "image/jpeg", "image/bmp", "image/webp")


def _invalid_image(message: str) -> ApiError:
    return ApiError(400, "invalid_image", message)


def _invalid_features(message: str) -> ApiError:
    return ApiError(400, "invalid_features", message)


def answer(body: dict):
    """The JSON answer, with the time the request has taken so far (its encoding timed as a stage)."""
    with stage("encode"):
        return jsonify({**body, "time_ms": round(g.record.elapsed() * 1000.0, 3)})


def model_ms() -> float:
    """Milliseconds the model took in this request."""
    return round(g.record.seconds.get("infer", 0.0) * 1000.0, 3)


# ---- digits ---------------------------------------------------------------------------------


def digit_images() -> tuple[list[bytes], bool]:
    """The uploaded images and whether the request was a batch (several files, or "images")."""
    if request.mimetype == "multipart/form-data":
        with stage("decode"):
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
    with stage("decode"):
        body = json_body()
        if isinstance(body, dict) and "image" in body:
            return [base64_bytes(body["image"], "'image'", _invalid_image)], False
        if isinstance(body, dict) and isinstance(body.get("images"), list) and body["images"]:
            if len(body["images"]) > settings()["MAX_IMAGES"]:
                raise ApiError(400, "too_many_inputs", f"{len(body['images'])} images in one request; the limit is "
                               f"{settings()['MAX_IMAGES']}")
            return [base64_bytes(item, f"'images'[{i}]", _invalid_image) for i, item in enumerate(body["images"])], True
    raise ApiError(400, "invalid_request", 'JSON body must be {"image": "<base64>"} or {"images": ["<base64>", ...]}')


def preview_png(gray: np.ndarray) -> str:
    """The 28x28 the model saw, as a ``data:image/png;base64,...`` URL (a few hundred bytes)."""
    ok, encoded = cv2.imencode(".png", gray)
    return "data:image/png;base64," + base64.b64encode(encoded.tobytes()).decode()


@bp.post("/digit")
def predict_digit():
    """Classify one image, or a batch in one predictor call; ``?preview=1`` adds the 28x28 the model saw."""
    images, is_batch = digit_images()
    mv = registry.current().for_kind("digit", request.args.get("model"), request.args.get("version"))
    batch, seen = inference.digit_inputs(mv, images)
    (probabilities,) = inference.run(mv, [batch])
    answers = [mv.pipeline.answer(p) for p in probabilities]
    if query_flag("preview"):
        for one, gray in zip(answers, seen):
            one["preview"] = preview_png(gray)
    head = {"model": mv.name, "version": mv.version}
    body = {**head, "predictions": answers} if is_batch else {**head, **answers[0]}
    return answer({**body, "inference_ms": model_ms()})


# ---- houses ---------------------------------------------------------------------------------


def _number(value, where: str) -> float:
    """A finite real number, or a 400 saying what is wrong."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _invalid_features(f"{where} must be a number, got {type(value).__name__}")
    try:
        number = float(value)
    except OverflowError:  # a JSON integer with hundreds of digits
        number = math.inf
    if not math.isfinite(number):
        raise _invalid_features(f"{where} must be a finite number, got {str(value)[:40]}")
    return number


def feature_row(row, names: list[str], where: str) -> list[float]:
    """One house, given as a list of 13 numbers or an object keyed by feature names."""
    if isinstance(row, list):
        if len(row) != len(names):
            raise _invalid_features(f"{where} has {len(row)} numbers, expected {len(names)} ({', '.join(names)})")
        return [_number(v, f"{where}[{i}] ({names[i]})") for i, v in enumerate(row)]
    if isinstance(row, dict):
        missing = [n for n in names if n not in row]
        unknown = [k for k in row if k not in names]
        if missing or unknown:
            raise _invalid_features(f"{where}: " + "; ".join(
                part for part in (f"missing features {', '.join(missing)}" if missing else "",
                                  f"unknown features {', '.join(map(str, unknown))[:200]}" if unknown else "") if part))
        return [_number(row[n], f"{where}.{n}") for n in names]
    raise _invalid_features(f"{where} must be a list of {len(names)} numbers or an object keyed by feature names, "
                            f"got {type(row).__name__}")


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
    with stage("decode"):
        body = json_body()
    mv = registry.current().for_kind("house", request.args.get("model"), request.args.get("version"))
    with stage("decode"):
        rows, is_batch = feature_rows(body, mv.pipeline.names)
    (prices,) = inference.run(mv, [inference.house_inputs(mv, rows, is_batch)])
    answers = [{"price": float(p)} for p in np.asarray(prices).reshape(len(rows), -1)[:, 0]]
    head = {"model": mv.name, "version": mv.version, "unit": mv.pipeline.unit}
    body = {**head, "predictions": answers} if is_batch else {**head, **answers[0]}
    return answer({**body, "inference_ms": model_ms()})
