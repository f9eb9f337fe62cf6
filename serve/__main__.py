"""``python -m serve --models DIR``: the production server (serve/server.py); ``--dev``: Flask's development server.

Bad settings, or a models folder without any bundle, stop it at once with one line and exit
status 2, before any worker starts.
"""
from __future__ import annotations

import sys
from pathlib import Path

from .config import build_parser, from_args, resolve


def main(argv: list[str] | None = None) -> int:
    """Parse flags, check them, serve until stopped."""
    args = build_parser().parse_args(argv)
    try:
        settings = resolve(from_args(args))
        check(settings, dev=args.dev)
    except ValueError as exc:
        print(f"serve: error: {exc}", file=sys.stderr)
        return 2
    host, _, port = settings["BIND"].rpartition(":")
    print(f"serve: open http://{host}:{port}/ to draw a digit; API at /predict, /v2; docs at /openapi.json",
          flush=True)
    if args.dev:
        return _development(settings, host, int(port))
    from .server import run

    return run(settings)


def check(settings: dict, dev: bool) -> None:
    """What would stop every worker, found before any starts: ``ValueError`` with the reason."""
    from .registry import discover

    if not dev and settings["DYNAMIC_BATCHING"] and settings["REQUEST_THREADS"] < 2:
        raise ValueError("--dynamic-batching combines requests that run at once: give it --request-threads 2 or "
                         "more (each worker otherwise runs one request at a time)")
    if ":" not in settings["BIND"] or not settings["BIND"].rpartition(":")[2].isdigit():
        raise ValueError(f"--bind must be ADDRESS:PORT, got {settings['BIND']!r}")
    discover(Path(settings["MODELS"]))
    if settings["BACKEND"] != "auto":  # forced, so every model would be refused: say it once, here
        from .backends import missing_package

        if why := missing_package(settings["BACKEND"]):
            raise ValueError(f"--backend {settings['BACKEND']}: {why}")


def _development(settings: dict, host: str, port: int) -> int:
    """Flask's development server: one process, a thread per request."""
    from .app import create_app

    try:
        app = create_app(settings)
    except ValueError as exc:  # a forced backend whose package is missing: one line, no traceback
        print(f"serve: error: {exc}", file=sys.stderr)
        return 2
    app.run(host=host, port=port, threaded=True, use_reloader=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
