"""The floor of the HTTP stack: Flask answering ``POST /predict/digit`` with no work, behind the production front.

    granian --interface rsgi --factory bench.flask_floor:rsgi_app --workers 2 --port 8000

bench/serve_load.py runs this app under the same front and workers as the server and sends it the
same request. The route reads the uploaded body and answers a digit answer of the same shape and
size as the server's (fixed numbers, orjson like the server), without decoding, preprocessing, the
model, metrics or the registry: what granian + serve/front.py + Flask cost per request on this
machine before any of our code runs. No request can be cheaper than this with Flask.
"""
from flask import Flask, jsonify, request

from serve.config import resolve
from serve.front import Front
from serve.json_provider import OrjsonProvider

ANSWER = {"model": "mnist", "version": "1", "digit": 7, "probability": 0.9999885559082031,
          "top": [{"label": "7", "probability": 0.9999885559082031}],
          "probabilities": [1.2e-08, 3.4e-07, 2.1e-06, 1.1e-06, 6.5e-09, 2.2e-08, 1.7e-11, 0.9999885559082031,
                            1.3e-08, 7.8e-06],
          "inference_ms": 0.151, "time_ms": 0.912}

app = Flask(__name__)
app.json = OrjsonProvider(app)
app.json.sort_keys = False


@app.get("/v2/health/ready")
def ready():
    return jsonify(ready=True)


@app.post("/predict/digit")
def predict_digit():
    request.get_data()  # the upload is read, as the server reads it
    return jsonify(ANSWER)


def rsgi_app():
    """The app behind the production front, with the server's default limits (granian's factory)."""
    return Front(app.wsgi_app, resolve({"MODELS": "unused"}))
