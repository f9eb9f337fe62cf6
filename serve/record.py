"""What the app notes of the request it handles: its id, when it began, where its time went, which model ran.

One record per request, on ``flask.g``, made by one before_request hook and answered by one
after_request hook: ``X-Request-ID`` (the client's, if short and plain, else a new one) and
``Server-Timing``. serve/errors.py quotes the id in error bodies; serve/metrics.py exports the
figures once the answer is written. Nothing on a record is shared between requests.

Stages (milliseconds, each only when the request had it):

- ``receive``: from the front's first look at the request to its complete body (network time, and
  any wait for the worker's event loop while it ran other requests);
- ``queue``: waiting for a request thread (``REQUEST_THREADS`` > 1);
- ``decode``: turning the body into inputs (JSON parsing, base64, image files decoded);
- ``preprocess``: the bundle's preprocessing (digit images to 28x28, features normalised);
- ``infer``: the model;
- ``encode``: the answer written as JSON or binary tensors.

Routes time their stages with ``stage("decode")``. serve/metrics.py exports the same figures as the
``serve_stage_duration_seconds`` histogram.
"""
from __future__ import annotations

import time

from flask import Flask, g, request

from .errors import REQUEST_ID_HEADER, pick_request_id
from .front import DISPATCHED, RECEIVED

STAGES = ("receive", "queue", "decode", "preprocess", "infer", "encode")
TIMING_HEADER = "Server-Timing"


class Record:
    """One request's id, start, stage times (seconds) and model run; ``with record("decode"): ...`` adds to a stage."""

    __slots__ = ("request_id", "seconds", "started", "model_run", "_name", "_started")

    def __init__(self, request_id: str):
        self.request_id = request_id
        self.seconds: dict[str, float] = {}
        self.started = time.perf_counter()  # when the app began the request
        self.model_run: tuple[str, int] | None = None  # (model name, batch rows) once a model ran

    def elapsed(self) -> float:
        """Seconds since the app began the request."""
        return time.perf_counter() - self.started

    def __call__(self, name: str) -> "Record":
        self._name = name
        return self

    def __enter__(self) -> "Record":
        self._started = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.add(self._name, time.perf_counter() - self._started)

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    def header(self) -> str:
        """The ``Server-Timing`` value: ``decode;dur=0.210, infer;dur=0.074`` (milliseconds, in stage order)."""
        return ", ".join(f"{name};dur={self.seconds[name] * 1000:.3f}" for name in STAGES if name in self.seconds)


def current() -> Record:
    """This request's record."""
    return g.record


def stage(name: str) -> Record:
    """Time a block as stage ``name`` of this request: ``with stage("infer"): ...``."""
    return g.record(name)


def init_app(app: Flask) -> None:
    """Start each request's record with its id and what the front measured; answer both in headers."""

    @app.before_request
    def start():
        environ = request.environ
        record = g.record = Record(pick_request_id(environ.get("HTTP_X_REQUEST_ID")))
        received = environ.get(RECEIVED)
        if received:
            record.add("receive", received[1] - received[0])
            dispatched = environ.get(DISPATCHED)
            if dispatched:
                record.add("queue", time.perf_counter() - dispatched)

    @app.after_request
    def report(response):
        record = g.get("record")
        if record is not None:
            headers = response.headers
            headers[REQUEST_ID_HEADER] = record.request_id
            if record.seconds:
                headers[TIMING_HEADER] = record.header()
        return response
