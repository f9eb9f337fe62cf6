"""Server processes for tests: the real command started on a free port, its log, its processes, and how to stop it."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

from .conftest import ROOT


def free_port() -> int:
    """A port nobody listens on now (bind to port 0, read it, release it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_command(models: Path, *flags: str) -> list[str]:
    """``python -m serve`` (the production server) on ``{port}``, with ``flags``."""
    return [sys.executable, "-m", "serve", "--models", str(models), "--port", "{port}", *flags]


class Server:
    """A server subprocess (in its own process group), its URL and its log."""

    def __init__(self, args: list[str], log: Path, env: dict | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log
        args = [a.replace("{port}", str(self.port)) for a in args]
        self.proc = subprocess.Popen(args, cwd=ROOT, stdout=log.open("wb"), stderr=subprocess.STDOUT,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
                                     start_new_session=True)

    @classmethod
    def ready(cls, args: list[str], log: Path, env: dict | None = None, timeout: float = 120) -> "Server":
        """Start a server and wait until /v2/health/ready answers 200; stopped again if it never does."""
        server = cls(args, log, env)
        try:
            server.wait("/v2/health/ready", timeout)
        except BaseException:
            server.stop()
            raise
        return server

    def get(self, path: str, **kw) -> requests.Response:
        return requests.get(self.url + path, timeout=kw.pop("timeout", 30), **kw)

    def post(self, path: str, **kw) -> requests.Response:
        return requests.post(self.url + path, timeout=kw.pop("timeout", 30), **kw)

    def wait(self, path: str, timeout: float = 120) -> None:
        """Poll ``path`` until it answers 200 (fail with the log if the process dies or time runs out)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"server exited:\n{self.log()}"
            try:
                if self.get(path, timeout=5).status_code == 200:
                    return
            except (requests.ConnectionError, requests.Timeout):  # no worker takes requests until it is ready
                pass
            time.sleep(0.1)
        raise AssertionError(f"{path} not 200 after {timeout} s:\n{self.log()}")

    def scrape(self) -> str:
        """``/metrics``, once every worker has written its last requests' figures (serve.metrics.FLUSH_S)."""
        from serve.metrics import FLUSH_S

        time.sleep(FLUSH_S + 0.3)
        return self.get("/metrics").text

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]

    def workers(self) -> list[int]:
        """Process ids of the server's worker processes (the children of the main process)."""
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        return [int(pid) for pid in children.read_text().split()] if children.exists() else []

    def stop(self, timeout: float = 30) -> int | None:
        """SIGTERM, as ``docker stop`` and Kubernetes send it; the exit status, or None if it had to be killed."""
        return stop_group(self.proc, timeout)


def stop_group(proc: subprocess.Popen, timeout: float) -> int | None:
    """SIGTERM to a server started in its own session; after ``timeout`` s, SIGKILL to its whole group.
    The exit status, or None if it had to be killed."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
            return None
    return proc.returncode


def rss_bytes(pid: int) -> int:
    """Resident memory of a process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0
