"""The production server (``python -m serve``) against hostile clients, as a real process on loopback.

Written from HTTP/1.1 (RFC 9112), the Open Inference Protocol and its binary extension, and the
attacks a server exposed without a proxy meets: slow and idle clients (slowloris), malformed
framing, lies in lengths and tensor headers, image and JSON bombs, legal worst cases (the biggest
images, the most images) and signals under load. Each test says what the client does and what the
server must do: answer 4xx in the route's error shape (never 5xx), keep answering everyone else
within a second, stay within its memory share, and stop work that runs out of time.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
import yaml

from bench.attacks import ATTACKS, MALFORMED, drawn_png, png_claiming, raw_request
from tests.deploy_helpers import KUBERNETES, manifests
from tests.servers import Server, rss_bytes, serve_command

HOUSE = [0.00632, 18.0, 2.31, 0.0, 0.538, 6.575, 65.2, 4.09, 1.0, 296.0, 15.3, 396.9, 4.98]
ATTACKERS = 64  # connections per attack kind
HOLD_S = 3.0  # how long each attack is held while normal requests are timed
HEADER_TIMEOUT_S, BODY_TIMEOUT_S = 2, 1  # the test server's (short) timeouts, so attacks resolve quickly


@pytest.fixture(scope="module")
def models(mnist_bundle, housing_bundle, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hostile-models")
    shutil.copytree(mnist_bundle, root / "mnist")
    shutil.copytree(housing_bundle, root / "housing")
    return root


@pytest.fixture(scope="module")
def server(models, tmp_path_factory):
    """The production server, 2 workers, short timeouts and small limits so that attacks resolve in seconds."""
    log = tmp_path_factory.mktemp("hostile") / "server.log"
    srv = Server.ready(serve_command(models, "--workers", "2", "--header-timeout-s", str(HEADER_TIMEOUT_S),
                                     "--body-timeout-s", str(BODY_TIMEOUT_S), "--min-body-rate-kbps", "16",
                                     "--max-body-mb", "2", "--request-timeout-s", "0.5"), log)
    yield srv
    srv.stop()


def post_house(srv: Server) -> requests.Response:
    return srv.post("/predict/house", json=HOUSE, timeout=10)


def assert_shape(status: int, body: bytes, path: str) -> None:
    """A 4xx whose body is the route's error shape: V2's {"error": message}, else ours."""
    assert 400 <= status < 500, (status, body[:300])
    error = json.loads(body)["error"]
    if path.startswith("/v2"):
        assert isinstance(error, str) and error
    else:
        assert set(error) == {"code", "message", "request_id"} and error["message"]


# ---- slow, idle and lying clients -------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(ATTACKS))
def test_slow_clients_do_not_starve_others(server, kind):
    """64 connections of one attack kind are held; meanwhile every normal request is answered within 1 s."""
    until = time.monotonic() + HOLD_S
    outcomes: list[str] = []

    def attacker():
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            outcomes.append(ATTACKS[kind](sock, until))

    threads = [threading.Thread(target=attacker) for _ in range(ATTACKERS)]
    for t in threads:
        t.start()
    time.sleep(0.5)  # every attacker connected
    latencies = []
    while time.monotonic() < until - 0.3:
        started = time.perf_counter()
        r = post_house(server)
        latencies.append(time.perf_counter() - started)
        assert r.status_code == 200, r.text
        time.sleep(0.05)
    for t in threads:
        t.join(30)
    assert len(latencies) >= 20 and max(latencies) < 1.0, (kind, max(latencies), len(latencies))
    assert len(outcomes) == ATTACKERS
    expected = {"slow_headers": {"closed by server"},  # headers not complete within HEADER_TIMEOUT_S
                "slow_body": {"HTTP/1.1 408 Request Timeout", "closed by server"},  # behind the minimum rate
                "idle": {"held"}, "never_read": {"held"},
                "lying_length": {"HTTP/1.1 408 Request Timeout"}}[kind]  # nothing after the grace period
    assert set(outcomes) <= expected, (kind, set(outcomes))


def test_idle_keep_alive_connections_are_closed(server):
    """A connection that finished a request and stays idle is closed after HEADER_TIMEOUT_S."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=HEADER_TIMEOUT_S + 5) as sock:
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        assert sock.recv(4096) == b""  # closed by the server
        assert time.monotonic() - started < HEADER_TIMEOUT_S + 2


# ---- malformed requests: always 4xx, in the route's shape --------------------------------------------


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_requests_are_4xx_in_shape(server, name):
    payload, path = MALFORMED[name]
    status, headers, body = raw_request(server.port, payload)
    assert_shape(status, body, path)


@pytest.mark.parametrize("payload", [
    b"POST /predict/house HTTP/1.1\r\nHost: x\r\nContent-Length: 1e3\r\n\r\n",  # not a number
    b"POST /predict/house HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n[1]",  # two lengths
    b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n folded\r\n\r\n",  # obsolete line folding
    b"GET /v2/health/live HTTP/9.9\r\nHost: x\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\0" * 64,  # a TLS hello on the plain port
])
def test_requests_that_are_not_http_are_refused_by_the_parser(server, payload):
    """No route can be known: the HTTP parser answers a bare 400 (or closes), never anything else."""
    status, _, _ = raw_request(server.port, payload)
    assert status in (0, 400, 505), status
    assert post_house(server).status_code == 200


def test_header_names_with_underscores_are_dropped(server):
    """``SCRIPT_NAME: /v2`` (and any header whose underscores would pose as dashes) reaches no one."""
    status, _, body = raw_request(server.port, b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\nSCRIPT_NAME: /v2\r\n"
                                               b"X_Request_ID: smuggled\r\n\r\n")
    assert status == 200 and json.loads(body) == {"ready": True}
    status, headers, _ = raw_request(server.port, b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX_Request_ID: mine\r\n\r\n")
    assert status == 200 and headers["x-request-id"] != "mine"


def test_pipelined_requests_are_never_misread(server):
    """Requests pipelined on one connection: the first is answered, and nothing is ever answered out of turn.

    granian 2.8.9 answers only the first request of a pipeline and then waits until the header
    timeout closes the connection (docs/SERVING.md, Limits): no mainstream client pipelines, and
    what matters here is that bytes after a request are never taken for another one's answer.
    """
    with socket.create_connection(("127.0.0.1", server.port), timeout=HEADER_TIMEOUT_S + 5) as sock:
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\nGET /nope HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    statuses = [int(line.split()[1]) for line in data.decode("latin-1").split("\r\n") if line.startswith("HTTP/1.1 ")]
    assert statuses in ([200], [200, 404]), statuses


def test_ambiguous_framing_ends_the_connection(server):
    """A request framed both by Content-Length and chunked is ambiguous (the root of request smuggling):
    nothing after it on that connection is taken (RFC 9112 6.1: answer it, or not, then close)."""
    payload = (b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n"
               b"POST /v2/models/nope/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"0\r\n\r\n"
               b"GET /v2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(payload)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    statuses = [int(line.split()[1]) for line in data.decode("latin-1").split("\r\n") if line.startswith("HTTP/1.1 ")]
    assert statuses in ([200], [200, 400], [200, 404]), statuses


# ---- bombs and legal worst cases ------------------------------------------------------------------


def test_image_bombs_are_refused_from_the_header(server):
    started = time.monotonic()
    for side in (30000, 6000):
        r = server.post("/predict/digit", data=png_claiming(side, side), headers={"Content-Type": "image/png"})
        message = r.json()["error"]["message"]
        assert r.status_code == 400 and ("limit" in message or "too large" in message), r.text
    assert time.monotonic() - started < 2


def test_pixels_of_a_whole_request_are_capped_before_decoding(server):
    """64 images are allowed and 25 MP each is allowed, but not 64 x 25 MP in one request."""
    big = drawn_png(5000)
    files = [("file", (f"{i}.png", big, "image/png")) for i in range(3)]  # 75 MP together
    started = time.monotonic()
    r = server.post("/predict/digit", files=files)
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_many_pixels", r.text
    assert time.monotonic() - started < 1.5  # refused from the headers: nothing was decoded


def test_work_past_the_deadline_stops_with_504(server):
    """A request whose images take longer than REQUEST_TIMEOUT_S (0.5 s here) stops at the next image."""
    deep = drawn_png(1290, deep=True)  # 16-bit RGBA: about 40 ms each
    files = [("file", (f"{i}.png", deep, "image/png")) for i in range(30)]  # 50 MP, over 1 s of work
    started = time.monotonic()
    r = server.post("/predict/digit", files=files)
    elapsed = time.monotonic() - started
    assert r.status_code == 504 and r.json()["error"]["code"] == "deadline_exceeded", (r.headers.get("Server-Timing"), r.text[-300:])
    assert elapsed < 1.5, elapsed  # the work stopped: it did not run all 30 images (about 1 s of work)
    assert post_house(server).status_code == 200


def _shipped_settings() -> dict[str, str]:
    """The SERVE_* settings of the Kubernetes ConfigMap, as a pod gets them."""
    config = yaml.safe_load((KUBERNETES / "configmap.yaml").read_text())["data"]
    return {k: str(v) for k, v in config.items() if k.startswith("SERVE_") and k not in ("SERVE_BIND", "SERVE_MODELS")}


def _memory_limit() -> int:
    text = manifests()["Deployment"]["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"]
    assert text.endswith("Gi")
    return int(float(text[:-2]) * 1024 ** 3)


def test_worst_case_uploads_stay_within_the_pods_memory(models, tmp_path):
    """The shipped settings (the ConfigMap's workers and budgets), concurrent uploads of the costliest legal
    images: the server's memory stays below the Deployment's limit, and each worker below its share."""
    settings = _shipped_settings()
    srv = Server.ready(serve_command(models), tmp_path / "server.log", env=settings)
    try:
        limit, workers = _memory_limit(), int(settings["SERVE_WORKERS"])
        deep = drawn_png(5000, deep=True)  # 25 MP, 16-bit RGBA: 200 MB once decoded at full depth
        peaks: dict[int, int] = {}
        stop = threading.Event()

        def sample():
            while not stop.is_set():
                for pid in [srv.proc.pid, *srv.workers()]:
                    try:
                        peaks[pid] = max(peaks.get(pid, 0), rss_bytes(pid))
                    except FileNotFoundError:
                        pass
                time.sleep(0.02)

        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            with ThreadPoolExecutor(8) as pool:
                statuses = list(pool.map(lambda _: srv.post("/predict/digit", data=deep, headers={
                    "Content-Type": "image/png"}, timeout=60).status_code, range(8)))
        finally:
            stop.set()
            sampler.join()
        assert statuses.count(200) >= 2 and set(statuses) <= {200, 503, 504}, statuses
        worker_peaks = [peaks[pid] for pid in srv.workers() if pid in peaks]
        assert len(worker_peaks) == workers
        assert max(worker_peaks) < limit / workers, (max(worker_peaks) >> 20, limit >> 20)
        assert sum(peaks.values()) < limit, ({p: v >> 20 for p, v in peaks.items()}, limit >> 20)
    finally:
        srv.stop()


# ---- signals under load ---------------------------------------------------------------------------


@pytest.fixture
def fresh(models, tmp_path):
    srv = Server.ready(serve_command(models, "--workers", "2", "--graceful-timeout-s", "10"), tmp_path / "server.log")
    yield srv
    srv.stop()


def _slow_upload(srv: Server, seconds: float) -> int:
    """A valid house request whose body takes ``seconds`` to send; the status of its answer."""
    body = json.dumps(HOUSE).encode()
    with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as sock:
        sock.sendall(b"POST /predict/house HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     + f"Content-Length: {len(body)}\r\n\r\n".encode())
        for i in range(len(body)):
            sock.send(body[i:i + 1])
            time.sleep(seconds / len(body))
        data = sock.recv(4096)
    return int(data.split()[1]) if data else 0


def test_sigterm_lets_uploads_in_flight_finish(fresh):
    with ThreadPoolExecutor(4) as pool:
        uploads = [pool.submit(_slow_upload, fresh, 2.0) for _ in range(4)]
        time.sleep(0.7)  # every upload is half sent
        fresh.proc.send_signal(signal.SIGTERM)
        assert [u.result() for u in uploads] == [200] * 4
    assert fresh.proc.wait(20) == 0, fresh.log()
    with pytest.raises(requests.ConnectionError):
        post_house(fresh)


def test_a_killed_worker_is_replaced_under_load(fresh):
    """SIGKILL one worker under load: only requests it held fail, a new worker replaces it, the rest are answered."""
    errors, answered, stop = [], [], threading.Event()

    def load():
        while not stop.is_set():
            try:
                answered.append(post_house(fresh).status_code)
            except requests.RequestException:
                errors.append(time.monotonic())

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    victim = fresh.workers()[0]
    killed = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (len(fresh.workers()) < 2 or victim in fresh.workers()):
        time.sleep(0.2)
    time.sleep(1)
    stop.set()
    for t in threads:
        t.join()
    assert victim not in fresh.workers() and len(fresh.workers()) == 2, fresh.log()
    assert set(answered) == {200}
    assert all(t - killed < 1.0 for t in errors), [round(t - killed, 2) for t in errors]  # those it held
    assert post_house(fresh).status_code == 200


def test_sighup_replaces_workers_without_dropping_requests(fresh):
    before = set(fresh.workers())
    answered, errors, stop = [], [], threading.Event()

    def load():
        while not stop.is_set():
            try:
                answered.append(post_house(fresh).status_code)
            except requests.RequestException as exc:
                errors.append(exc)

    threads = [threading.Thread(target=load) for _ in range(2)]
    for t in threads:
        t.start()
    fresh.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (set(fresh.workers()) & before or len(fresh.workers()) < 2):
        time.sleep(0.2)
    stop.set()
    for t in threads:
        t.join()
    assert not set(fresh.workers()) & before and len(fresh.workers()) == 2, fresh.log()
    assert set(answered) == {200} and not errors, errors[:3]
