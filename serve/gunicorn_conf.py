"""gunicorn settings for the server: ``gunicorn -c serve/gunicorn_conf.py 'serve.app:create_app()'``.

Flags given on the command line override these (``-w 4 --threads 2 -b 0.0.0.0:8000``); their
defaults come from serve/config.py (SERVE_BIND, SERVE_WORKERS, SERVE_REQUEST_THREADS). gunicorn's
``--threads`` are HTTP threads per worker; unless SERVE_POOL_SIZE is set, each worker also gets that
many predictors per model (``post_fork`` below). Keep workers (``-w``) x SERVE_POOL_SIZE x
SERVE_THREADS (math threads per predictor) <= CPU cores: docs/SERVING.md, "Thread arithmetic".
"""
import os
import tempfile
from pathlib import Path

# Prometheus multiprocess mode: every worker writes its metrics to files here and /metrics adds
# them up. Must be set before prometheus_client is imported (serve.config imports the app's
# package, which imports it), i.e. here, first, in the master.
if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="serve-prometheus-")

from serve.config import resolve  # noqa: E402

_settings = resolve(None)
bind = _settings["BIND"]
workers = _settings["WORKERS"]
threads = _settings["REQUEST_THREADS"]
# No worker_class: gunicorn runs its sync worker for --threads 1 (one request at a time, the
# connection closed after each: the least CPU per request, measured in docs/BENCHMARKS.md) and its
# gthread worker for --threads N > 1 (keep-alive, N requests at once: what slow clients and dynamic
# batching need). docs/SERVING.md, "Worker types".
timeout = 60
# No preload: each worker builds its own predictors after the fork (Paddle state does not survive fork well).
preload_app = False


def on_starting(server):
    """Start without a previous run's metric files (they would be added in).

    Only prometheus-client's own ``*.db`` files are deleted: PROMETHEUS_MULTIPROC_DIR may be a
    folder of the user's that holds other things. The folder is created if missing.
    """
    folder = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.db"):
        if stale.is_file():
            stale.unlink(missing_ok=True)


def post_worker_init(worker):
    """Take requests only once this worker's models are loaded, with gunicorn's own signal handlers.

    Each worker loads its models in a background thread and readiness answers per worker: without
    this wait a probe could see one worker ready while another (or one gunicorn just restarted)
    still answers 503. While waiting, the worker keeps telling the arbiter it is alive. Paddle puts
    its own SIGTERM handler in place when it loads; gunicorn's, put back here, lets a worker finish
    its in-flight requests on shutdown.
    """
    registry = worker.wsgi.extensions["registry"]
    while not registry.done.wait(1.0):
        worker.notify()
    worker.init_signals()


def post_fork(server, worker):
    """One predictor per gunicorn thread, unless SERVE_POOL_SIZE says otherwise."""
    os.environ.setdefault("SERVE_POOL_SIZE", str(server.cfg.threads))


def child_exit(server, worker):
    """Drop a dead worker's live gauges (in-flight requests, model state)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
