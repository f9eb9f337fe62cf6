"""Prometheus metrics: requests by route and status, latency, in-flight requests, batch sizes, model state
and the backend each model runs on.

Under gunicorn each worker is a process with its own counters. When PROMETHEUS_MULTIPROC_DIR is
set (serve/gunicorn_conf.py sets it), prometheus-client writes them to files in that folder and
``/metrics`` adds up all workers; without it, each scrape sees only the worker that answered.
"""
from __future__ import annotations

import os
import threading
import time

from flask import Blueprint, Flask, Response, current_app, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
STATE_VALUE = {"loading": 0, "ready": 1, "failed": -1}

bp = Blueprint("metrics", __name__)


class Metrics:
    """The metric objects, registered in a registry of their own (so several apps can coexist)."""

    def __init__(self):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("serve_requests_total", "HTTP requests by route, method and status",
                                ["route", "method", "status"], registry=r)
        self.latency = Histogram("serve_request_duration_seconds", "Time to answer, by route", ["route"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.in_flight = Gauge("serve_requests_in_flight", "Requests being handled now", registry=r,
                               multiprocess_mode="livesum")
        self.batch_size = Histogram("serve_batch_size", "Samples per predictor call", ["model"],
                                    buckets=BATCH_BUCKETS, registry=r)
        self.inference = Histogram("serve_inference_duration_seconds", "Predictor call time", ["model"],
                                   buckets=LATENCY_BUCKETS, registry=r)
        self.active = 0  # requests in progress in this process (the gauge may be summed over workers)
        self._lock = threading.Lock()
        self.state = Gauge("serve_model_state", "Model load state: 0 loading, 1 ready, -1 refused",
                           ["model", "version"], registry=r, multiprocess_mode="livemin")
        # Under gunicorn each worker chooses for itself; "livemax": 1 for a backend any live worker chose.
        self.backend = Gauge("serve_model_backend", "1 for the backend serving the model, 0 for the other "
                             "candidates that loaded and matched Paddle Inference", ["model", "version", "backend"],
                             registry=r, multiprocess_mode="livemax")

    def track(self, delta: int) -> None:
        """Count a request in (+1) or out (-1)."""
        with self._lock:
            self.active += delta
        self.in_flight.inc(delta)

    def model_state(self, name: str, version: str, state: str) -> None:
        self.state.labels(name, version).set(STATE_VALUE[state])

    def model_backends(self, name: str, version: str, rows: list[dict]) -> None:
        """The chosen backend 1, the other candidates that passed parity 0 (serve/autoselect.py's table)."""
        for row in rows:
            if row["chosen"] or row["passed"]:
                self.backend.labels(name, version, row["backend"]).set(1 if row["chosen"] else 0)

    def exposition(self) -> bytes:
        """The text format: all workers' values in multiprocess mode, else this process's."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)


def init_app(app: Flask, metrics: Metrics) -> None:
    """Count and time every request (errors included), and serve /metrics."""
    app.extensions["metrics"] = metrics

    @app.before_request
    def start_timer():
        g.started = time.perf_counter()
        metrics.track(+1)
        g.in_flight = True

    @app.teardown_request
    def record(_exc=None):
        # teardown runs even when a handler failed, so in-flight always comes back down.
        if g.pop("in_flight", False):
            metrics.track(-1)

    @app.after_request
    def count(response):
        route = request.url_rule.rule if request.url_rule else "(unmatched)"  # templates: bounded labels
        metrics.requests.labels(route, request.method, str(response.status_code)).inc()
        if "started" in g:
            metrics.latency.labels(route).observe(time.perf_counter() - g.started)
        return response

    app.register_blueprint(bp)


@bp.get("/metrics")
def scrape():
    """Prometheus text exposition."""
    return Response(current_app.extensions["metrics"].exposition(), content_type=CONTENT_TYPE_LATEST)
