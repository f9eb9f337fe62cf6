"""Hostile clients, as tests/test_hostile.py asserts on them and bench/hostile.py measures them.

Each slow-client attack is a function of an open connection and the moment to stop (``ATTACKS``)
that returns what the server did to it; ``MALFORMED`` holds raw requests no HTTP library would send,
with the route whose error shape their answer must have; ``drawn_png`` and ``png_claiming`` make
legal worst-case images and image bombs.
"""
from __future__ import annotations

import json
import socket
import struct
import time
import zlib

import cv2
import numpy as np

CLOSE_WAIT_S = 3.0  # after an attack's time is up, how long to watch for the server closing the connection


def _slow_headers(sock: socket.socket, until: float) -> str:
    """The request line and headers, one byte every half second (slowloris)."""
    for byte in b"POST /predict/house HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nX-Pad: " + b"a" * 100:
        if time.monotonic() > until:
            break
        try:
            sock.send(bytes([byte]))
        except OSError:
            return "closed by server"
        time.sleep(0.5)
    return _closed_within(sock, max(0.1, until + CLOSE_WAIT_S - time.monotonic()))


def _closed_within(sock: socket.socket, seconds: float) -> str:
    """Whether the server closes the connection within ``seconds`` (without having answered)."""
    sock.settimeout(seconds)
    try:
        return "closed by server" if sock.recv(200) == b"" else "answered"
    except socket.timeout:
        return "still open"
    except OSError:
        return "closed by server"


def _slow_body(sock: socket.socket, until: float) -> str:
    """Headers at once, then a 1000-byte body at one byte every half second."""
    sock.sendall(b"POST /predict/house HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n")
    while time.monotonic() < until:
        try:
            sock.send(b" ")
        except OSError:
            return "closed by server"
        time.sleep(0.5)
    return _answer(sock)


def _idle(sock: socket.socket, until: float) -> str:
    """Connect, then send nothing."""
    time.sleep(max(0.0, until - time.monotonic()))
    return "held"


def _never_read(sock: socket.socket, until: float) -> str:
    """Pipeline 300 requests for the 10 kB OpenAPI document and never read an answer."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(0.5)
    try:
        sock.sendall(b"GET /openapi.json HTTP/1.1\r\nHost: x\r\n\r\n" * 300)
    except OSError:  # the server stopped reading: our send buffer is full
        pass
    time.sleep(max(0.0, until - time.monotonic()))
    return "held"


def _lying_length(sock: socket.socket, until: float) -> str:
    """Declare a 1.5 MB body (under the limit), send three bytes, go silent."""
    sock.sendall(b"POST /predict/house HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 1500000\r\n\r\n[1,")
    return _answer(sock, until)


def _answer(sock: socket.socket, until: float | None = None) -> str:
    """The status line the server sent, if any, before the connection closed or ``until``."""
    sock.settimeout(max(0.1, (until or time.monotonic() + 3) - time.monotonic()))
    try:
        data = sock.recv(200)
    except OSError:
        return "no answer"
    return data.split(b"\r\n", 1)[0].decode() if data else "closed by server"


ATTACKS = {"slow_headers": _slow_headers, "slow_body": _slow_body, "idle": _idle, "never_read": _never_read,
           "lying_length": _lying_length}


def _v2_binary(header: dict, tail: bytes, length_header: str) -> bytes:
    head = json.dumps(header).encode()
    body = head + tail
    return (f"POST /v2/models/mnist/infer HTTP/1.1\r\nHost: x\r\nInference-Header-Content-Length: {length_header}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode("utf-8") + body


def _v2_json(body: dict) -> bytes:
    data = json.dumps(body).encode()
    return (f"POST /v2/models/mnist/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n\r\n").encode() + data


IMAGE_INPUT = {"name": "image", "shape": [1, 1, 28, 28], "datatype": "FP32", "data": [0.0] * 784}
BINARY_INPUT = {"inputs": [{"name": "image", "shape": [1, 1, 28, 28], "datatype": "FP32",
                            "parameters": {"binary_data_size": 3136}}]}
MALFORMED = {
    # the five the hostile review found answered 500
    "invalid chunk size": (b"POST /predict/house HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                           b"Transfer-Encoding: chunked\r\n\r\nZZ\r\n[1]\r\n0\r\n\r\n", "/predict/house"),
    "superscript length": (_v2_binary(BINARY_INPUT, b"\0" * 3136, "\u00b2"), "/v2"),
    "5000-digit length": (_v2_binary(BINARY_INPUT, b"\0" * 3136, "9" * 5000), "/v2"),
    "input name is a list": (_v2_json({"inputs": [{**IMAGE_INPUT, "name": ["image"]}]}), "/v2"),
    "output name is an object": (_v2_json({"inputs": [IMAGE_INPUT], "outputs": [{"name": {"a": 1}}]}), "/v2"),
    # their classes
    "chunked body cut short": (b"POST /predict/house HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                               b"Transfer-Encoding: chunked\r\n\r\n5\r\n[1,2,\r\n", "/predict/house"),
    "negative length header": (_v2_binary(BINARY_INPUT, b"\0" * 3136, "-1"), "/v2"),
    "length beyond the body": (_v2_binary(BINARY_INPUT, b"\0" * 3136, "99999"), "/v2"),
    "binary size is a boolean": (_v2_binary({"inputs": [{**BINARY_INPUT["inputs"][0], "parameters": {
        "binary_data_size": True}}]}, b"\0" * 3136, str(len(json.dumps({"inputs": [{**BINARY_INPUT["inputs"][0],
                                                                       "parameters": {"binary_data_size": True}}]})))),
                                 "/v2"),
    "binary size past the end": (_v2_binary({"inputs": [{**BINARY_INPUT["inputs"][0], "parameters": {
        "binary_data_size": 9999}}]}, b"\0" * 3136, str(len(json.dumps({"inputs": [{**BINARY_INPUT["inputs"][0],
                                                                       "parameters": {"binary_data_size": 9999}}]})))),
                                 "/v2"),
    "inputs is an object": (_v2_json({"inputs": {"name": "image"}}), "/v2"),
    "parameters is a list": (_v2_json({"inputs": [{**IMAGE_INPUT, "parameters": [1]}]}), "/v2"),
    "binary_data_output is a string": (_v2_json({"inputs": [IMAGE_INPUT], "parameters": {"binary_data_output": "yes"}}),
                                       "/v2"),
    "datatype is a list": (_v2_json({"inputs": [{**IMAGE_INPUT, "datatype": ["FP32"]}]}), "/v2"),
    "shape of a billion": (_v2_json({"inputs": [{**IMAGE_INPUT, "shape": [1, 1, 28, 10 ** 9]}]}), "/v2"),
    "id is a number": (_v2_json({"id": 7, "inputs": [IMAGE_INPUT]}), "/v2"),
    "body is a list": (_v2_json([1, 2]), "/v2"),  # type: ignore[arg-type]
    "JSON nested 100000 deep": (b"POST /predict/house HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                                b"Content-Length: 200000\r\n\r\n" + b"[" * 100000 + b"]" * 100000, "/predict/house"),
    "NaN literal": (b"POST /predict/house HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    b"Content-Length: 5\r\n\r\n[NaN]", "/predict/house"),
    "UTF-16 body": (b"POST /predict/house HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 8\r\n\r\n"
                    + "[1]".encode("utf-16"), "/predict/house"),
    "body over the limit": (b"POST /predict/digit HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                            b"Content-Length: 99999999999\r\n\r\n", "/predict/digit"),
}


def png_claiming(width: int, height: int) -> bytes:
    """A ~100-byte PNG whose header claims width x height gray pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 4096, 9))
            + chunk(b"IEND", b""))


def drawn_png(side: int, deep: bool = False) -> bytes:
    """A '7' drawn across a side x side canvas: 16-bit RGBA with ``deep`` (the costliest PNG to decode), else gray."""
    canvas = np.full((side, side), 255, np.uint8)
    cv2.putText(canvas, "7", (side // 5, side * 4 // 5), cv2.FONT_HERSHEY_SIMPLEX, side / 35, 0, max(2, side // 25))
    if deep:
        canvas = cv2.cvtColor(canvas, cv2.COLOR_GRAY2BGRA).astype(np.uint16) * 257
    return cv2.imencode(".png", canvas, [cv2.IMWRITE_PNG_COMPRESSION, 9])[1].tobytes()


def raw_request(port: int, payload: bytes, timeout: float = 10) -> tuple[int, dict, bytes]:
    """Send bytes as they are on a new connection; (status, lower-case headers, body) of the answer, status 0
    if the server closed without one. For requests no HTTP library would send."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(payload)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                return 0, {}, data
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        length = int(headers.get("content-length", 0))
        while len(body) < length:
            chunk = s.recv(65536)
            if not chunk:
                break
            body += chunk
        return int(lines[0].split()[1]), headers, body
