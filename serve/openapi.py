"""``GET /openapi.json``: an OpenAPI 3 description of every route (also what the fuzz test is driven by)."""
from __future__ import annotations

from flask import Blueprint, jsonify

from common.bundle import DTYPES
from common.housing import FEATURE_NAMES
from common.version import toolkit_version

from . import registry

bp = Blueprint("openapi", __name__)

ERROR = {"$ref": "#/components/schemas/Error"}
V2_ERROR = {"$ref": "#/components/schemas/V2Error"}
NUMBER_LIST = {"type": "array", "items": {"type": "number"}}


def _errors(*statuses: int, v2: bool = False) -> dict:
    """Error responses: the friendly API's error shape, or the V2 protocol's with ``v2``."""
    text = {400: "Invalid input", 404: "Unknown model or version", 413: "Body over the size limit",
            415: "Unsupported Content-Type", 422: "The model produced a non-finite output (NaN or infinity)",
            503: "Model loading, refused, or all predictors busy"}
    schema = V2_ERROR if v2 else ERROR
    return {str(s): {"description": text[s], "content": {"application/json": {"schema": schema}}} for s in statuses}


def _ok(description: str, schema: dict | None = None, media: str = "application/json") -> dict:
    content = {media: {"schema": schema or {"type": "object"}}}
    return {"200": {"description": description, "content": content}}


def _op(summary: str, responses: dict, body: dict | None = None, params: list | None = None) -> dict:
    op = {"summary": summary, "responses": responses}
    if body:
        op["requestBody"] = {"required": True, "content": body}
    if params:
        op["parameters"] = params
    return op


def _path_param(name: str) -> dict:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


SELECT_MODEL = [{"name": "model", "in": "query", "required": False, "schema": {"type": "string"},
                 "description": "model name (default: the first model of the task)"},
                {"name": "version", "in": "query", "required": False, "schema": {"type": "string"},
                 "description": "version number (default: the highest)"}]
PREVIEW = {"name": "preview", "in": "query", "required": False, "schema": {"type": "string", "enum": ["0", "1"]},
           "description": "1: each answer also carries 'preview', the 28x28 the model saw, as a PNG data URL"}


def _digit_body() -> dict:
    binary = {"type": "string", "format": "binary"}
    b64 = {"type": "string", "description": "base64 image file, optionally a data: URL"}
    return {
        "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
            "file": {"oneOf": [binary, {"type": "array", "items": binary}]}}}},
        "image/png": {"schema": binary},
        "image/jpeg": {"schema": binary},
        "application/json": {"schema": {"oneOf": [
            {"type": "object", "required": ["image"], "properties": {"image": b64}},
            {"type": "object", "required": ["images"], "properties": {"images": {"type": "array", "items": b64}}},
        ]}},
    }


def _house_body(names: list[str]) -> dict:
    row = {"type": "array", "items": {"type": "number"}, "minItems": len(names), "maxItems": len(names)}
    obj = {"type": "object", "required": names, "properties": {n: {"type": "number"} for n in names}}
    return {"application/json": {"schema": {"oneOf": [row, obj, {"type": "array", "items": {"oneOf": [row, obj]}}]}}}


def _infer_body() -> dict:
    tensor = {"type": "object", "required": ["name", "shape", "datatype", "data"], "properties": {
        "name": {"type": "string"}, "shape": {"type": "array", "items": {"type": "integer"}},
        "datatype": {"type": "string", "enum": sorted({*DTYPES.values(), "BYTES"})}, "data": NUMBER_LIST}}
    return {"application/json": {"schema": {"type": "object", "required": ["inputs"], "properties": {
        "id": {"type": "string"}, "inputs": {"type": "array", "items": tensor},
        "outputs": {"type": "array", "items": {"type": "object", "properties": {"name": {"type": "string"}}}}}}}}


def _feature_names() -> list[str]:
    """Feature names of the first housing bundle served (else the UCI housing columns)."""
    for mv in registry.current().all_versions():
        if mv.kind == "house":
            return list(mv.pipeline.names)
    return list(FEATURE_NAMES)


def document() -> dict:
    """The OpenAPI 3.0 document."""
    name, version = _path_param("name"), _path_param("version")
    model_meta = _op("Model metadata (V2)", {**_ok("Inputs and outputs"), **_errors(404, 503, v2=True)})
    model_ready = _op("Model readiness (V2)", {**_ok("Ready"), **_errors(404, 503, v2=True)})
    model_stats = _op("Backends tried for the model: parity with Paddle Inference, batch-1 and batch-N median "
                      "times, the one chosen", {**_ok("The table"), **_errors(404, 503, v2=True)})
    infer = _op("Inference (V2; JSON tensors, or binary with Inference-Header-Content-Length)",
                {**_ok("Output tensors"), **_errors(400, 404, 413, 415, 422, 503, v2=True)}, _infer_body())
    return {
        "openapi": "3.0.3",
        "info": {"title": "Paddle toolkit prediction service", "version": toolkit_version(),
                 "description": "Digits and house prices; friendly API, KServe V2 (Open Inference Protocol) "
                                "REST API, metrics and a drawing page. Errors: {error: {code, message, request_id}}; "
                                "on /v2 routes the protocol's {error: message}."},
        "paths": {
            "/": {"get": _op("The page: draw or upload a digit, price a house (HTML)", _ok("The page", {"type": "string"}, "text/html"))},
            "/predict/digit": {"post": _op("Classify digit image(s)", {**_ok("Digit and probabilities"),
                                           **_errors(400, 404, 413, 415, 422, 503)}, _digit_body(), [*SELECT_MODEL, PREVIEW])},
            "/predict/house": {"post": _op("Price house(s) in $1000s", {**_ok("Price(s)"),
                                           **_errors(400, 404, 413, 415, 422, 503)}, _house_body(_feature_names()),
                                           SELECT_MODEL)},
            "/v2": {"get": _op("Server metadata (V2)", _ok("Name, version, extensions"))},
            "/v2/health/live": {"get": _op("Liveness (V2)", _ok("Live"))},
            "/v2/health/ready": {"get": _op("Readiness (V2)", {**_ok("Ready"), **_errors(503, v2=True)})},
            "/v2/models/{name}": {"get": {**model_meta, "parameters": [name]}},
            "/v2/models/{name}/versions/{version}": {"get": {**model_meta, "parameters": [name, version]}},
            "/v2/models/{name}/ready": {"get": {**model_ready, "parameters": [name]}},
            "/v2/models/{name}/versions/{version}/ready": {"get": {**model_ready, "parameters": [name, version]}},
            "/v2/models/{name}/stats": {"get": {**model_stats, "parameters": [name]}},
            "/v2/models/{name}/versions/{version}/stats": {"get": {**model_stats, "parameters": [name, version]}},
            "/v2/models/{name}/infer": {"post": {**infer, "parameters": [name]}},
            "/v2/models/{name}/versions/{version}/infer": {"post": {**infer, "parameters": [name, version]}},
            "/metrics": {"get": _op("Prometheus metrics", _ok("Text exposition", {"type": "string"}, "text/plain"))},
            "/openapi.json": {"get": _op("This document", _ok("OpenAPI 3 document"))},
        },
        "components": {"schemas": {"Error": {"type": "object", "required": ["error"], "properties": {"error": {
            "type": "object", "required": ["code", "message", "request_id"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"},
                           "request_id": {"type": "string"}}}}},
            "V2Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}}},
    }


@bp.get("/openapi.json")
def openapi():
    """The OpenAPI document."""
    return jsonify(document())
