"""The production server: granian with ``WORKERS`` processes, each running the Flask app behind serve/front.py.

``python -m serve --models DIR`` (or ``paddle-deploy serve``) calls ``run``. What it guarantees
(docs/SERVING.md, "Production server"):

- a worker takes connections only once its models are verified and warmed up (``worker_app``
  returns after the registry's loading is done; until then connections wait in the listen backlog);
- on SIGTERM the server stops accepting, requests in flight get ``GRACEFUL_TIMEOUT_S`` to finish,
  then it exits; a worker that dies is replaced;
- ``/metrics`` adds up every worker (prometheus-client's multiprocess folder, prepared here before
  any worker starts);
- the limits of serve/front.py and serve/config.py hold for every client, with no proxy in front.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from . import config

METRICS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
HEADER_TIMEOUT_MAX_MS = 60_000  # granian's own bound


def run(settings: dict) -> int:
    """Serve until SIGTERM or SIGINT; 0 after a clean stop, 1 if the workers could not be kept running."""
    from granian import Granian
    from granian.constants import HTTPModes, Interfaces
    from granian.http import HTTP1Settings

    prepare_metrics_dir()
    os.environ.update(config.to_env(settings))  # what every worker's create_app() reads
    host, _, port = settings["BIND"].rpartition(":")
    header_ms = min(HEADER_TIMEOUT_MAX_MS, max(1, int(settings["HEADER_TIMEOUT_S"] * 1000)))
    server = Granian(
        "serve.server:worker_app", factory=True, interface=Interfaces.RSGI, address=host or "0.0.0.0",
        port=int(port), workers=settings["WORKERS"], http=HTTPModes.http1, websockets=False,
        backpressure=settings["MAX_CONNECTIONS"], backlog=max(1024, 2 * settings["MAX_CONNECTIONS"]),
        http1_settings=HTTP1Settings(header_read_timeout=header_ms, keep_alive=True),
        respawn_failed_workers=True, workers_kill_timeout=max(1, round(settings["GRACEFUL_TIMEOUT_S"])))
    server.serve()
    return 0 if server.interrupt_signal else 1


def worker_app():
    """granian's factory, called once in each worker: the app, once its models are ready, behind the front."""
    from . import metrics
    from .app import create_app
    from .front import Front

    settings = config.resolve(None)
    metrics.forget_dead_processes()
    app = create_app(settings)
    app.extensions["registry"].done.wait()
    return Front(app.wsgi_app, settings, app.extensions["in_flight"])


def prepare_metrics_dir() -> Path:
    """The Prometheus multiprocess folder (made, or ``$PROMETHEUS_MULTIPROC_DIR``), emptied of a previous run's files.

    Set in the environment before any worker imports prometheus-client, which reads it at import.
    Only prometheus-client's own ``*.db`` files are deleted: the folder may be the user's.
    """
    folder = Path(os.environ.get(METRICS_DIR_VARIABLE) or tempfile.mkdtemp(prefix="serve-prometheus-"))
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.db"):
        if stale.is_file():
            stale.unlink(missing_ok=True)
    os.environ[METRICS_DIR_VARIABLE] = str(folder)
    return folder
