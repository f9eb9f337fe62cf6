"""The production server's front: granian's Rust HTTP/1.1 stack, then this bridge, then the Flask app.

Why a bridge, and not granian's (or gunicorn's) WSGI: a WSGI server hands the app the socket to read
the body from, so a client that sends its body slowly, or declares one and never sends it, holds a
Python thread for as long as it likes, and a few such clients starve the server. Here granian
(hyper, in Rust) parses the request line and headers under a read timeout, a coroutine of this
module receives the body (a size limit from Content-Length before a byte is read, a minimum
average rate, a per-worker byte budget), and Flask only ever sees a complete request, which it runs
to the end without waiting on the network. The answer goes back to granian, which writes it however
slowly the client reads. A slow, idle or lying client holds a coroutine and its few buffered bytes,
never a thread.

Requests then run one at a time per worker on its event loop (``REQUEST_THREADS`` 1, the default:
the work is CPU-bound, so more threads would only time-slice the same cores and hand the GIL back and
forth), or on a pool of ``REQUEST_THREADS`` threads (dynamic batching needs several requests in the
process at once). What the front itself answers (400, 408, 413, 503, 504) has the route's error shape.
"""
from __future__ import annotations

import asyncio
import io
import logging
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import orjson

from .budget import Budget, megabytes
from .errors import REQUEST_ID_HEADER, error_body, pick_request_id

log = logging.getLogger("serve")

# What the front hands Flask in the WSGI environ, besides the standard keys (serve/record.py reads them).
RECEIVED = "serve.received"  # (perf_counter when the front first saw the request, when its body was complete)
DISPATCHED = "serve.dispatched"  # perf_counter when the request was handed to its thread (REQUEST_THREADS > 1)
DEADLINE = "serve.deadline"  # perf_counter by which the answer is due (REQUEST_TIMEOUT_S after the body)

_MAX_LENGTH_DIGITS = 19  # a Content-Length longer than this is no length any limit allows
WHOLE_BODY = 64 * 1024  # bodies up to this size (with a Content-Length) are received in one piece
_CUT = ("the request body is malformed or was cut short (a bad chunk size, fewer bytes than its Content-Length, "
        "or trailers after a chunked body, which this server does not take)")


@dataclass(frozen=True)
class Limits:
    """What one request may cost a worker: from the settings of serve/config.py."""

    max_body: int
    body_grace_s: float
    min_body_rate: float  # bytes per second
    body_budget: int
    request_timeout_s: float
    request_threads: int

    @classmethod
    def from_settings(cls, settings: dict) -> "Limits":
        return cls(max_body=megabytes(settings["MAX_BODY_MB"]), body_grace_s=settings["BODY_TIMEOUT_S"],
                   min_body_rate=settings["MIN_BODY_RATE_KBPS"] * 1024, body_budget=megabytes(settings["BODY_BUDGET_MB"]),
                   request_timeout_s=settings["REQUEST_TIMEOUT_S"], request_threads=settings["REQUEST_THREADS"])


class Refusal(Exception):
    """An answer the front gives itself, before or instead of running the app."""

    def __init__(self, status: int, code: str, message: str, headers: list | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or []


class Front:
    """The RSGI application granian runs in each worker: bodies in under the limits, Flask run on whole requests."""

    def __init__(self, wsgi_app, settings: dict, in_flight=None):
        self.app, self.in_flight = wsgi_app, in_flight
        self.limits = Limits.from_settings(settings)
        self.bodies = Budget(self.limits.body_budget)
        host, _, port = settings["BIND"].rpartition(":")
        self.server = (host or "0.0.0.0", port or "80")
        threads = self.limits.request_threads
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="request") if threads > 1 else None

    async def __rsgi__(self, scope, proto) -> None:
        if scope.proto != "http":  # websockets are switched off in granian; nothing else is served
            return
        arrived = time.perf_counter()
        reserved = 0
        try:
            length = content_length(scope.headers)
            if length is not None and length > self.limits.max_body:
                raise Refusal(413, "payload_too_large", f"the body is {length} bytes; the limit is "
                              f"{self.limits.max_body} (MAX_BODY_MB)")
            body, reserved = await self._receive(proto, length)
            complete = time.perf_counter()
            environ = self._environ(scope, body, arrived, complete)
            if self.in_flight:
                self.in_flight.add(1)
            try:
                if self.pool is None:
                    status, out_headers, payload = self._run(environ)
                else:
                    environ[DISPATCHED] = time.perf_counter()
                    status, out_headers, payload = await asyncio.get_running_loop().run_in_executor(
                        self.pool, self._run, environ)
            finally:
                if self.in_flight:
                    self.in_flight.add(-1)
        except Refusal as refusal:
            status, out_headers, payload = self._refusal(scope, refusal)
        finally:
            if reserved:
                self.bodies.give(reserved)
        proto.response_bytes(status, out_headers, payload)

    async def _receive(self, proto, length: int | None) -> tuple[bytes, int]:
        """(the whole body, the bytes it holds of the body budget: its size).

        The body may take the grace period, and must then have kept the minimum average rate at
        every chunk: a client that declares a body and goes silent is answered 408 after the grace,
        one that trickles as soon as it falls behind. Only bytes that arrived count against the
        size limit and the budget, so a declared length that is never sent costs nothing.
        """
        if length == 0:
            return b"", 0
        if length is not None and length <= WHOLE_BODY:
            return await self._receive_whole(proto, length), length
        limits, loop = self.limits, asyncio.get_running_loop()
        started, chunks, received, ends = loop.time(), [], 0, 0
        try:
            async with asyncio.timeout_at(started + limits.body_grace_s) as deadline:
                async for chunk in proto:
                    if not chunk:
                        # granian ends a body with one empty chunk, and turns a fault (a malformed chunk
                        # size, a connection closed early) into one more: two mean the body is not whole.
                        ends += 1
                        if ends > 1:
                            raise Refusal(400, "bad_request", _CUT)
                        continue
                    if ends:
                        raise Refusal(400, "bad_request", _CUT)
                    if received + len(chunk) > limits.max_body:
                        raise Refusal(413, "payload_too_large", f"the body passed the limit of {limits.max_body} "
                                      "bytes (MAX_BODY_MB)")
                    if not self.bodies.take(len(chunk)):
                        raise _busy("request bodies")
                    received += len(chunk)
                    chunks.append(chunk)
                    deadline.reschedule(started + limits.body_grace_s + received / limits.min_body_rate)
        except BaseException as exc:
            self.bodies.give(received)
            if isinstance(exc, Refusal):
                raise
            if isinstance(exc, TimeoutError):
                raise Refusal(408, "request_timeout", f"the body did not arrive in time (after {limits.body_grace_s:g} "
                              f"s it must keep an average of {limits.min_body_rate / 1024:g} kB/s)") from None
            if isinstance(exc, Exception):  # granian's RSGIProtocolClosed/Error: bad chunking, a closed connection
                raise Refusal(400, "bad_request", f"the request body could not be read: {_reason(exc)}") from None
            raise
        if length is not None and received != length:
            self.bodies.give(received)
            raise Refusal(400, "bad_request", _CUT)
        return (chunks[0] if len(chunks) == 1 else b"".join(chunks)), received

    async def _receive_whole(self, proto, length: int) -> bytes:
        """A small body with a Content-Length, in one piece (one wake-up of the event loop instead of one per
        chunk): reserved from the budget as declared, due within the grace plus its size at the minimum rate."""
        if not self.bodies.take(length):
            raise _busy("request bodies")
        limits = self.limits
        try:
            async with asyncio.timeout(limits.body_grace_s + length / limits.min_body_rate):
                body = await proto()
        except BaseException as exc:
            self.bodies.give(length)
            if isinstance(exc, TimeoutError):
                raise Refusal(408, "request_timeout", f"the body did not arrive in time (after {limits.body_grace_s:g} "
                              f"s it must keep an average of {limits.min_body_rate / 1024:g} kB/s)") from None
            if isinstance(exc, Exception):  # granian's RSGIProtocolClosed: a closed connection
                raise Refusal(400, "bad_request", _CUT) from None
            raise
        if len(body) != length:
            self.bodies.give(length)
            raise Refusal(400, "bad_request", _CUT)
        return body

    def _environ(self, scope, body: bytes, arrived: float, complete: float) -> dict:
        """The WSGI environ of a complete request (PEP 3333); nothing in it comes from headers but HTTP_*."""
        path = scope.path  # percent-decoded by granian; WSGI wants the bytes as latin-1
        if not path.isascii():
            path = path.encode("utf-8", "surrogateescape").decode("latin-1")
        client_host, _, client_port = scope.client.rpartition(":")
        environ = {
            "REQUEST_METHOD": scope.method, "SCRIPT_NAME": "", "PATH_INFO": path,
            "QUERY_STRING": scope.query_string, "SERVER_NAME": self.server[0], "SERVER_PORT": self.server[1],
            "SERVER_PROTOCOL": "HTTP/" + scope.http_version, "REMOTE_ADDR": client_host, "REMOTE_PORT": client_port,
            "CONTENT_LENGTH": str(len(body)), "wsgi.version": (1, 0), "wsgi.url_scheme": scope.scheme,
            "wsgi.input": io.BytesIO(body), "wsgi.input_terminated": True, "wsgi.errors": sys.stderr,
            "wsgi.multithread": self.pool is not None, "wsgi.multiprocess": True, "wsgi.run_once": False,
            RECEIVED: (arrived, complete), DEADLINE: complete + self.limits.request_timeout_s,
        }
        for name, value in scope.headers.items():
            if "_" in name:  # X_Forwarded would pose as X-Forwarded once dashes become underscores: dropped
                continue
            key = name.upper().replace("-", "_")
            if key in ("CONTENT_LENGTH", "TRANSFER_ENCODING"):  # the body is whole: its length is set above
                continue
            if key != "CONTENT_TYPE":
                key = "HTTP_" + key
            environ[key] = f"{environ[key]},{value}" if key in environ else value
        return environ

    def _run(self, environ: dict) -> tuple[int, list, bytes]:
        """Run the Flask app on one request: (status, headers, body)."""
        if time.perf_counter() > environ[DEADLINE]:  # waited for a request thread past its deadline
            return self._refusal_for(environ, _overloaded(self.limits.request_timeout_s))
        started: list = []

        def start_response(status: str, headers: list, exc_info=None):
            started[:] = (status, headers)

        try:
            result = self.app(environ, start_response)
            try:
                payload = b"".join(result)
            finally:
                if hasattr(result, "close"):
                    result.close()
        except Exception:  # noqa: BLE001  Flask turns errors into answers; this is a bug around it
            log.exception("unhandled error around the app in %s %s", environ["REQUEST_METHOD"], environ["PATH_INFO"])
            return self._refusal_for(environ, Refusal(500, "internal_error", "internal server error"))
        return int(started[0][:3]), started[1], payload

    def _refusal(self, scope, refusal: Refusal) -> tuple[int, list, bytes]:
        return _answer(scope.path, scope.headers.get(REQUEST_ID_HEADER.lower()), refusal)

    def _refusal_for(self, environ: dict, refusal: Refusal) -> tuple[int, list, bytes]:
        return _answer(environ["PATH_INFO"], environ.get("HTTP_X_REQUEST_ID"), refusal)


def _answer(path: str, incoming_id: str | None, refusal: Refusal) -> tuple[int, list, bytes]:
    rid = pick_request_id(incoming_id)
    headers = [("content-type", "application/json"), (REQUEST_ID_HEADER, rid), *refusal.headers]
    if refusal.status in (400, 408, 413):  # the rest of the body may still be on its way: do not read it
        headers.append(("connection", "close"))
    return refusal.status, headers, orjson.dumps(error_body(path, refusal.code, refusal.message, rid))


def content_length(headers) -> int | None:
    """The request's Content-Length: 0 without a body, None for a chunked one; 400 unless it is plain digits."""
    values = headers.get_all("content-length")
    if not values:
        return None if "transfer-encoding" in headers else 0
    text = values[0].strip()
    if any(v.strip() != text for v in values) or not (text.isascii() and text.isdigit()) \
            or len(text) > _MAX_LENGTH_DIGITS:
        raise Refusal(400, "bad_request", "Content-Length must be one decimal number of at most "
                      f"{_MAX_LENGTH_DIGITS} digits")
    return int(text)


def _busy(what: str) -> Refusal:
    return Refusal(503, "busy", f"this worker holds as many {what} as its memory budget allows; retry shortly",
                   [("retry-after", "1")])


def _overloaded(timeout_s: float) -> Refusal:
    return Refusal(503, "overloaded", f"the request waited longer than {timeout_s:g} s (REQUEST_TIMEOUT_S) to run; "
                   "retry later", [("retry-after", "1")])


def _reason(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
