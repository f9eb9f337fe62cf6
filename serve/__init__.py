"""Serve exported bundles over HTTP: friendly /predict API, KServe V2 REST, metrics, a drawing page.

``python -m serve --models DIR`` starts the production server (serve/server.py), ``--dev`` Flask's
development server; ``serve.app:create_app`` is the Flask app factory. See docs/SERVING.md.
"""


def __getattr__(name: str):
    """``from serve import create_app`` without importing the app (and prometheus-client) with the package:
    the production server's main process must set up the metrics folder before that import."""
    if name == "create_app":
        from .app import create_app

        return create_app
    raise AttributeError(f"module 'serve' has no attribute {name!r}")


__all__ = ["create_app"]
