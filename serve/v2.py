"""The Open Inference Protocol (KServe V2) REST API, so Triton/KServe/MLServer clients work unchanged.

Spec: https://kserve.github.io/website/latest/modelserving/data_plane/v2_protocol/. Tensors are the
model's own input and output, without the friendly API's preprocessing: the digits model takes
normalised (N, 1, 28, 28) FP32 images, the housing model (N, 13) normalised features; N may be any
size, also for a bundle exported with a fixed batch (the backend pads and splits). Only FP32 JSON
tensors are accepted (no binary-data extension). Errors keep this server's one error shape.
"""
from __future__ import annotations

import math

import numpy as np
from flask import Blueprint, current_app, jsonify

from .errors import ApiError
from .predict import check_finite_output, finite_float32, json_body, run_model, settings

bp = Blueprint("v2", __name__, url_prefix="/v2")

SERVER_NAME = "paddle-toolkit-serve"
SERVER_VERSION = "0.1.0"
# Output tensor names and shapes for bundles whose inference.yml has no Outputs section. The names
# come from the bundle, not the backend, so they are the same under Paddle and onnxruntime.
OUTPUTS = {"mnist": ("probabilities", [-1, 10]), "housing": ("price", [-1, 1])}


def registry():
    return current_app.extensions["registry"]


@bp.get("")
def server_metadata():
    """Server name, version and protocol extensions."""
    return jsonify(name=SERVER_NAME, version=SERVER_VERSION, extensions=[])


@bp.get("/health/live")
def live():
    """200 as soon as the process answers HTTP."""
    return jsonify(live=True)


@bp.get("/health/ready")
def ready():
    """200 once models are loaded and warmed up (at least one serves), else 503."""
    if not registry().is_ready():
        raise ApiError(503, "not_ready", "models are still loading and warming up", {"Retry-After": "1"})
    return jsonify(ready=True)


def output_spec(mv) -> tuple[str, list]:
    """Name and shape of the model's output tensor."""
    declared = mv.bundle.info.get("Outputs") or []
    if declared and isinstance(declared[0], dict) and "name" in declared[0]:
        return declared[0]["name"], list(declared[0].get("shape", [-1]))
    return OUTPUTS.get(mv.task, ("output", [-1]))


def _metadata(mv) -> dict:
    if mv.bundle is None:  # its YAML could not even be read
        raise ApiError(503, "model_unavailable", f"model {mv.name!r} version {mv.version} was refused: {mv.reason}")
    spec = mv.bundle.input
    out_name, out_shape = output_spec(mv)
    versions = sorted(registry().models[mv.name].versions, key=int)
    return {"name": mv.name, "versions": versions, "platform": mv.platform or settings()["BACKEND"],
            "inputs": [{"name": spec["name"], "datatype": "FP32", "shape": any_batch(spec["shape"])}],
            "outputs": [{"name": out_name, "datatype": "FP32", "shape": any_batch(out_shape)}]}


@bp.get("/models/<name>")
@bp.get("/models/<name>/versions/<version>")
def model_metadata(name: str, version: str | None = None):
    """Inputs and outputs of a model (tensor names, datatypes, shapes with -1 for any size).

    The batch dimension is always -1, also for a bundle exported with a fixed batch N: the server
    pads smaller batches to N and splits larger ones (its inference.yml keeps the N).
    """
    return jsonify(_metadata(registry().find(name, version)))


@bp.get("/models/<name>/ready")
@bp.get("/models/<name>/versions/<version>/ready")
def model_ready(name: str, version: str | None = None):
    """200 with ready=true when the model serves; 503 (with the reason) while loading or if refused."""
    mv = registry().ready(name, version)
    return jsonify(name=mv.name, version=mv.version, ready=True)


def _bad(message: str) -> ApiError:
    return ApiError(400, "invalid_tensor", message)


def any_batch(shape: list) -> list:
    """``shape`` with its batch (first) dimension -1: every model takes any batch size here, since
    the backend pads or splits batches for bundles exported with a fixed batch (serve/backends.py)."""
    return [-1, *list(shape)[1:]] if shape else list(shape)


def _shape(value, expected: list) -> list[int]:
    """The request's shape, checked against the model's (-1 matches any size; the batch dimension
    always does, see ``any_batch``)."""
    expected = any_batch(expected)
    if not isinstance(value, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in value):
        raise _bad(f"'shape' must be a list of integers, got {value!r}")
    if len(value) != len(expected) or any(e not in (-1, None) and d != e for d, e in zip(value, expected)):
        raise _bad(f"shape {value} does not match the model's input shape {expected} (-1: any size)")
    if any(d < 1 for d in value):
        raise _bad(f"shape {value} has a dimension below 1")
    if value[0] > settings()["MAX_IMAGES"]:
        raise _bad(f"batch of {value[0]}; the limit is {settings()['MAX_IMAGES']}")
    return value


def _tensor(item, spec: dict) -> np.ndarray:
    """One input tensor of the request as a float32 array of its declared shape."""
    if not isinstance(item, dict):
        raise _bad("each entry of 'inputs' must be an object")
    if item.get("name") != spec["name"]:
        raise _bad(f"unknown input {item.get('name')!r}; the model's input is {spec['name']!r}")
    if item.get("datatype") != "FP32":
        raise _bad(f"datatype {item.get('datatype')!r} is not supported; send FP32")
    if "binary_data_size" in (item.get("parameters") or {}):
        raise _bad("the binary tensor data extension is not supported; send 'data' as JSON numbers")
    shape = _shape(item.get("shape"), list(spec["shape"]))
    try:
        data = np.asarray(item.get("data"))
    except (ValueError, TypeError):  # ragged nesting
        raise _bad("'data' must be a (flat or nested) list of numbers") from None
    if data.dtype.kind not in "iuf" or (data.ndim == 0):
        raise _bad("'data' must be a (flat or nested) list of numbers")
    if data.size != math.prod(shape):
        raise _bad(f"'data' holds {data.size} values; shape {shape} needs {math.prod(shape)}")
    data = finite_float32(data, "invalid_tensor", "'data'")
    return data.reshape(shape)


def _requested_outputs(body: dict, out_name: str) -> None:
    """Refuse output names the model does not have (an empty or missing list means all)."""
    outputs = body.get("outputs") or []
    if not isinstance(outputs, list) or not all(isinstance(o, dict) for o in outputs):
        raise _bad("'outputs' must be a list of objects with a 'name'")
    unknown = [o.get("name") for o in outputs if o.get("name") != out_name]
    if unknown:
        raise _bad(f"unknown output {unknown[0]!r}; the model's output is {out_name!r}")


@bp.post("/models/<name>/infer")
@bp.post("/models/<name>/versions/<version>/infer")
def infer(name: str, version: str | None = None):
    """Run the model on the request's input tensor; answer its output tensor."""
    body = json_body()
    mv = registry().ready(name, version)
    if not isinstance(body, dict) or not isinstance(body.get("inputs"), list) or len(body["inputs"]) != 1:
        raise _bad("body must be an object whose 'inputs' lists exactly one tensor")
    if "id" in body and not isinstance(body["id"], str):
        raise _bad("'id' must be a string")
    out_name, _ = output_spec(mv)
    _requested_outputs(body, out_name)
    batch = _tensor(body["inputs"][0], mv.bundle.input)
    out, _ = run_model(mv, batch)
    with np.errstate(over="ignore"):  # a float64 output beyond float32's range: refused just below
        out = np.asarray(out, np.float32).reshape(len(batch), -1)
    check_finite_output(mv, out)
    answer = {"model_name": mv.name, "model_version": mv.version,
              "outputs": [{"name": out_name, "shape": list(out.shape), "datatype": "FP32", "data": out.ravel().tolist()}]}
    if "id" in body:
        answer["id"] = body["id"]
    return jsonify(answer)
