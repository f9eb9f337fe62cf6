"""The Open Inference Protocol (KServe V2) REST API, so Triton/KServe/MLServer clients work unchanged.

Spec: https://kserve.github.io/website/latest/modelserving/data_plane/v2_protocol/ and Triton's
binary tensor data extension. Tensors are the graph's own inputs and outputs as the bundle's
``inference.yml`` declares them (names, datatypes, shapes; several of each), without the friendly
API's preprocessing: the digits model takes normalised (N, 1, 28, 28) FP32 images, the housing model
(N, 13) normalised features, a bring-your-own-model bundle whatever it declares. N may be any size,
also for a bundle exported with a fixed batch (the backend pads and splits).

Each digit model NAME also appears as ``NAME-image``: one BYTES input, the encoded image files (PNG,
JPEG, ...), run through the bundle's own preprocessing, answering ``probabilities`` and ``label``:
what a Triton ensemble of preprocessing and model would do.

Tensor data comes as JSON (``data``) or binary (``parameters.binary_data_size`` and the
``Inference-Header-Content-Length`` header, with any content type or none); outputs are JSON unless
the request asks for binary (``parameters.binary_data_output`` or an output's ``parameters.binary_data``).
Errors on these routes have the spec's shape, ``{"error": "<message>"}`` (errors.py).
"""
from __future__ import annotations

import math
import struct

import numpy as np
import orjson
from flask import Blueprint, Response, jsonify, request

from common.bundle import DTYPES
from common.version import toolkit_version

from . import inference, registry
from .config import current as settings
from .errors import ApiError
from .fields import base64_bytes, flag, integers, json_body, mapping, objects, parse_json, string
from .fields import finite_float32, header_length
from .record import stage

bp = Blueprint("v2", __name__, url_prefix="/v2")

SERVER_NAME = "paddle-toolkit-serve"
SERVER_VERSION = toolkit_version()
EXTENSIONS = ["binary_tensor_data"]
HEADER_LENGTH = "Inference-Header-Content-Length"
IMAGE_SUFFIX = "-image"
V2_TO_NUMPY = {v2: np.dtype(name) for name, v2 in DTYPES.items()}
V2_NAMES = {dtype: v2 for v2, dtype in V2_TO_NUMPY.items()}
REQUEST_PARAMETERS = {"binary_data_output"}
INPUT_PARAMETERS = {"binary_data_size"}
OUTPUT_PARAMETERS = {"binary_data"}


def _bad(message: str) -> ApiError:
    return ApiError(400, "invalid_tensor", message)


# ---- health and metadata ------------------------------------------------------------------


@bp.get("")
def server_metadata():
    """Server name, version and the protocol extensions implemented."""
    return jsonify(name=SERVER_NAME, version=SERVER_VERSION, extensions=EXTENSIONS)


@bp.get("/health/live")
def live():
    """200 as soon as the process answers HTTP."""
    return jsonify(live=True)


@bp.get("/health/ready")
def ready():
    """200 once models are loaded and warmed up (at least one serves), else 503."""
    if not registry.current().is_ready():
        raise ApiError(503, "not_ready", "models are still loading and warming up", {"Retry-After": "1"})
    return jsonify(ready=True)


def lookup(name: str, version: str | None, need_ready: bool):
    """(model version, is it the NAME-image entry) for a V2 model name; 404 / 503 as the registry says."""
    reg = registry.current()
    if name.endswith(IMAGE_SUFFIX) and name not in reg.models:
        base = reg.find(name[:-len(IMAGE_SUFFIX)], version)
        if base.kind == "digit":
            return (reg.ready(base.name, version) if need_ready else base), True
        raise ApiError(404, "model_not_found", f"no model named {name!r}")
    return (reg.ready(name, version) if need_ready else reg.find(name, version)), False


def signature(mv, image: bool) -> tuple[list[dict], list[dict]]:
    """The V2 inputs and outputs of a model entry: ``{name, datatype, shape}`` with -1 for any batch."""
    def v2(t):
        return {"name": t["name"], "datatype": DTYPES[t["dtype"]], "shape": [-1, *t["shape"][1:]]}
    outputs = [v2(t) for t in mv.bundle.outputs]
    if image:
        return [{"name": "image", "datatype": "BYTES", "shape": [-1]}], \
            outputs[:1] + [{"name": "label", "datatype": "BYTES", "shape": [-1]}]
    return [v2(t) for t in mv.bundle.inputs], outputs


@bp.get("/models/<name>")
@bp.get("/models/<name>/versions/<version>")
def model_metadata(name: str, version: str | None = None):
    """Inputs and outputs of a model (tensor names, datatypes, shapes with -1 for any size).

    The batch dimension is always -1, also for a bundle exported with a fixed batch N: the server
    pads smaller batches to N and splits larger ones (its inference.yml keeps the N).
    """
    mv, image = lookup(name, version, need_ready=False)
    if mv.bundle is None:  # its YAML could not even be read
        raise ApiError(503, "model_unavailable", f"model {mv.name!r} version {mv.version} was refused: {mv.reason}")
    inputs, outputs = signature(mv, image)
    versions = sorted(registry.current().models[mv.name].versions, key=int)
    return jsonify(name=name, versions=versions, platform=mv.platform or settings()["BACKEND"],
                   inputs=inputs, outputs=outputs)


@bp.get("/models/<name>/ready")
@bp.get("/models/<name>/versions/<version>/ready")
def model_ready(name: str, version: str | None = None):
    """200 with ready=true when the model serves; 503 (with the reason) while loading or if refused."""
    mv, _ = lookup(name, version, need_ready=True)
    return jsonify(name=name, version=mv.version, ready=True)


@bp.get("/models/<name>/stats")
@bp.get("/models/<name>/versions/<version>/stats")
def model_stats(name: str, version: str | None = None):
    """Which backend serves the model and why: each candidate's parity with Paddle Inference and its
    median batch-1 and batch-N times (serve/autoselect.py); 503 while loading or if refused."""
    mv, _ = lookup(name, version, need_ready=True)
    return jsonify(name=name, version=mv.version, platform=mv.platform, **mv.selection)


# ---- inference: reading the request ------------------------------------------------------------------


def request_parts() -> tuple[dict, memoryview]:
    """(the JSON header, the binary tail): binary extension when Inference-Header-Content-Length is set.

    The tail is a view of the body, not a copy: binary tensors are read from it in place.
    """
    with stage("decode"):
        if HEADER_LENGTH not in request.headers:
            if request.mimetype not in ("", "application/json"):
                raise ApiError(415, "unsupported_media_type", f"expected a JSON body (or the binary tensor extension "
                               f"with {HEADER_LENGTH}), got Content-Type {request.mimetype!r}")
            header, tail = json_body(allow_missing_type=True), memoryview(b"")
        else:
            data = request.get_data(cache=True)
            length = header_length(HEADER_LENGTH, len(data))
            header = parse_json(data[:length], f"the first {length} bytes of the body (the JSON header)")
            tail = memoryview(data)[length:]
    return mapping(header, "the request body", _bad), tail


def _check_parameters(params, allowed: set, where: str) -> dict:
    if params is None:
        return {}
    mapping(params, f"{where} 'parameters'", _bad)
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise _bad(f"{where} parameter {unknown[0]!r} is not supported by this server "
                   f"(supported: {', '.join(sorted(allowed))})")
    return params


def _shape(value, expected: list, name: str) -> list[int]:
    """The request's shape, checked against the declared one (-1 matches any size)."""
    integers(value, f"input {name!r}: 'shape'", _bad)
    if len(value) != len(expected) or any(e != -1 and d != e for d, e in zip(value, expected)):
        raise _bad(f"input {name!r}: shape {value} does not match the model's {expected} (-1: any size)")
    if any(d < 1 for d in value):
        raise _bad(f"input {name!r}: shape {value} has a dimension below 1")
    if value[0] > settings()["MAX_IMAGES"]:
        raise _bad(f"input {name!r}: batch of {value[0]}; the limit is {settings()['MAX_IMAGES']}")
    return value


def _json_numbers(item: dict, shape: list[int], dtype: np.dtype, name: str) -> np.ndarray:
    try:
        data = np.asarray(item.get("data"))
    except (ValueError, TypeError):  # ragged nesting
        raise _bad(f"input {name!r}: 'data' must be a (flat or nested) list of numbers") from None
    if data.dtype.kind not in "iufb" or data.ndim == 0:
        raise _bad(f"input {name!r}: 'data' must be a (flat or nested) list of numbers")
    if data.size != math.prod(shape):
        raise _bad(f"input {name!r}: 'data' holds {data.size} values; shape {shape} needs {math.prod(shape)}")
    if dtype.kind == "f":
        return finite_float32(data, "invalid_tensor", f"input {name!r} 'data'").astype(dtype).reshape(shape)
    with np.errstate(over="ignore", invalid="ignore"):
        cast = data.astype(dtype)
    if data.dtype.kind == "f" or not np.array_equal(cast, data):
        raise _bad(f"input {name!r}: 'data' holds values that are not {dtype.name}")
    return cast.reshape(shape)


def _bytes_elements(raw: memoryview, count: int, name: str) -> list[bytes]:
    """BYTES tensor data in binary form: each element a 4-byte little-endian length, then the bytes."""
    out, pos = [], 0
    for _ in range(count):
        if pos + 4 > len(raw):
            raise _bad(f"input {name!r}: binary BYTES data ends early")
        (size,) = struct.unpack_from("<I", raw, pos)
        pos += 4
        if pos + size > len(raw):
            raise _bad(f"input {name!r}: binary BYTES element claims {size} bytes past the end")
        out.append(bytes(raw[pos:pos + size]))
        pos += size
    if pos != len(raw):
        raise _bad(f"input {name!r}: binary_data_size holds {len(raw) - pos} bytes beyond its {count} elements")
    return out


def _json_bytes(item: dict, count: int, name: str) -> list[bytes]:
    """BYTES in JSON: strings; for images, base64 (a data: URL prefix is allowed)."""
    data = item.get("data")
    flat = _flatten(data) if isinstance(data, list) else None
    if flat is None or len(flat) != count or not all(isinstance(s, str) for s in flat):
        raise _bad(f"input {name!r}: BYTES 'data' must list {count} base64 strings")
    return [base64_bytes(s, f"input {name!r}: BYTES 'data'[{i}]", _bad) for i, s in enumerate(flat)]


def _flatten(data: list, depth: int = 0) -> list:
    """A nested list of BYTES elements, flattened in row-major order."""
    if depth > 32:
        raise _bad("BYTES 'data' nests lists more than 32 deep")
    out = []
    for v in data:
        out.extend(_flatten(v, depth + 1) if isinstance(v, list) else (v,))
    return out


def read_inputs(header: dict, tail: memoryview, declared: list[dict]) -> list:
    """The request's input tensors in the declared order: arrays, or lists of bytes for BYTES inputs."""
    items = objects(header.get("inputs"), "'inputs'", _bad)
    names = [string(i.get("name"), f"inputs[{n}].name", _bad) for n, i in enumerate(items)]
    by_name = dict(zip(names, items))
    unknown = [n for n in by_name if n not in {d["name"] for d in declared}]
    missing = [d["name"] for d in declared if d["name"] not in by_name]
    if unknown or missing or len(by_name) != len(items):
        raise _bad(f"the model's inputs are {[d['name'] for d in declared]}; the request "
                   + (f"has unknown input(s) {unknown}" if unknown else f"lacks {missing}" if missing else "repeats one"))
    offsets, pos = {}, 0  # binary data follows the header in the order the inputs are listed
    for name, item in zip(names, items):
        size = _check_parameters(item.get("parameters"), INPUT_PARAMETERS, f"input {name!r}").get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or isinstance(size, bool) or size < 0 or pos + size > len(tail):
                raise _bad(f"input {name!r}: binary_data_size {size!r} does not fit the {len(tail)} bytes sent")
            offsets[name], pos = (pos, pos + size), pos + size
    if pos != len(tail):
        raise _bad(f"the body carries {len(tail) - pos} bytes that no input's binary_data_size accounts for")
    tensors, rows = [], None
    for spec in declared:
        item, name = by_name[spec["name"]], spec["name"]
        if item.get("datatype") != spec["datatype"]:
            raise _bad(f"input {name!r}: datatype {str(item.get('datatype'))[:40]!r}; the model takes {spec['datatype']}")
        shape = _shape(item.get("shape"), spec["shape"], name)
        count = math.prod(shape)
        if spec["datatype"] == "BYTES":
            value = _bytes_elements(tail[slice(*offsets[name])], count, name) if name in offsets \
                else _json_bytes(item, count, name)
        elif name in offsets:
            value = _binary_numbers(tail[slice(*offsets[name])], shape, V2_TO_NUMPY[spec["datatype"]], name)
        else:
            value = _json_numbers(item, shape, V2_TO_NUMPY[spec["datatype"]], name)
        if rows is not None and shape[0] != rows:
            raise _bad(f"inputs disagree on the batch size ({rows} and {shape[0]})")
        rows = shape[0]
        tensors.append(value)
    return tensors


def _binary_numbers(raw: memoryview, shape: list[int], dtype: np.dtype, name: str) -> np.ndarray:
    """A tensor in the binary extension's form: little-endian values, read in place (no copy on this machine)."""
    if len(raw) != math.prod(shape) * dtype.itemsize:
        raise _bad(f"input {name!r}: {len(raw)} bytes of binary data; shape {shape} of {V2_NAMES[dtype]} "
                   f"needs {math.prod(shape) * dtype.itemsize}")
    value = np.frombuffer(raw, dtype.newbyteorder("<")).astype(dtype, copy=False).reshape(shape)
    if dtype.kind == "f":
        return finite_float32(value, "invalid_tensor", f"input {name!r}").astype(dtype, copy=False)
    return value


def requested_outputs(header: dict, declared: list[dict]) -> list[tuple[dict, bool]]:
    """(output spec, as binary?) for each output to return: those asked for, else all."""
    params = _check_parameters(header.get("parameters"), REQUEST_PARAMETERS, "request")
    binary_all = flag(params.get("binary_data_output", False), "parameters.binary_data_output", _bad)
    asked = header.get("outputs")
    if asked is None or asked == []:
        return [(d, binary_all) for d in declared]
    by_name = {d["name"]: d for d in declared}
    chosen = []
    for i, o in enumerate(objects(asked, "'outputs'", _bad)):
        name = string(o.get("name"), f"outputs[{i}].name", _bad)
        if name not in by_name:
            raise _bad(f"unknown output {name[:80]!r}; the model's outputs are {list(by_name)}")
        p = _check_parameters(o.get("parameters"), OUTPUT_PARAMETERS, f"output {name!r}")
        chosen.append((by_name[name], flag(p.get("binary_data", binary_all), f"output {name!r} binary_data", _bad)))
    return chosen


# ---- inference: running and answering ----------------------------------------------------------------


def run_images(mv, images: list[bytes]) -> dict:
    """The NAME-image entry: the bundle's preprocessing on each encoded image, then the model."""
    batch, _ = inference.digit_inputs(mv, images)
    (probabilities,) = inference.run(mv, [batch])
    labels = np.array([mv.pipeline.labels[int(i)].encode() for i in probabilities.argmax(-1)], dtype=object)
    return {mv.bundle.outputs[0]["name"]: probabilities, "label": labels}


def encode_output(spec: dict, value: np.ndarray, binary: bool) -> tuple[dict, bytes]:
    """One output tensor as (its JSON entry, its binary bytes or b"").

    JSON ``data`` stays a numpy array: orjson writes it (a float32 value as the shortest text that
    reads back as the same float32).
    """
    entry = {"name": spec["name"], "datatype": spec["datatype"], "shape": list(value.shape)}
    if spec["datatype"] == "BYTES":
        if binary:
            raw = b"".join(struct.pack("<I", len(v)) + v for v in value.ravel())
            return {**entry, "parameters": {"binary_data_size": len(raw)}}, raw
        return {**entry, "data": [v.decode("utf-8", "replace") for v in value.ravel()]}, b""
    value = np.ascontiguousarray(value, dtype=V2_TO_NUMPY[spec["datatype"]].newbyteorder("<"))
    if binary:
        raw = value.tobytes()
        return {**entry, "parameters": {"binary_data_size": len(raw)}}, raw
    return {**entry, "data": value.ravel()}, b""


@bp.post("/models/<name>/infer")
@bp.post("/models/<name>/versions/<version>/infer")
def infer(name: str, version: str | None = None):
    """Run the model on the request's input tensors; answer its output tensors (JSON or binary)."""
    header, tail = request_parts()
    mv, image = lookup(name, version, need_ready=True)
    if "id" in header:
        string(header["id"], "'id'", _bad)
    declared_inputs, declared_outputs = signature(mv, image)
    with stage("decode"):
        wanted = requested_outputs(header, declared_outputs)
        inputs = read_inputs(header, tail, declared_inputs)
    if image:
        values = run_images(mv, inputs[0])
    else:
        values = {spec["name"]: out for spec, out in zip(declared_outputs, inference.run(mv, inputs))}
    with stage("encode"):
        answer = {"model_name": name, "model_version": mv.version}
        if "id" in header:
            answer["id"] = header["id"]
        entries, blobs = [], []
        for spec, binary in wanted:
            entry, raw = encode_output(spec, values[spec["name"]], binary)
            entries.append(entry)
            blobs.append(raw)
        answer["outputs"] = entries
        if not any(blobs):
            return jsonify(answer)
        head = orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY)
        return Response(head + b"".join(blobs), mimetype="application/octet-stream",
                        headers={HEADER_LENGTH: str(len(head))})
