"""Serve exported bundles over HTTP: friendly /predict API, KServe V2 REST, metrics, a drawing page.

``python -m serve --models DIR`` (development server) or ``gunicorn -c serve/gunicorn_conf.py
'serve.app:create_app()'`` (production). See docs/SERVING.md.
"""
from .app import create_app

__all__ = ["create_app"]
