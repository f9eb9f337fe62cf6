"""What one request costs the server, piece by piece, on the production request path in one process.

    nice python -m bench.request_cost --models DIR [--calls 2000]

DIR holds a digits bundle named ``mnist``. The app is built as a production worker builds it
(Prometheus in multiprocess mode, one predictor) and driven through serve/front.py exactly as
granian drives it, minus granian's own Rust side (bench.serve_load measures the whole server): a
V2 JSON request (the first MNIST test digit, 16 kB) and the drawing page's 200x200 PNG. Pieces
are timed round-robin, one call of each per round, as this process's CPU time, medians:

  - each whole request, and the same through Flask alone (an empty route behind the same front);
  - the model called directly, the preprocessing of the PNG, the JSON parse of the V2 body;
  - each request hook of the app, as what the whole request costs less when that hook is left out.

Writes the ``request_cost`` section of docs/BENCHMARKS.md (quiet machine only, as every bench).
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

# As the production server does: multiprocess metrics, decided when prometheus_client is imported.
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="request-cost-prom-"))

import numpy as np  # noqa: E402

from bench.harness import SHARED_DATA, LoadWatch, add_write_flags  # noqa: E402
from bench.report import publish  # noqa: E402
from bench.serve_load import digit_png  # noqa: E402


class Headers:
    """granian's RSGI headers, as far as the front reads them."""

    def __init__(self, items: list[tuple[str, str]]):
        self._items = items

    def items(self):
        return list(self._items)

    def get_all(self, name: str) -> list[str]:
        return [v for k, v in self._items if k == name]

    def get(self, name: str, default=None):
        return next((v for k, v in self._items if k == name), default)

    def __contains__(self, name: str) -> bool:
        return any(k == name for k, _ in self._items)


class Scope:
    proto, query_string, client, http_version, scheme = "http", "", "127.0.0.1:50000", "1.1", "http"

    def __init__(self, method: str, path: str, body: bytes, content_type: str):
        self.method, self.path = method, path
        self.headers = Headers([("host", "127.0.0.1:8000"), ("content-type", content_type),
                                ("content-length", str(len(body)))])


class Protocol:
    """granian's RSGI protocol for one request whose whole body has arrived."""

    def __init__(self, loop, body: bytes):
        self.loop, self.body, self.status = loop, body, None

    def __call__(self):
        future = self.loop.create_future()
        future.set_result(self.body)
        return future

    def response_bytes(self, status, headers, body):
        self.status = status


def driver(front, method: str, path: str, body: bytes, content_type: str):
    """A function that runs one request through ``front``'s RSGI entry point and checks it answered 200."""
    loop = asyncio.new_event_loop()
    scope = Scope(method, path, body, content_type)

    def one():
        proto = Protocol(loop, body)
        loop.run_until_complete(front.__rsgi__(scope, proto))
        assert proto.status == 200, proto.status
    return one


def round_robin(pieces: dict, calls: int) -> dict:
    """Median CPU microseconds of each piece, called once each per round (a piece that returns a float
    measured itself: that float, in seconds)."""
    for fn in pieces.values():
        for _ in range(min(100, calls)):
            fn()
    times = {name: [] for name in pieces}
    for _ in range(calls):
        for name, fn in pieces.items():
            started = time.process_time()
            result = fn()
            times[name].append(result if type(result) is float else time.process_time() - started)
    return {name: float(np.median(t)) * 1e6 for name, t in times.items()}


def without_hook(app, name: str, fn):
    """``fn`` run with the app's request hook ``name`` left out."""
    def run():
        saved = {kind: dict(getattr(app, kind)) for kind in HOOK_LISTS}
        try:
            for kind in HOOK_LISTS:
                hooks = getattr(app, kind)
                hooks[None] = [h for h in hooks.get(None, []) if h.__name__ != name]
            fn()
        finally:
            for kind in HOOK_LISTS:
                getattr(app, kind).update(saved[kind])
    return run


def hook_cost(app, name: str, fn):
    """What hook ``name`` adds to ``fn``: ``fn`` with it, less ``fn`` without it, timed back to back in each
    round, which of the two goes first alternating (the first of two calls finds colder caches)."""
    ablated = without_hook(app, name, fn)
    whole = without_hook(app, "", fn)  # the same bookkeeping, no hook left out
    rounds = [0]

    def timed(call) -> float:
        started = time.process_time()
        call()
        return time.process_time() - started

    def pair() -> float:
        rounds[0] += 1
        if rounds[0] % 2:
            with_it = timed(whole)
            return with_it - timed(ablated)
        without = timed(ablated)
        return timed(whole) - without
    return pair


HOOK_LISTS = ("before_request_funcs", "after_request_funcs", "teardown_request_funcs")


def measure(models: Path, data_dir: Path, calls: int) -> dict:
    import orjson
    from flask import Flask, Response

    from common.datasets import read_mnist
    from common.digit_image import normalize
    from serve.app import create_app
    from serve.front import Front

    app = create_app({"MODELS": str(models), "POOL_SIZE": 1})
    app.extensions["registry"].done.wait(300)
    front = Front(app.wsgi_app, app.config["SERVE"], app.extensions["in_flight"])
    x = normalize(read_mnist("test", data_dir, limit=1)[0][:1])
    v2 = orjson.dumps({"inputs": [{"name": "image", "shape": list(x.shape), "datatype": "FP32",
                                   "data": x.ravel().tolist()}]})
    png = digit_png(data_dir)
    bare = Flask("bare")
    bare.add_url_rule("/empty", "empty", lambda: Response(b"ok"))
    mv = app.extensions["registry"].find("mnist")
    header = mv.pipeline.header(png)
    v2_request = driver(front, "POST", "/v2/models/mnist/infer", v2, "application/json")
    pieces = {
        "v2": v2_request,
        "digit": driver(front, "POST", "/predict/digit", png, "image/png"),
        "bare": driver(Front(bare.wsgi_app, app.config["SERVE"]), "GET", "/empty", b"", "text/plain"),
        "model": lambda: mv.runner.run([x]),
        "preprocess": lambda: mv.pipeline.model_input(mv.pipeline.decode(png, 25_000_000, header)),
        "json": lambda: np.asarray(orjson.loads(v2)["inputs"][0]["data"], np.float32),
    }
    hooks = {h.__name__ for kind in HOOK_LISTS for h in getattr(app, kind).get(None, [])}
    needed = []
    for name in sorted(hooks):
        if answers(without_hook(app, name, v2_request)):
            pieces[f"hook:{name}"] = hook_cost(app, name, v2_request)
        else:
            needed.append(name)
    return {"us": round_robin(pieces, calls), "platform": mv.platform, "needed": needed}


def answers(request) -> bool:
    """Whether ``request`` still answers 200 (a hook the routes rely on cannot be left out)."""
    logging.disable(logging.ERROR)  # the route's own error log of the failed try
    try:
        request()
        return True
    except AssertionError:
        return False
    finally:
        logging.disable(logging.NOTSET)


def markdown(result: dict, watch: LoadWatch) -> str:
    us = result["us"]
    rows = [("V2 JSON request, whole (`POST /v2/models/mnist/infer`, 16 kB)", us["v2"]),
            ("drawing request, whole (`POST /predict/digit`, 200x200 PNG)", us["digit"]),
            ("Flask alone: an empty route behind the same front", us["bare"]),
            (f"the model ({result['platform']}), called directly at batch 1", us["model"]),
            ("the PNG's decoding and preprocessing, called directly", us["preprocess"]),
            ("the V2 body parsed (orjson) into a float32 array", us["json"])]
    rows += [(f"hook `{name[5:]}`: the V2 request with it, less without it", value)
             for name, value in sorted(us.items()) if name.startswith("hook:")]
    lines = ["CPU time of this process per request (medians, pieces timed round-robin), through serve/front.py as "
             "granian calls it (granian's Rust side and the network are not here: bench.serve_load).", "",
             "| piece | CPU us |", "|---|---:|"]
    lines += [f"| {label} | {value:.1f} |" for label, value in rows]
    if result["needed"]:
        lines += ["", "Not timed alone, because the routes need them: "
                  + ", ".join(f"hook `{name}`" for name in result["needed"]) + "."]
    return "\n".join(lines) + "\n\n" + watch.note() + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.request_cost", description=__doc__.split("\n\n")[0])
    p.add_argument("--models", required=True, type=Path, help="folder with a digits bundle named mnist")
    p.add_argument("--data-dir", type=Path, default=SHARED_DATA, help="MNIST files (for the test digit)")
    p.add_argument("--calls", type=int, default=2000, help="calls per piece (default: %(default)s)")
    add_write_flags(p)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)  # the app's INFO lines at load are not what is measured
    watch = LoadWatch()
    result = measure(args.models.resolve(), args.data_dir, args.calls)
    command = "nice python -m bench.request_cost " + " ".join(argv if argv is not None else sys.argv[1:])
    publish("request_cost", "Serving: what one request costs, piece by piece (in-process)", markdown(result, watch),
            command, watch, args.allow_busy, write=not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
