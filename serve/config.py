"""The server's settings: every default in one block, read from a dict, the environment or the command line.

The same keys appear three ways: ``create_app({"THREADS": 2})``, ``SERVE_THREADS=2`` (what gunicorn
deployments use, since ``gunicorn 'serve.app:create_app()'`` passes no arguments) and ``--threads 2``.
The gunicorn keys (BIND, WORKERS, GUNICORN_THREADS) are read by serve/gunicorn_conf.py.
"""
from __future__ import annotations

import argparse
import os

from flask import current_app

from common.runtimes import RUNTIMES

ENV_PREFIX = "SERVE_"

# Every setting and its default. Types come from the defaults (env values are parsed to them).
DEFAULTS: dict = {
    "MODELS": "bundles",           # folder of bundles: DIR/<name>/ or DIR/<name>/<version>/ (not the models/ package)
    "DEVICE": "cpu",               # cpu | gpu
    "THREADS": 1,                  # math threads per predictor (intra-op threads for onnxruntime)
    "MKLDNN": True,                # oneDNN on CPU: ~2x faster convolutions here (docs/SERVING.md)
    "IR_OPTIM": True,              # Paddle graph optimisation passes (fusions)
    "MEMORY_OPTIM": False,         # buffer reuse; fails to load PIR bundles in Paddle 3.3.1 (docs/SERVING.md)
    "TENSORRT": False,             # GPU only: run supported subgraphs with TensorRT
    "BACKEND": "auto",             # auto: the fastest that matches Paddle Inference | paddle | onnxruntime | openvino
    "POOL_SIZE": 4,                # predictors per model (clones); set it to the server's threads
    "POOL_TIMEOUT_S": 30.0,        # a request waits this long for a free predictor, then gets a 503
    "MAX_BODY_MB": 10.0,           # larger requests get a 413
    "MAX_IMAGES": 64,              # images (or houses) per request
    "MAX_PIXELS": 25_000_000,      # per image, checked from the header before decoding
    "DYNAMIC_BATCHING": False,     # combine concurrent requests into one predictor call
    "MAX_BATCH_SIZE": 16,          # ... at most this many samples per call
    "MAX_DELAY_MS": 2.0,           # ... waiting at most this long for more requests
    "WARMUP_BATCHES": 3,           # dummy batches per predictor before a model reports ready
    # gunicorn only (serve/gunicorn_conf.py); its own -b/-w/--threads flags override these
    "BIND": "127.0.0.1:8000",      # address:port
    "WORKERS": 2,                  # worker processes
    "GUNICORN_THREADS": 1,         # HTTP threads per worker (and, unless POOL_SIZE is set, predictors per model)
}
CHOICES = {"DEVICE": ("cpu", "gpu"), "BACKEND": ("auto", *RUNTIMES)}


def current() -> dict:
    """The settings of the app handling this request."""
    return current_app.config["SERVE"]


def _parse(key: str, text: str):
    """Convert an environment string to the type of ``DEFAULTS[key]``."""
    default = DEFAULTS[key]
    if isinstance(default, bool):
        if text.strip().lower() in ("1", "true", "yes", "on"):
            return True
        if text.strip().lower() in ("0", "false", "no", "off", ""):
            return False
        raise ValueError(f"{ENV_PREFIX}{key}={text!r} is not a boolean (use 1/0, true/false)")
    try:
        return type(default)(text)
    except ValueError:
        raise ValueError(f"{ENV_PREFIX}{key}={text!r} is not a valid {type(default).__name__}") from None


def from_env(environ=os.environ) -> dict:
    """The settings given as ``SERVE_<KEY>`` environment variables."""
    return {key: _parse(key, environ[ENV_PREFIX + key]) for key in DEFAULTS if ENV_PREFIX + key in environ}


def resolve(config: dict | None) -> dict:
    """Defaults, overridden by the environment, overridden by ``config``; validated."""
    settings = {**DEFAULTS, **from_env(), **(config or {})}
    for key, allowed in CHOICES.items():
        if settings[key] not in allowed:
            raise ValueError(f"{key} must be one of {', '.join(allowed)}, got {settings[key]!r}")
    for key in ("THREADS", "POOL_SIZE", "MAX_IMAGES", "MAX_BATCH_SIZE", "WARMUP_BATCHES", "WORKERS", "GUNICORN_THREADS"):
        if int(settings[key]) < (0 if key == "WARMUP_BATCHES" else 1):
            raise ValueError(f"{key} must be a positive integer, got {settings[key]!r}")
    if settings["MAX_BODY_MB"] <= 0:
        raise ValueError(f"MAX_BODY_MB must be positive, got {settings['MAX_BODY_MB']!r}")
    return settings


# Flags of ``python -m serve``: (flag, argparse options, help). Each maps to the settings key of the
# same name; the default at the end of each help line is generated from DEFAULTS.
FLAGS: list[tuple[str, dict, str]] = [
    ("--device", {"choices": CHOICES["DEVICE"]}, "where predictors run"),
    ("--threads", {"type": int}, "math threads per predictor (intra-op threads for onnxruntime); not gunicorn's "
     "--threads, which are HTTP threads"),
    ("--mkldnn", {"action": argparse.BooleanOptionalAction}, "oneDNN on CPU"),
    ("--max-body-mb", {"type": float}, "request size limit, 413 above"),
    ("--backend", {"choices": CHOICES["BACKEND"]}, "inference engine; auto: per model, the fastest of those "
     "that give Paddle Inference's answers on the bundle's samples (docs/SERVING.md, Backends)"),
    ("--pool-size", {"type": int}, "predictors per model, one per concurrent request"),
    ("--dynamic-batching", {"action": argparse.BooleanOptionalAction}, "combine concurrent requests into one "
     "predictor call"),
    ("--max-batch-size", {"type": int}, "dynamic batching: samples per call"),
    ("--max-delay-ms", {"type": float}, "dynamic batching: how long to wait for more requests"),
    ("--tensorrt", {"action": argparse.BooleanOptionalAction}, "GPU only: TensorRT subgraphs"),
    ("--warmup-batches", {"type": int}, "dummy batches per predictor before a model reports ready"),
]


def build_parser() -> argparse.ArgumentParser:
    """Command-line flags of ``python -m serve``; each maps to one settings key."""
    p = argparse.ArgumentParser(prog="python -m serve", description="Serve exported bundles over HTTP "
                                "(Flask development server; use gunicorn in production, see docs/SERVING.md).")
    p.add_argument("--models", default=os.environ.get("SERVE_MODELS", DEFAULTS["MODELS"]),
                   help="folder of bundles, one subfolder per model, optionally with version subfolders 1/, 2/ ... "
                        "(default: $SERVE_MODELS or %(default)s); the server refuses to start if it holds none")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    p.add_argument("--port", type=int, default=8000, help="port (default: %(default)s)")
    for flag, options, text in FLAGS:
        default = DEFAULTS[flag[2:].replace("-", "_").upper()]
        shown = ("on" if default else "off") if isinstance(default, bool) else default
        p.add_argument(flag, default=None, help=f"{text} (default: {shown})", **options)
    return p


def from_args(args: argparse.Namespace) -> dict:
    """The settings given on the command line (flags left unset fall back to env, then defaults)."""
    given = {key.upper(): value for key, value in vars(args).items() if value is not None}
    return {key: given[key] for key in DEFAULTS if key in given}
