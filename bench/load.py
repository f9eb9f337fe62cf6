"""What the HTTP benchmarks share: starting a server process, loading it with wrk, and the CPU it used.

The load comes from wrk (a compiled, event-driven client, one thread): it costs a few percent of a
core where a Python client would take the cores being measured. ``apt-get install wrk``
(scripts/setup.sh does, as root). A server's CPU is read from /proc for its whole process tree
(main process and workers, whatever spawned them), before and after each run.
"""
from __future__ import annotations

import http.client
import json
import os
import resource
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

# POSTs a body file with a content type; counts non-2xx answers per thread in response(); done()
# prints one JSON line (latencies in microseconds) that wrk_summary parses. Socket errors and
# timeouts come from wrk's own summary.
WRK_POST = """
local f = assert(io.open("%(body)s", "rb"))
wrk.method = "POST"
wrk.body = f:read("*all")
f:close()
wrk.headers["Content-Type"] = "%(content_type)s"
"""
WRK_REPORT = """
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) non2xx = 0 end
function response(status, headers, body)
  if status < 200 or status > 299 then non2xx = non2xx + 1 end
end

function done(summary, latency, requests)
  local bad = 0
  for _, t in ipairs(threads) do bad = bad + t:get("non2xx") end
  local e = summary.errors
  io.write(string.format('WRK_JSON {"requests": %%d, "duration_us": %%d, "non2xx": %%d, "connect": %%d, '
    .. '"read": %%d, "write": %%d, "timeout": %%d, "p50_us": %%d, "p99_us": %%d, "max_us": %%d}\\n',
    summary.requests, summary.duration, bad, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
"""


def get_status(port: int, path: str) -> int:
    """The status of ``GET path`` on loopback (OSError when nothing answers)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    finally:
        conn.close()


def post_status(port: int, path: str, body: bytes, content_type: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": content_type})
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


@dataclass
class Running:
    """A server process started for a benchmark, and its port."""

    proc: subprocess.Popen
    port: int
    log: Path

    def pids(self) -> list[int]:
        return process_tree(self.proc.pid)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def start(argv: list[str], port: int, log: Path, env: dict | None = None, cwd: Path | None = None,
          ready_path: str = "/v2/health/ready", timeout: float = 180) -> Running:
    """Start ``argv`` (listening on ``port``) and wait until ``GET ready_path`` answers 200."""
    proc = subprocess.Popen(argv, cwd=cwd, stdout=log.open("wb"), stderr=subprocess.STDOUT,
                            env={**os.environ, **(env or {})})
    running = Running(proc, port, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{argv[:3]} exited:\n{log.read_text(errors='replace')[-3000:]}")
        try:
            if get_status(port, ready_path) == 200:
                return running
        except OSError:
            pass
        time.sleep(0.2)
    running.stop()
    raise RuntimeError(f"{argv[:3]} not ready after {timeout} s:\n{log.read_text(errors='replace')[-3000:]}")


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    pids, todo = [], [pid]
    while todo:
        current = todo.pop()
        pids.append(current)
        try:
            for task in Path(f"/proc/{current}/task").iterdir():
                todo += [int(child) for child in (task / "children").read_text().split()]
        except OSError:
            pass
    return pids


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds used so far by ``pids`` (from /proc/PID/stat, fields 14 and 15)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / CLOCK_TICKS


def rss_mb(pid: int) -> float:
    """Resident memory of a process, MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def write_wrk_script(folder: Path, name: str, body: bytes | None = None, content_type: str = "") -> Path:
    """The Lua script that POSTs ``body`` with ``content_type`` (None: GETs), and the body's file, in ``folder``."""
    script = folder / f"{name}.lua"
    if body is None:
        script.write_text(WRK_REPORT % {})
        return script
    (folder / f"{name}.body").write_bytes(body)
    script.write_text((WRK_POST + WRK_REPORT) % {"body": folder / f"{name}.body", "content_type": content_type})
    return script


def wrk_load(port: int, path: str, script: Path, concurrency: int, seconds: float, pids: list[int] | None = None
             ) -> dict:
    """One wrk run (1 thread, ``concurrency`` keep-alive connections) for ``seconds``: latency, throughput,
    errors, and the CPU seconds wrk and (given ``pids``) the server used."""
    server_before = cpu_seconds(pids) if pids else 0.0
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # wrk is the only child that exits meanwhile
    out = subprocess.run(["wrk", "-t1", f"-c{concurrency}", f"-d{seconds:g}s", "--timeout", "10s", "-s", str(script),
                          f"http://127.0.0.1:{port}{path}"], capture_output=True, text=True, check=True).stdout
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = {**wrk_summary(out), "wrk_cpu": after.ru_utime + after.ru_stime - usage.ru_utime - usage.ru_stime}
    if pids:
        result["server_cpu"] = cpu_seconds(pids) - server_before
        result["cpu_ms_per_request"] = result["server_cpu"] / max(result["n"], 1) * 1000
    return result


def wrk_summary(out: str) -> dict:
    """Requests, errors (socket errors, timeouts, non-2xx), p50/p99 ms, req/s and wall seconds of wrk's output."""
    line = next((x for x in out.splitlines() if x.startswith("WRK_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary:\n{out}")
    r = json.loads(line.split(" ", 1)[1])
    wall = r["duration_us"] / 1e6
    errors = r["non2xx"] + r["connect"] + r["read"] + r["write"] + r["timeout"]
    return {"n": r["requests"], "errors": errors, "p50": r["p50_us"] / 1e3, "p99": r["p99_us"] / 1e3,
            "rps": r["requests"] / wall, "wall": wall}
