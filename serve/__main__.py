"""``python -m serve --models DIR``: the Flask development server (threaded), for local use and tests.

For production use gunicorn (several worker processes, a hardened HTTP parser): docs/SERVING.md.
"""
from __future__ import annotations

import sys

from .app import create_app
from .config import build_parser, from_args


def main(argv: list[str] | None = None) -> int:
    """Parse flags, build the app, serve until interrupted."""
    args = build_parser().parse_args(argv)
    try:
        app = create_app(from_args(args))
    except ValueError as exc:  # bad flags, or no bundles in the models folder: one line, no traceback, exit 2
        print(f"serve: error: {exc}", file=sys.stderr)
        return 2
    print(f"serve: open http://{args.host}:{args.port}/ to draw a digit; API at /predict, /v2; "
          f"docs at /openapi.json", flush=True)
    # threaded: one thread per request; the predictor pool bounds how many run a model at once.
    app.run(host=args.host, port=args.port, threaded=True, use_reloader=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
