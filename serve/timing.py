"""Where a request's time goes: its stages, timed on the request path, answered in a ``Server-Timing`` header.

Stages (milliseconds, each only when the request had it):

- ``receive``: from the front's first look at the request to its complete body (network time, and
  any wait for the worker's event loop while it ran other requests);
- ``queue``: waiting for a request thread (``REQUEST_THREADS`` > 1);
- ``decode``: turning the body into inputs (JSON parsing, base64, image files decoded);
- ``preprocess``: the bundle's preprocessing (digit images to 28x28, features normalised);
- ``infer``: the model;
- ``encode``: the answer written as JSON or binary tensors.

Routes time their stages with ``stage("decode")``; the record lives on the request (``flask.g``),
so nothing here is shared between requests. serve/metrics.py exports the same figures as the
``serve_stage_duration_seconds`` histogram.
"""
from __future__ import annotations

import time

from flask import Flask, g, request

from .front import DISPATCHED, RECEIVED

STAGES = ("receive", "queue", "decode", "preprocess", "infer", "encode")
HEADER = "Server-Timing"


class Stages:
    """One request's stage times, in seconds; ``with stages("decode"): ...`` adds to a stage."""

    __slots__ = ("seconds", "started", "_name", "_started")

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self.started = time.perf_counter()  # when the app began the request

    def elapsed(self) -> float:
        """Seconds since the app began the request."""
        return time.perf_counter() - self.started

    def __call__(self, name: str) -> "Stages":
        self._name = name
        return self

    def __enter__(self) -> "Stages":
        self._started = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.add(self._name, time.perf_counter() - self._started)

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    def header(self) -> str:
        """The ``Server-Timing`` value: ``decode;dur=0.210, infer;dur=0.074`` (milliseconds, in stage order)."""
        return ", ".join(f"{name};dur={self.seconds[name] * 1000:.3f}" for name in STAGES if name in self.seconds)


def current() -> Stages:
    """This request's stages."""
    return g.stages


def stage(name: str) -> Stages:
    """Time a block as stage ``name`` of this request: ``with stage("infer"): ...``."""
    return g.stages(name)


def init_app(app: Flask) -> None:
    """Start each request's record with what the front measured; answer it in ``Server-Timing``."""

    @app.before_request
    def start():
        stages = g.stages = Stages()
        received = request.environ.get(RECEIVED)
        if received:
            stages.add("receive", received[1] - received[0])
            dispatched = request.environ.get(DISPATCHED)
            if dispatched:
                stages.add("queue", time.perf_counter() - dispatched)

    @app.after_request
    def report(response):
        if "stages" in g and g.stages.seconds:
            response.headers[HEADER] = g.stages.header()
        return response
