"""Prometheus metrics: requests by route and status, latency, time per stage, in-flight requests, batch sizes,
model state and the backend each model runs on.

Each worker is a process with its own counters. When PROMETHEUS_MULTIPROC_DIR is set (the
production server and serve/gunicorn_conf.py set it), prometheus-client writes them to files in
that folder and ``/metrics`` adds up all workers; without it, each scrape sees only the worker that
answered. The figures of a request are read once it is answered, from its own record (serve/record.py):
the request path never calls into this module.

In multiprocess mode every update is a write to a memory-mapped file under a lock, and a histogram
observation first searches its buckets in Python: the dozen updates of one request cost about
50 us (bench.request_cost). So requests add to in-memory sums (``Tally``), which a thread writes
every ``FLUSH_S``, and ``/metrics`` writes its own worker's at once before answering: another
worker's last requests may show up to ``FLUSH_S`` late. The in-flight gauge is written at once.
"""
from __future__ import annotations

import atexit
import bisect
import os
import re
import threading
from pathlib import Path

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
FLUSH_S = 0.5  # how often a worker writes its requests' metrics to the shared files

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
        self.stages = Histogram("serve_stage_duration_seconds", "Time per stage of a request (receive, queue, decode, "
                                "preprocess, infer, encode: docs/SERVING.md)", ["route", "stage"],
                                buckets=LATENCY_BUCKETS, registry=r)
        self.state = Gauge("serve_model_state", "Model load state: 0 loading, 1 ready, -1 refused",
                           ["model", "version"], registry=r, multiprocess_mode="livemin")
        # Under gunicorn each worker chooses for itself; "livemax": 1 for a backend any live worker chose.
        self.backend = Gauge("serve_model_backend", "1 for the backend serving the model, 0 for the other "
                             "candidates that loaded and matched Paddle Inference", ["model", "version", "backend"],
                             registry=r, multiprocess_mode="livemax")

        self.tally = Tally()

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


class Tally:
    """Counter increments and histogram observations added up in memory, written to their metrics in batches.

    A histogram's observations become one count per bucket and one sum, written with the
    histogram's own per-bucket values (prometheus-client's ``_buckets`` and ``_sum``, which its
    ``observe`` writes one at a time): the exposition is the same as if each had been observed.
    """

    def __init__(self, interval: float = FLUSH_S):
        self._lock = threading.Lock()
        self._counts: dict = {}
        self._histograms: dict = {}
        self._interval = interval
        self._thread: threading.Thread | None = None

    def inc(self, counter, amount: float = 1.0) -> None:
        """Add ``amount`` to a (labelled) counter."""
        with self._lock:
            self._counts[counter] = self._counts.get(counter, 0.0) + amount
        self._start()

    def observe(self, histogram, value: float) -> None:
        """Observe ``value`` on a (labelled) histogram."""
        bucket = bisect.bisect_left(histogram._upper_bounds, value)  # the first bound >= value, as observe does
        with self._lock:
            sums = self._histograms.get(histogram)
            if sums is None:
                sums = self._histograms[histogram] = [0] * len(histogram._upper_bounds) + [0.0]
            sums[bucket] += 1
            sums[-1] += value
        self._start()

    def flush(self) -> None:
        """Write what was added up since the last flush."""
        with self._lock:
            counts, histograms = self._counts, self._histograms
            self._counts, self._histograms = {}, {}
        for counter, amount in counts.items():
            counter.inc(amount)
        for histogram, sums in histograms.items():
            histogram._sum.inc(sums[-1])
            for bucket, n in enumerate(sums[:-1]):
                if n:
                    histogram._buckets[bucket].inc(n)

    def _start(self) -> None:
        # Started by the first update, in the process that serves (a thread would not survive a fork).
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._loop, name="metrics-flush", daemon=True)
                    self._thread.start()
                    atexit.register(self.flush)

    def _loop(self) -> None:
        while True:
            threading.Event().wait(self._interval)
            self.flush()


def init_app(app: Flask, metrics: Metrics) -> None:
    """Count and time every request (errors included), and serve /metrics."""
    app.extensions["metrics"] = metrics

    @app.before_request
    def count_in():
        metrics.in_flight.inc()
        g.counted_in = True

    @app.teardown_request
    def count_out(_exc=None):
        # teardown runs even when a handler failed, so in-flight always comes back down.
        if g.pop("counted_in", False):
            metrics.in_flight.dec()

    children: dict = {}  # labelled series already looked up (prometheus-client's labels() locks and validates)

    def child(metric, *labels):
        key = (metric, labels)
        found = children.get(key)
        if found is None:
            found = children[key] = metric.labels(*labels)
        return found

    batcher_reports = app.config["SERVE"]["DYNAMIC_BATCHING"]  # the batcher observes its own batch sizes

    @app.after_request
    def export(response):
        req = request._get_current_object()
        route = req.url_rule.rule if req.url_rule else "(unmatched)"  # templates: bounded labels
        tally = metrics.tally
        tally.inc(child(metrics.requests, route, req.method, str(response.status_code)))
        record = g.get("record")
        if record is None:
            return response
        tally.observe(child(metrics.latency, route), record.elapsed())
        for name, seconds in record.seconds.items():
            tally.observe(child(metrics.stages, route, name), seconds)
        if record.model_run is not None:
            model, rows = record.model_run
            tally.observe(child(metrics.inference, model), record.seconds.get("infer", 0.0))
            if not batcher_reports:
                tally.observe(child(metrics.batch_size, model), rows)
        return response

    app.register_blueprint(bp)


_DB_FILE = re.compile(r".*_(\d+)\.db")


def forget_dead_processes() -> None:
    """Drop the live gauges (in-flight requests, model state) of workers that died, whose files stay behind.

    Called by each worker as it starts, so a worker that replaced a crashed one does not add the
    crashed one's last in-flight count to every scrape. Counters of dead workers are kept: their
    requests did happen.
    """
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not folder:
        return
    pids = {int(m.group(1)) for f in Path(folder).glob("*.db") if (m := _DB_FILE.fullmatch(f.name))}
    for pid in pids:
        try:
            os.kill(pid, 0)  # signal 0: only asks whether the process exists
        except ProcessLookupError:
            multiprocess.mark_process_dead(pid, folder)
        except PermissionError:  # exists, and belongs to someone else
            pass


@bp.get("/metrics")
def scrape():
    """Prometheus text exposition."""
    metrics = current_app.extensions["metrics"]
    metrics.tally.flush()  # this worker's latest requests, at once
    return Response(metrics.exposition(), content_type=CONTENT_TYPE_LATEST)
