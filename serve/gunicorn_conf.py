"""gunicorn settings for the server: ``gunicorn -c serve/gunicorn_conf.py 'serve.app:create_app()'``.

Flags given on the command line override these (``-w 4 --threads 2 -b 0.0.0.0:8000``). Keep
workers x threads x SERVE_THREADS <= CPU cores (docs/SERVING.md).
"""
import os
import shutil
import tempfile

bind = os.environ.get("SERVE_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("SERVE_WORKERS", "2"))
threads = int(os.environ.get("SERVE_GUNICORN_THREADS", "1"))
worker_class = "gthread"
timeout = 60
# No preload: each worker builds its own predictors after the fork (Paddle state does not survive fork well).
preload_app = False

# Prometheus multiprocess mode: every worker writes its metrics to files here and /metrics adds
# them up. Must be set before prometheus_client is imported, i.e. here in the master.
if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="serve-prometheus-")


def on_starting(server):
    """Start from empty metric files (a previous run's would be added in)."""
    folder = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder, exist_ok=True)


def post_fork(server, worker):
    """One predictor per gunicorn thread, unless SERVE_POOL_SIZE says otherwise."""
    os.environ.setdefault("SERVE_POOL_SIZE", str(server.cfg.threads))


def child_exit(server, worker):
    """Drop a dead worker's live gauges (in-flight requests, model state)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
