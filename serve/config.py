"""The server's settings: every default in one table, read from a dict, the environment or the command line.

The same keys appear three ways: ``create_app({"THREADS": 2})``, ``SERVE_THREADS=2`` (containers,
and how ``python -m serve`` hands its flags to its worker processes) and ``--threads 2``. Each
setting's flag and help text are generated from the table below, so they cannot drift apart.
"""
from __future__ import annotations

import argparse
import os

from flask import current_app

from common.runtimes import RUNTIMES

ENV_PREFIX = "SERVE_"

# Every setting: its default (whose type is the setting's type) and what it means. The flag of
# KEY is --key (underscores as dashes); booleans get --key/--no-key.
SETTINGS: dict[str, tuple[object, str]] = {
    # What is served, and how the models run
    "MODELS": ("bundles", "folder of bundles: DIR/NAME/ or DIR/NAME/VERSION/ (not the project's models/ package); "
                          "none in it: refused at start"),
    "DEVICE": ("cpu", "where predictors run; gpu needs paddlepaddle-gpu"),
    "BACKEND": ("auto", "inference engine; auto: per model, the fastest of those that passed the export's parity and "
                        "give Paddle Inference's answers on the bundle's samples (docs/SERVING.md, Backends)"),
    "THREADS": (1, "math threads per predictor (onnxruntime: intra-op threads; OpenVINO: threads per stream)"),
    "POOL_SIZE": (0, "predictors per model and worker; 0: one per request thread"),
    "POOL_TIMEOUT_S": (30.0, "a request waits this long for a free predictor, then gets a 503"),
    "MKLDNN": (True, "oneDNN kernels on CPU (about 2x faster convolutions here)"),
    "IR_OPTIM": (True, "Paddle graph optimisation passes (fusions)"),
    "MEMORY_OPTIM": (False, "Paddle buffer reuse; fails to load PIR bundles in Paddle 3.3.1"),
    "TENSORRT": (False, "GPU only, with --backend paddle: TensorRT subgraphs (auto tries them on a GPU anyway)"),
    "WARMUP_BATCHES": (3, "dummy batches per predictor before a model reports ready"),
    "DYNAMIC_BATCHING": (False, "combine requests that run at once into one predictor call (needs --request-threads "
                                "2 or more, or the development server)"),
    "MAX_BATCH_SIZE": (16, "dynamic batching: samples per call"),
    "MAX_DELAY_MS": (2.0, "dynamic batching: how long to wait for more requests"),
    # The production server: its processes, and what one client may cost it (docs/SERVING.md, Limits)
    "BIND": ("127.0.0.1:8000", "address:port to listen on"),
    "WORKERS": (2, "worker processes, each with its own predictors (about one per core)"),
    "REQUEST_THREADS": (1, "requests a worker runs at once; 1: on its event loop, the least CPU per request"),
    "MAX_BODY_MB": (10.0, "request body limit; larger ones get a 413 before they are read"),
    "HEADER_TIMEOUT_S": (10.0, "request headers must arrive within this; also the idle time of a kept-alive connection"),
    "BODY_TIMEOUT_S": (10.0, "grace for a request body, after which it must keep arriving at --min-body-rate-kbps, "
                             "else 408"),
    "MIN_BODY_RATE_KBPS": (32.0, "slowest average rate at which a body may arrive after the grace"),
    "BODY_BUDGET_MB": (64.0, "request bodies a worker holds at once (arriving or waiting to run); past it, 503 "
                             "with Retry-After"),
    "DECODE_BUDGET_MB": (256.0, "memory a worker's decoded images may take at once; past it, 503 with Retry-After"),
    "REQUEST_TIMEOUT_S": (10.0, "from a complete body to the answer: still waiting, 503; still working, 504"),
    "MAX_CONNECTIONS": (1024, "open connections per worker; more wait in the listen backlog"),
    "GRACEFUL_TIMEOUT_S": (30.0, "on SIGTERM, requests in flight get this long to finish"),
    "MAX_IMAGES": (64, "images (or houses) in one request"),
    "MAX_PIXELS": (25_000_000, "pixels of one image, read from its header before decoding"),
    "MAX_REQUEST_PIXELS": (50_000_000, "pixels of all images of one request together, before decoding any"),
}
DEFAULTS: dict = {key: default for key, (default, _) in SETTINGS.items()}
CHOICES = {"DEVICE": ("cpu", "gpu"), "BACKEND": ("auto", *RUNTIMES)}
ZERO_ALLOWED = ("POOL_SIZE", "WARMUP_BATCHES")  # integer settings for which 0 means something


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


def to_env(settings: dict) -> dict[str, str]:
    """``SERVE_<KEY>`` variables that ``from_env`` reads back as ``settings`` (booleans as 1/0)."""
    return {ENV_PREFIX + key: str(int(value) if isinstance(value, bool) else value) for key, value in settings.items()
            if key in DEFAULTS}


def resolve(config: dict | None) -> dict:
    """Defaults, overridden by the environment, overridden by ``config``; validated."""
    settings = {**DEFAULTS, **from_env(), **(config or {})}
    for key, allowed in CHOICES.items():
        if settings[key] not in allowed:
            raise ValueError(f"{key} must be one of {', '.join(allowed)}, got {settings[key]!r}")
    for key, default in DEFAULTS.items():
        value = settings[key]
        if isinstance(default, bool) or not isinstance(default, (int, float)):
            continue
        lowest = 0 if key in ZERO_ALLOWED else 1
        if isinstance(default, int) and (isinstance(value, bool) or not isinstance(value, int) or value < lowest):
            raise ValueError(f"{key} must be an integer >= {lowest}, got {value!r}")
        if isinstance(default, float) and (isinstance(value, bool) or not isinstance(value, (int, float))
                                           or not value > 0):
            raise ValueError(f"{key} must be a positive number, got {value!r}")
    if not settings["POOL_SIZE"]:
        settings["POOL_SIZE"] = settings["REQUEST_THREADS"]
    return settings


def flag(key: str) -> str:
    """The command-line flag of a setting: ``MAX_BODY_MB`` -> ``--max-body-mb``."""
    return "--" + key.lower().replace("_", "-")


def build_parser() -> argparse.ArgumentParser:
    """Command-line flags of ``python -m serve``: one per setting, help and default from ``SETTINGS``."""
    p = argparse.ArgumentParser(
        prog="python -m serve", description="Serve exported bundles over HTTP: the production server (granian, "
        "--workers processes), or with --dev Flask's development server. Every flag is also a SERVE_<NAME> "
        "environment variable (docs/SERVING.md).")
    p.add_argument("--dev", action="store_true", help="Flask's development server (one process, a thread per "
                   "request, not hardened): for your own machine and tests, never for clients")
    p.add_argument("--host", help="address to listen on (default: the host of --bind)")
    p.add_argument("--port", type=int, help="port (default: the port of --bind)")
    for key, (default, text) in SETTINGS.items():
        shown = ("on" if default else "off") if isinstance(default, bool) else default
        options: dict = {"default": None, "help": f"{text} (default: {shown})"}
        if isinstance(default, bool):
            options["action"] = argparse.BooleanOptionalAction
        else:
            options["type"] = type(default)
        if key in CHOICES:
            options["choices"] = CHOICES[key]
        p.add_argument(flag(key), **options)
    return p


def from_args(args: argparse.Namespace) -> dict:
    """The settings given on the command line (flags left unset fall back to env, then defaults);
    ``--host``/``--port`` replace the parts of BIND."""
    given = {key.upper(): value for key, value in vars(args).items() if value is not None}
    settings = {key: given[key] for key in DEFAULTS if key in given}
    if args.host is not None or args.port is not None:
        host, _, port = settings.get("BIND", from_env().get("BIND", DEFAULTS["BIND"])).rpartition(":")
        settings["BIND"] = f"{args.host if args.host is not None else host}:{args.port if args.port is not None else port}"
    return settings
