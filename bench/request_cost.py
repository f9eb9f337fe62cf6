"""What one ``POST /predict/digit`` costs the server, piece by piece, in one process (Flask's test client).

    nice python -m bench.request_cost --models DIR [--calls 2000] [--backend auto]

DIR holds a digits bundle named ``mnist``. The app is built as gunicorn builds it (Prometheus in
multiprocess mode, files in a temporary folder; one predictor), and every piece is timed alone on
the same 200x200 PNG as bench/serve_load.py, as the median over ``--calls`` rounds. The pieces
are timed round-robin, one call of each per round, so that all of them see the same machine
(timed one after the other, a busy machine's ups and downs land on some pieces and not others):
  - the whole request through Flask's test client, and an empty route on a bare Flask app and on
    ours: werkzeug + Flask dispatch, and what our before/after hooks add (request id, metrics);
  - decoding + preprocessing (split into the header check, the PNG decode and the 28x28 making),
    and the backend called directly;
  - the Prometheus writes of one request (multiprocess mmap files vs in-memory values);
  - the hand-offs alone (wall time), around a backend that returns at once;
  - JSON encoding of the answer, the request id, and the log records a request emits.
The pieces do not add up to the whole exactly (the test client builds a WSGI environ, the route
code runs), and gunicorn's HTTP parsing is not here: bench/serve_load.py has the server's CPU per
request under gunicorn. Prints the table, or with ``--write`` (quiet machine only, like the other
benches) puts it in the ``request_cost`` section of docs/BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# As serve/gunicorn_conf.py does: multiprocess metrics, decided when prometheus_client is imported.
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="request-cost-prom-"))

from bench.report import MAX_START_LOAD  # noqa: E402
from bench.serve_load import digit_png  # noqa: E402

CONTENT = {"content_type": "image/png"}


def round_robin(pieces: dict, calls: int, clock=time.process_time) -> dict:
    """Median microseconds of ``clock`` for each of ``pieces`` (name -> function), called once each per round.

    The default clock is this process's CPU time (all its threads, so a predictor thread's work
    counts): on a busy machine a 3 ms piece is often preempted and its wall time doubles, while
    a 0.1 ms piece rarely is, so wall-time pieces would not add up to the wall-time whole.
    """
    for fn in pieces.values():
        for _ in range(min(50, calls)):
            fn()
    times = {name: [] for name in pieces}
    for _ in range(calls):
        for name, fn in pieces.items():
            started = clock()
            fn()
            times[name].append(clock() - started)
    return {name: float(np.median(t)) * 1e6 for name, t in times.items()}


def median_us(fn, calls: int) -> float:
    """Median microseconds of ``fn()`` over ``calls`` calls, after a warm-up."""
    for _ in range(min(50, calls)):
        fn()
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return float(np.median(times)) * 1e6


def make_app(models: Path, backend: str, batching: bool):
    """The server's app with one predictor, loaded and warmed up, and an empty route ``/_bench/empty``."""
    from flask import Response

    from serve.app import create_app

    app = create_app({"MODELS": str(models), "BACKEND": backend, "POOL_SIZE": 1, "DYNAMIC_BATCHING": batching})
    app.add_url_rule("/_bench/empty", "bench_empty", lambda: Response(b"ok"))
    registry = app.extensions["registry"]
    registry.done.wait(300)
    if not registry.is_ready():
        raise RuntimeError("the model did not load; see the log above")
    return app


def request_pieces(app, body: bytes, calls: int) -> dict:
    """The whole request, the empty route on a bare Flask app and on ours (test client), the
    preprocessing steps, and the backend called directly in this thread; round-robin."""
    import cv2
    from flask import Flask, Response

    from common import digit_image
    from common.bundle import PredictorRunner, create_predictor

    bare = Flask("bare")
    bare.add_url_rule("/_bench/empty", "bench_empty", lambda: Response(b"ok"))
    bare_client, client = bare.test_client(), app.test_client()
    response = client.post("/predict/digit", data=body, **CONTENT)
    assert response.status_code == 200, response.get_data(as_text=True)
    mv = app.extensions["registry"].find("mnist")
    pre, limit = mv.pipeline.preprocessor, app.config["SERVE"]["MAX_PIXELS"]
    _, x = mv.pipeline.preview_and_inputs(body, limit)
    image = pre.decode(body, limit)
    if mv.platform == "paddle_inference":  # the pool's thread hand-off vs a predictor in this thread
        direct = PredictorRunner(create_predictor(mv.bundle, threads=1)).run
    else:
        direct = getattr(mv.runner, "backend", mv.runner).run  # under a DynamicBatcher, the backend it wraps
    pieces = {"whole": lambda: client.post("/predict/digit", data=body, **CONTENT),
              "bare_empty": lambda: bare_client.get("/_bench/empty"),
              "our_empty": lambda: client.get("/_bench/empty"),
              "preprocess": lambda: mv.pipeline.preview_and_inputs(body, limit),
              "header": lambda: digit_image._read_header(body),
              "imdecode": lambda: cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_UNCHANGED),
              "to_mnist": lambda: pre.normalize(pre.to_mnist(image)),
              "direct": lambda: direct([x])}
    wall = round_robin({"whole_wall": pieces["whole"]}, calls, time.perf_counter)
    return {**round_robin(pieces, calls), **wall, "platform": mv.platform, "answer": response.get_json()}


class NullBackend:
    """Answers at once: what is left of a call through a wrapper is the wrapper's own cost."""

    name = "null"

    def run(self, inputs):
        return inputs

    def close(self):
        pass


def handoff_pieces(calls: int) -> dict:
    """The hand-offs alone, around a backend that costs nothing: Paddle's predictor thread, the batcher."""
    from concurrent.futures import Future

    from serve.backends import PaddleBackend
    from serve.batching import DynamicBatcher

    x = [np.zeros((1, 1, 28, 28), np.float32)]
    pool = PaddleBackend.__new__(PaddleBackend)  # its run() and thread loop, with a null predictor
    pool.timeout, pool.size = 30.0, 1
    import queue
    import threading

    pool.jobs = queue.Queue()

    def serve():
        while (job := pool.jobs.get()) is not None:
            inputs, future = job
            if future.set_running_or_notify_cancel():
                future.set_result(inputs)

    threading.Thread(target=serve, daemon=True).start()
    batcher = DynamicBatcher(NullBackend(), 16, 2.0, 30.0, busy=lambda: 1)  # alone: no waiting for company
    result = {"thread": median_us(lambda: pool.run(x), calls), "batcher": median_us(lambda: batcher.run(x), calls),
              "future": median_us(lambda: Future().set_result(1), calls)}
    pool.close()
    return result


def metric_pieces(app, calls: int) -> dict:
    """The metric writes of one digit request, in multiprocess mode (as under gunicorn) and in memory."""
    from prometheus_client import values

    from serve import metrics as metrics_module

    def writes(m):
        def one_request():
            m.track(+1)
            m.batch_size.labels("mnist").observe(1)
            m.inference.labels("mnist").observe(0.0003)
            m.requests.labels("/predict/digit", "POST", "200").inc()
            m.latency.labels("/predict/digit").observe(0.002)
            m.track(-1)
        return one_request

    multiprocess = median_us(writes(app.extensions["metrics"]), calls)
    saved, values.ValueClass = values.ValueClass, values.MutexValue
    try:
        in_memory = metrics_module.Metrics()
    finally:
        values.ValueClass = saved
    return {"multiprocess": multiprocess, "in_memory": median_us(writes(in_memory), calls)}


def misc_pieces(app, answer: dict, body: bytes, calls: int) -> dict:
    """JSON encoding of the answer, a request id, and log records per request."""
    import uuid

    from flask import jsonify

    from serve.errors import _SANE_ID

    with app.app_context():
        encode = median_us(lambda: jsonify(answer), calls)
    records = []

    class Count(logging.Handler):
        def emit(self, record):
            records.append(record)

    counter = Count(level=logging.DEBUG)
    root = logging.getLogger()
    root.addHandler(counter)
    client = app.test_client()
    try:
        for _ in range(100):
            client.post("/predict/digit", data=body, **CONTENT)
    finally:
        root.removeHandler(counter)
    return {"json": encode, "request_id": median_us(lambda: _SANE_ID.match("") or uuid.uuid4().hex, calls),
            "log_records": len(records) / 100}


def table(t: dict, handoff: dict, metrics: dict, misc: dict) -> str:
    whole = t["whole"]
    # Paddle predictors run in their own threads (serve/backends.py); onnxruntime and OpenVINO in the request's.
    handoff_us = handoff["thread"] if t["platform"] == "paddle_inference" else 0.0
    rows = [
        ("whole request, Flask test client (`POST /predict/digit`, 200x200 PNG)", t["whole"]),
        ("decode + preprocess (DigitPipeline)", t["preprocess"]),
        ("  of which the header check (Pillow: size, PNG chunk CRCs; before any pixel is decoded)", t["header"]),
        ("  of which the PNG decode (cv2.imdecode)", t["imdecode"]),
        ("  of which finding, cropping, centring the digit, normalising (to_mnist)", t["to_mnist"]),
        (f"backend {t['platform']}, called directly", t["direct"]),
        (f"the predictor-thread hand-off ({t['platform']}; wall time around a backend that does nothing)",
         handoff_us),
        ("werkzeug + Flask: empty route on a bare Flask app (test client)", t["bare_empty"]),
        ("our before/after hooks: empty route on our app minus the bare app", t["our_empty"] - t["bare_empty"]),
        ("  of which Prometheus writes of one request, multiprocess files (as under gunicorn)", metrics["multiprocess"]),
        ("  of which the request id (uuid4)", misc["request_id"]),
        ("JSON encoding of the answer (jsonify)", misc["json"]),
    ]
    counted = [us for label, us in rows[1:] if not label.startswith("  ")]
    rows.append(("the rest: route code (model lookup, answer building), test-client environ", whole - sum(counted)))
    lines = ["CPU time of this process per request (medians, pieces timed round-robin):", "",
             "| piece | CPU us per request | share of the whole |", "|---|---:|---:|"]
    lines += [f"| {label} | {us:.1f} | {us / whole:.0%} |" for label, us in rows]
    lines += ["", f"For reference: the whole request's wall time {t['whole_wall']:.1f} us; Prometheus writes of one request in memory (no multiprocess mode) "
                  f"{metrics['in_memory']:.1f} us; Paddle Inference's predictor-thread hand-off around a backend that "
                  f"does nothing {handoff['thread']:.1f} us, the dynamic batcher's {handoff['batcher']:.1f} us "
                  f"(alone, so it does not wait; a Future alone {handoff['future']:.1f} us); "
                  f"log records per request: {misc['log_records']:g} (gunicorn's access log is off by default). "
                  "Pieces marked \"of which\" are timed alone and are part of the line above them."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.request_cost", description=__doc__.split("\n\n")[0])
    p.add_argument("--models", required=True, help="folder with a digits bundle named mnist")
    p.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"), help="MNIST files (for the test digit)")
    p.add_argument("--backend", default="auto", choices=("auto", "paddle", "onnxruntime", "openvino"),
                   help="the server's --backend (default: %(default)s)")
    p.add_argument("--calls", type=int, default=2000, help="calls per piece (default: %(default)s)")
    p.add_argument("--write", action="store_true", help="write the request_cost section of docs/BENCHMARKS.md "
                   f"(refused when the load average at the start is above {MAX_START_LOAD})")
    args = p.parse_args(argv)
    start_load = os.getloadavg()[0]
    logging.basicConfig(level=logging.WARNING)  # the app's INFO lines at load are not what is measured
    body = digit_png(Path(args.data_dir))
    app = make_app(Path(args.models).resolve(), args.backend, batching=False)
    pieces = request_pieces(app, body, args.calls)
    text = table(pieces, handoff_pieces(args.calls), metric_pieces(app, args.calls),
                 misc_pieces(app, pieces["answer"], body, args.calls))
    load = f"{start_load:.2f} at the start, {os.getloadavg()[0]:.2f} at the end"
    text += f"\n\nLoad average (1 min, {os.cpu_count()} cores): {load}."
    print(text)
    if args.write:
        from bench.report import busy_banner, update_section

        text = busy_banner(start_load, allow_busy=False) + text

        command = "nice python -m bench.request_cost " + " ".join(argv if argv is not None else sys.argv[1:])
        update_section("request_cost", "Serving: what one request costs, piece by piece (in-process)", command, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
