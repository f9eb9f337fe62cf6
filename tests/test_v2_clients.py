"""Stock Open Inference Protocol clients against the real server: Triton's own tritonclient[http],
with binary tensor data (its default) and with JSON, under the development server and gunicorn; and
the answers checked against schemas written from the protocol's REST specification, not our OpenAPI.
"""
from __future__ import annotations

import shutil
import sys

import cv2
import jsonschema
import numpy as np
import pytest
import requests
import tritonclient.http as th
from tritonclient.utils import InferenceServerException

from common.runtimes import PredictorRunner, create_predictor
from common.datasets import read_mnist
from common.digit_image import normalize
from tests.test_serve import Server, png

# ---- the Open Inference Protocol's REST messages, written from the specification
# (kserve.github.io/website/latest/modelserving/data_plane/v2_protocol/ and Triton's binary extension)

TENSOR_METADATA = {"type": "object", "required": ["name", "datatype", "shape"], "properties": {
    "name": {"type": "string"}, "datatype": {"type": "string"}, "shape": {"type": "array", "items": {"type": "integer"}}}}
PARAMETERS = {"type": "object"}
SPEC = {
    "server_metadata": {"type": "object", "required": ["name", "version", "extensions"], "properties": {
        "name": {"type": "string"}, "version": {"type": "string"},
        "extensions": {"type": "array", "items": {"type": "string"}}}},
    "live": {"type": "object", "required": ["live"], "properties": {"live": {"type": "boolean"}}},
    "ready": {"type": "object", "required": ["ready"], "properties": {"ready": {"type": "boolean"}}},
    "model_ready": {"type": "object", "required": ["name", "ready"], "properties": {
        "name": {"type": "string"}, "ready": {"type": "boolean"}}},
    "model_metadata": {"type": "object", "required": ["name", "platform", "inputs", "outputs"], "properties": {
        "name": {"type": "string"}, "versions": {"type": "array", "items": {"type": "string"}},
        "platform": {"type": "string"}, "inputs": {"type": "array", "items": TENSOR_METADATA},
        "outputs": {"type": "array", "items": TENSOR_METADATA}}},
    "infer_request": {"type": "object", "required": ["inputs"], "properties": {
        "id": {"type": "string"}, "parameters": PARAMETERS,
        "inputs": {"type": "array", "items": {**TENSOR_METADATA, "properties": {
            **TENSOR_METADATA["properties"], "parameters": PARAMETERS, "data": {}}}},
        "outputs": {"type": "array", "items": {"type": "object", "required": ["name"], "properties": {
            "name": {"type": "string"}, "parameters": PARAMETERS}}}}},
    "infer_response": {"type": "object", "required": ["model_name", "outputs"], "properties": {
        "model_name": {"type": "string"}, "model_version": {"type": "string"}, "id": {"type": "string"},
        "parameters": PARAMETERS,
        "outputs": {"type": "array", "items": {**TENSOR_METADATA, "properties": {
            **TENSOR_METADATA["properties"], "parameters": PARAMETERS, "data": {"type": "array"}},
            # JSON data, or (binary extension) its size in parameters
            "anyOf": [{"required": ["data"]}, {"required": ["parameters"], "properties": {"parameters": {
                "required": ["binary_data_size"]}}}]}}}},
    "error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}},
              "additionalProperties": False},
}


def conforms(kind: str, message) -> None:
    jsonschema.validate(message, SPEC[kind])


# ---- servers --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def models(mnist_bundle, housing_bundle, tmp_path_factory):
    root = tmp_path_factory.mktemp("v2models")
    shutil.copytree(mnist_bundle, root / "mnist")
    shutil.copytree(housing_bundle, root / "housing")
    return root


@pytest.fixture(scope="module", params=["production", "gunicorn"])
def server(request, models, tmp_path_factory):
    log = tmp_path_factory.mktemp(request.param) / "server.log"
    if request.param == "production":
        args = [sys.executable, "-m", "serve", "--models", str(models), "--port", "{port}"]
        env = None
    else:
        # The documented alternative, sync workers (no --threads): they close the connection after
        # every answer, which the clients' keep-alive pools must survive.
        args = [sys.executable, "-m", "gunicorn", "-c", "serve/gunicorn_conf.py", "-w", "2",
                "-b", "127.0.0.1:{port}", "serve.app:create_app()"]
        env = {"SERVE_MODELS": str(models), "PROMETHEUS_MULTIPROC_DIR": str(log.parent / "prom")}
    s = Server(args, log, env=env)
    try:
        s.wait("/v2/health/ready")
        if request.param == "gunicorn":
            assert "Using worker: sync" in log.read_text()  # serve/gunicorn_conf.py leaves gunicorn's choice
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def client(server):
    c = th.InferenceServerClient(server.url.removeprefix("http://"))
    yield c
    c.close()


@pytest.fixture(scope="module")
def test_digits(data_dir):
    images, labels = read_mnist("test", data_dir, limit=37)
    return images, labels


def reference(bundle, x: np.ndarray) -> np.ndarray:
    return PredictorRunner(create_predictor(bundle, mkldnn=False)).run(x)[0]


# ---- tritonclient ---------------------------------------------------------------------------


def test_health_and_metadata(client):
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("mnist") and client.is_model_ready("mnist-image")
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
    meta = client.get_model_metadata("mnist")
    assert meta["inputs"] == [{"name": "image", "datatype": "FP32", "shape": [-1, 1, 28, 28]}]
    assert meta["outputs"] == [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]}]
    image_meta = client.get_model_metadata("mnist-image")
    assert image_meta["inputs"] == [{"name": "image", "datatype": "BYTES", "shape": [-1]}]
    assert [o["name"] for o in image_meta["outputs"]] == ["probabilities", "label"]


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("n", [1, 37])
def test_infer_digits(client, mnist_bundle, test_digits, binary, n):
    x = normalize(test_digits[0][:n])
    tensor = th.InferInput("image", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=binary)
    outputs = None if binary else [th.InferRequestedOutput("probabilities", binary_data=False)]
    result = client.infer("mnist", [tensor], outputs=outputs)
    probabilities = result.as_numpy("probabilities")
    assert probabilities.shape == (n, 10)
    np.testing.assert_allclose(probabilities, reference(mnist_bundle, x), atol=1e-5)
    conforms("infer_response", result.get_response())


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_infer_housing(client, housing_bundle, binary):
    x = np.random.default_rng(0).standard_normal((37, 13)).astype(np.float32)
    tensor = th.InferInput("features", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=binary)
    result = client.infer("housing", [tensor], outputs=[th.InferRequestedOutput("price", binary_data=binary)])
    np.testing.assert_allclose(result.as_numpy("price"), reference(housing_bundle, x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("n", [1, 37])
def test_image_pipeline_over_v2(client, server, test_digits, binary, n):
    """Encoded photos in, digits out: the same answers as the friendly /predict/digit."""
    images = [png(255 - cv2.resize(img, (84, 84))) for img in test_digits[0][:n]]
    tensor = th.InferInput("image", [n], "BYTES")
    if binary:
        tensor.set_data_from_numpy(np.array(images, dtype=object))
    else:  # JSON carries BYTES as strings: images go base64-encoded
        import base64
        tensor.set_data_from_numpy(np.array([base64.b64encode(b) for b in images], dtype=object), binary_data=False)
    outputs = None if binary else [th.InferRequestedOutput(name, binary_data=False) for name in ("probabilities", "label")]
    result = client.infer("mnist-image", [tensor], outputs=outputs)
    labels = [v.decode() if isinstance(v, bytes) else v for v in result.as_numpy("label")]
    friendly = requests.post(server.url + "/predict/digit", files=[("file", b) for b in images], timeout=60).json()
    expected = [p["digit"] for p in friendly["predictions"]] if n > 1 else [friendly["digit"]]
    assert labels == [str(d) for d in expected]
    assert np.mean(np.array(labels) == test_digits[1][:n].astype(str)) >= 0.9


def test_errors_are_readable(client):
    tensor = th.InferInput("image", [1, 1, 28, 28], "FP32")
    tensor.set_data_from_numpy(np.zeros((1, 1, 28, 28), np.float32))
    with pytest.raises(InferenceServerException) as caught:
        client.infer("nope", [tensor])
    assert "no model named 'nope'" in str(caught.value) and str(caught.value.status()) == "404"
    wrong = th.InferInput("image", [1, 1, 28, 28], "FP64")
    wrong.set_data_from_numpy(np.zeros((1, 1, 28, 28), np.float64))
    with pytest.raises(InferenceServerException, match="datatype 'FP64'; the model takes FP32"):
        client.infer("mnist", [wrong])
    with pytest.raises(InferenceServerException, match="parameter 'priority' is not supported"):
        client.infer("mnist", [tensor], priority=3)


# ---- raw HTTP against the specification's messages ---------------------------------------------


def test_messages_conform_to_the_protocol(server):
    conforms("server_metadata", requests.get(server.url + "/v2", timeout=10).json())
    conforms("live", requests.get(server.url + "/v2/health/live", timeout=10).json())
    conforms("ready", requests.get(server.url + "/v2/health/ready", timeout=10).json())
    conforms("model_ready", requests.get(server.url + "/v2/models/mnist/ready", timeout=10).json())
    for name in ("mnist", "housing", "mnist-image"):
        conforms("model_metadata", requests.get(server.url + f"/v2/models/{name}", timeout=10).json())
    body = {"id": "7", "inputs": [{"name": "features", "shape": [2, 13], "datatype": "FP32", "data": [0.0] * 26}],
            "outputs": [{"name": "price"}]}
    conforms("infer_request", body)
    r = requests.post(server.url + "/v2/models/housing/infer", json=body, timeout=10)
    conforms("infer_response", r.json())
    assert r.json()["id"] == "7"
    for method, path, payload, status in (
            ("get", "/v2/models/nope", None, 404),
            ("post", "/v2/models/housing/infer", {"inputs": "x"}, 400),
            ("post", "/v2/models/housing/infer", {**body, "parameters": {"sequence_id": 3}}, 400),
            ("post", "/v2/models/housing/infer", {"inputs": [{**body["inputs"][0], "datatype": "INT64"}]}, 400)):
        r = getattr(requests, method)(server.url + path, json=payload, timeout=10)
        assert r.status_code == status, r.text
        conforms("error", r.json())
        assert r.headers["X-Request-ID"]
