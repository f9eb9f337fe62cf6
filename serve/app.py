"""The app factory: ``create_app(config)`` for the production server's workers, the development server,
tests and gunicorn.

The production server (serve/server.py) and ``gunicorn 'serve.app:create_app()'`` call it with no
argument in each worker, so every setting can also come from ``SERVE_<KEY>`` environment variables
(see serve/config.py).
"""
from __future__ import annotations

import logging

import cv2
from flask import Flask
from flask.sessions import NullSession, SessionInterface

from . import config as settings_module
from . import errors, metrics, openapi, page, predict, record, v2
from .backends import missing_package
from .batching import InFlight
from .budget import Budget, megabytes
from .json_provider import OrjsonProvider
from .registry import Registry


class NoSessions(SessionInterface):
    """The API keeps no sessions: one shared null session instead of a new one per request."""

    null = NullSession()

    def open_session(self, app, request):
        return self.null

    def save_session(self, app, session, response):
        pass


class App(Flask):
    """Flask, minus what this app never uses on each request: sessions, and a check per hook and view
    (every one of this app's functions is synchronous, so ``ensure_sync`` has nothing to convert;
    Flask's own asks ``inspect`` each time, ~3 us a call)."""

    session_interface = NoSessions()

    def ensure_sync(self, func):
        return func


def create_app(config: dict | None = None) -> Flask:
    """Build the app: settings, error handling, metrics, the model registry, the blueprints.

    Models load in a background thread: the app answers liveness at once and readiness
    (``/v2/health/ready``) once every model is verified and warmed up. ``ValueError`` (one line,
    which ``python -m serve`` prints before exiting 2) for bad settings, a forced backend whose
    package is not installed, or a models folder without any bundle.
    """
    # One OpenCV thread per request thread: requests already run in parallel, and OpenCV's own pool
    # made connected components on a 200x200 drawing 2.5x slower on 2 busy cores (measured).
    cv2.setNumThreads(1)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = settings_module.resolve(config)
    if settings["DEVICE"] == "gpu":
        _require_cuda()
    if why := missing_package(settings["BACKEND"]):  # forced, so every model would be refused: say it once
        raise ValueError(f"--backend {settings['BACKEND']}: {why}")
    app = App(__name__)
    app.json = OrjsonProvider(app)
    app.config["SERVE"] = settings
    # Flask refuses larger bodies with a 413 before reading them (the production front already did).
    app.config["MAX_CONTENT_LENGTH"] = int(settings["MAX_BODY_MB"] * 1024 * 1024)
    app.json.sort_keys = False  # keep answers in the order written: digit before the ten probabilities

    errors.init_app(app)
    record.init_app(app)
    stats = metrics.Metrics()
    metrics.init_app(app, stats)
    app.extensions["in_flight"] = in_flight = InFlight()  # counted by the production front (serve/front.py)
    app.extensions["decode_budget"] = Budget(megabytes(settings["DECODE_BUDGET_MB"]))
    registry = Registry(settings, stats, busy=in_flight)
    app.extensions["registry"] = registry
    for blueprint in (predict.bp, v2.bp, page.bp, openapi.bp):
        app.register_blueprint(blueprint)
    registry.start()
    return app


def _require_cuda() -> None:
    """Refuse --device gpu at once, with the reason, on a CPU-only Paddle build."""
    import paddle

    if not paddle.device.is_compiled_with_cuda():
        raise ValueError("--device gpu needs paddlepaddle-gpu; this Paddle build is CPU-only")
