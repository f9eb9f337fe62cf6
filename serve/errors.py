"""One error type, one JSON shape, and the request id that ties a response to the server's logs.

Every error response, whatever raised it (our code, werkzeug's routing, the body-size limit, a bug),
has an X-Request-ID header and the body ``{"error": {"code": ..., "message": ..., "request_id": ...}}``;
on the Open Inference Protocol routes (``/v2...``) the body is the protocol's own ``{"error": "<message>"}``,
which stock clients (tritonclient, KServe's) print.
"""
from __future__ import annotations

import logging
import re
import random

from flask import Flask, g, jsonify, request
from werkzeug.exceptions import HTTPException

log = logging.getLogger("serve")

REQUEST_ID_HEADER = "X-Request-ID"
# An incoming id is echoed only if it is short and plain: it ends up in logs and headers.
_SANE_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")

# Short machine-readable codes for the statuses werkzeug raises on its own.
_HTTP_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "payload_too_large",
               415: "unsupported_media_type", 500: "internal_error", 503: "not_ready"}


class ApiError(Exception):
    """A problem to report to the client: HTTP status, short code, human message."""

    def __init__(self, status: int, code: str, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


def request_id() -> str:
    """This request's id (serve/record.py; a fresh one outside a request, or before its record exists)."""
    record = g.get("record")
    return record.request_id if record is not None else new_request_id()


def new_request_id() -> str:
    """32 hex digits. Not secret, only unique: the ``random`` module (reseeded in each forked worker)
    instead of the operating system's entropy, a system call per request."""
    return f"{random.getrandbits(128):032x}"


def pick_request_id(incoming: str | None) -> str:
    """The client's X-Request-ID if it is short and plain, else a fresh one."""
    return incoming if incoming and _SANE_ID.fullmatch(incoming) else new_request_id()


V2_PREFIX = "/v2"


def error_body(path: str, code: str, message: str, rid: str) -> dict:
    """The error shape of the route at ``path``: V2's ``{"error": message}``, else ours with code and request id."""
    if path == V2_PREFIX or path.startswith(V2_PREFIX + "/"):
        return {"error": message}
    return {"error": {"code": code, "message": message, "request_id": rid}}


def error_response(status: int, code: str, message: str, headers: dict | None = None):
    """A Flask response in the route's error shape."""
    return jsonify(error_body(request.path, code, message, request_id())), status, headers or {}


def init_app(app: Flask) -> None:
    """Turn every exception into the error shape."""

    @app.errorhandler(ApiError)
    def api_error(exc: ApiError):
        return error_response(exc.status, exc.code, exc.message, exc.headers)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        # Keep werkzeug's headers that matter to clients (Allow on a 405).
        headers = {k: v for k, v in exc.get_headers() if k.lower() == "allow"}
        code = _HTTP_CODES.get(exc.code, re.sub(r"\W+", "_", (exc.name or "error").lower()))
        return error_response(exc.code or 500, code, exc.description or exc.name, headers)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        # A bug: the client gets the same shape and an id to quote, the log gets the traceback.
        log.exception("unhandled error in %s %s (request id %s)", request.method, request.path, request_id())
        return error_response(500, "internal_error", "internal server error; quote the request id when reporting it")
