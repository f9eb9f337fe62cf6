"""serve/json_provider.py: orjson answers are the JSON Flask's own encoder would give."""
import json

import numpy as np
from flask import Flask, jsonify, request

from serve.json_provider import OrjsonProvider


def make_app(sort_keys: bool = False) -> Flask:
    app = Flask(__name__)
    app.json = OrjsonProvider(app)
    app.json.sort_keys = sort_keys
    return app


def test_answers_parse_to_what_was_encoded_in_the_order_written():
    answer = {"model": "mnist", "digit": 7, "probability": float(np.float32(0.9871)),
              "probabilities": [float(p) for p in np.linspace(0, 1, 10, dtype=np.float32)], "label": "七"}
    with make_app().app_context():
        response = jsonify(answer)
    assert response.mimetype == "application/json"
    text = response.get_data(as_text=True)
    assert json.loads(text) == answer
    assert list(json.loads(text)) == list(answer)  # app.json.sort_keys = False is kept
    assert text.endswith("\n")  # as Flask's own provider answers
    assert '"label":"七"' in text  # written by orjson (UTF-8); Flask's encoder would write "\u4e03"


def test_debug_mode_pretty_prints_with_flask():
    app = make_app()
    app.debug = True
    with app.app_context():
        text = jsonify({"b": [1, 2]}).get_data(as_text=True)
    assert json.loads(text) == {"b": [1, 2]} and '\n  "b"' in text  # indented


def test_sort_keys_is_honoured():
    with make_app(sort_keys=True).app_context():
        text = jsonify({"b": 1, "a": 2}).get_data(as_text=True)
    assert text.index('"a"') < text.index('"b"')


def test_what_orjson_refuses_falls_back_to_flask():
    huge = 2 ** 70  # orjson encodes at most 64-bit integers
    with make_app().app_context():
        assert json.loads(jsonify(value=huge).get_data(as_text=True)) == {"value": huge}
        assert json.loads(jsonify({1: "a"}).get_data(as_text=True)) == {"1": "a"}  # non-string keys


def test_request_bodies_are_still_parsed_by_flask():
    app = make_app()

    @app.post("/echo")
    def echo():
        return jsonify(request.get_json())

    response = app.test_client().post("/echo", data='{"x": NaN}', content_type="application/json")
    assert response.status_code == 200  # the standard library accepts NaN, so the API's checks see it
