"""Load test of the prediction service under gunicorn, driven by wrk, against in-process timings of the same run.

    nice python -m bench.serve_load --models DIR [--seconds 10] [--backends auto,auto+batching,...]
    nice python -m bench.serve_load --models DIR --soak [SECONDS]
    nice python -m bench.serve_load --models DIR --balance

DIR holds a digits bundle named ``mnist`` with inference.onnx (the export's default; for the
onnxruntime, OpenVINO and auto rows). The request is what the drawing page sends: one 200x200 PNG
(the first MNIST test digit, a 7, enlarged, dark ink on white) as a raw ``image/png`` body to
``POST /predict/digit``. Measures, all on loopback:
  1. the raw predictor at batch 1 (Paddle Inference in several configurations, onnxruntime and
     OpenVINO), and for each backend a scenario serves, preprocessing + that backend in this
     process on the same image: the floor a request cannot go below;
  2. concurrency 1, 8 and 32 under gunicorn (``-w 2 --threads 4``, one predictor of one math thread
     per worker) for each scenario (a backend forced or auto, with and without dynamic batching):
     p50/p99 latency, throughput, errors (socket errors, timeouts and non-2xx answers), and the CPU
     that the server (gunicorn master + workers, from /proc) and wrk used; and, as the floor no
     request can go below, Flask alone (bench/flask_floor.py: the same request, an answer of the
     same size, no work) under the same gunicorn workers;
  3. with ``--soak``: only a soak instead, at concurrency 32 with the default settings (auto, no
     batching) for SECONDS (default 300), as one wrk run whose connections stay open (separate
     runs per tenth would each deal their connections to the gthread workers anew, and the
     tenths would differ by how evenly that fell, not by time: see ``--balance``): the answers
     of every tenth from the server's own request counter, errors, and the workers' RSS at the
     start and the end;
  4. with ``--balance``: only how evenly the 2 workers share the load, gthread against sync
     workers: BALANCE_RUNS short wrk runs at concurrency 8, each opening new connections, with
     the CPU each worker used.

The load comes from wrk (a compiled, event-driven client, one thread), so the load generator
costs a few percent of a core instead of the cores a Python client would take from the server;
its CPU time is reported. Install it with ``apt-get install wrk`` (scripts/setup.sh does, as root).
There is no Python fallback: on 2 cores a Python client competes with the server for the very
cores being measured, and its figures would not answer the questions this bench asks.

Writes the ``serve_load`` (or, with --soak, ``serve_soak``) section of docs/BENCHMARKS.md, only
when the 1-minute load average at the start is at most 0.5 (other work would be measured too),
unless --allow-busy.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import MAX_START_LOAD, busy_banner, update_section

LEVELS = (1, 8, 32)
SOAK_CONCURRENCY = 32
IMAGE_SIZE = 200  # pixels: a drawing, as the page sends it (its canvas is 280x280)
TARGET = {"rps": 1500, "p99_ms": 50.0, "soak_rss_growth": 0.10, "soak_last_first": 0.9}  # issue 9, at c=32
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def digit_png(data_dir: Path, size: int = IMAGE_SIZE) -> bytes:
    """The first MNIST test image (a 7) enlarged to size x size, dark ink on white, as PNG bytes."""
    import cv2

    from common.datasets import read_mnist

    image = read_mnist("test", data_dir, limit=1)[0][0]
    drawing = 255 - cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR)
    return cv2.imencode(".png", drawing)[1].tobytes()


# ---- in-process floors ----------------------------------------------------------------------


def time_calls(fn, calls: int, max_s: float = 10.0) -> float:
    """Median-of-3 microseconds per call of ``fn`` (bounded in count and time)."""
    for _ in range(20):
        fn()
    rounds = []
    for _ in range(3):
        started, n = time.perf_counter(), 0
        while n < calls and time.perf_counter() - started < max_s / 3:
            fn()
            n += 1
        rounds.append((time.perf_counter() - started) / n * 1e6)
    return float(np.median(rounds))


def raw_predictors(bundle_dir: Path, calls: int) -> list[tuple[str, float]]:
    """Batch-1 latency of Paddle Inference configurations and onnxruntime, in this process."""
    import onnxruntime as ort
    from paddle import inference

    from common.bundle import PredictorRunner, predictor_config, read_bundle

    bundle = read_bundle(bundle_dir)
    x = np.random.default_rng(0).standard_normal((1, 1, 28, 28)).astype(np.float32)
    rows = []
    variants = [("oneDNN on, 1 thread, IR optim, cached handles (the server's settings)", {"mkldnn": True}, True),
                ("oneDNN on, 1 thread, IR optim, handles looked up per call", {"mkldnn": True}, False),
                ("oneDNN off, 1 thread, IR optim", {"mkldnn": False}, True),
                ("oneDNN on, 1 thread, IR optim off", {"mkldnn": True, "ir_optim": False}, True),
                ("oneDNN on, 2 threads, IR optim", {"mkldnn": True, "threads": 2}, True)]
    for label, options, cached in variants:
        predictor = inference.create_predictor(predictor_config(bundle, memory_optim=False, **{"threads": 1, **options}))
        runner = PredictorRunner(predictor)
        fn = (lambda r=runner: r.run(x)) if cached else (lambda p=predictor: PredictorRunner(p).run(x))
        rows.append((f"Paddle Inference: {label}", time_calls(fn, calls)))
    if bundle.onnx_file:
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
        options.log_severity_level = 3
        session = ort.InferenceSession(str(bundle.onnx_file), options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        rows.append(("onnxruntime, 1 intra-op thread", time_calls(lambda: session.run(None, {name: x}), calls)))
        from common.bundle import openvino_model, openvino_run

        request = openvino_model(bundle.onnx_file, threads=1).create_infer_request()
        rows.append(("OpenVINO, 1 stream of 1 thread, FP32", time_calls(lambda: openvino_run(request, [x]), calls)))
    return rows




def in_process_ms(bundle_dir: Path, body: bytes, backend: str, calls: int) -> dict:
    """Median ms of the server's per-request work done in this process on ``body``: decode and
    preprocess (the bundle's DigitPipeline), then ``backend`` (serve's own class, pool of 1) at batch 1."""
    from common.bundle import read_bundle
    from serve import config
    from serve.backends import create_backend
    from serve.pipelines import pipeline_for

    bundle = read_bundle(bundle_dir)
    settings = config.resolve({"MODELS": str(bundle_dir), "POOL_SIZE": 1, "THREADS": 1, "BACKEND": backend})
    runner = create_backend(bundle, settings, [bundle.zeros(1)] * 3)
    pipeline = pipeline_for(bundle)
    pre, model, total = [], [], []
    for i in range(calls + 20):
        t0 = time.perf_counter()
        _, x = pipeline.preview_and_inputs(body, settings["MAX_PIXELS"])
        t1 = time.perf_counter()
        runner.run([x])
        t2 = time.perf_counter()
        if i >= 20:  # warm-up
            pre.append(t1 - t0), model.append(t2 - t1), total.append(t2 - t0)
    runner.close()
    return {"pre": float(np.median(pre)) * 1e3, "model": float(np.median(model)) * 1e3,
            "total": float(np.median(total)) * 1e3}


# ---- the server -----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(port: int, path: str) -> tuple[int, dict | None]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("GET", path)
    response = conn.getresponse()
    body = response.read()
    return response.status, json.loads(body) if response.status == 200 else None


GTHREAD = ("-w", "2", "--threads", "4")  # the documented production settings for 2 cores
SYNC = ("-w", "2")  # gunicorn's sync worker: one request at a time per worker, no keep-alive
SERVER = ("-c", "serve/gunicorn_conf.py", "serve.app:create_app()")  # what gunicorn runs: our server...
FLOOR = ("bench.flask_floor:app",)  # ... or Flask alone, answering the same request without work


def start_gunicorn(models: Path, env: dict, log: Path, workers: tuple = GTHREAD,
                   app: tuple = SERVER) -> tuple[subprocess.Popen, int]:
    """gunicorn with ``workers`` (its -w/--threads flags) running ``app``; returns (process, port)."""
    port = free_port()
    cmd = [sys.executable, "-m", "gunicorn", *workers, "-b", f"127.0.0.1:{port}", *app]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log.open("wb"), stderr=subprocess.STDOUT,
                            env={**os.environ, "SERVE_MODELS": str(models), "SERVE_POOL_SIZE": "1", **env})
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gunicorn exited:\n{log.read_text()[-3000:]}")
        try:
            if get_json(port, "/v2/health/ready")[0] == 200:
                return proc, port
        except OSError:
            pass
        time.sleep(0.2)
    proc.terminate()
    raise RuntimeError(f"gunicorn not ready:\n{log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()


def server_pids(master: int) -> list[int]:
    """The gunicorn master and its children (the workers)."""
    children = []
    for task in Path(f"/proc/{master}/task").iterdir():
        children += (task / "children").read_text().split()
    return [master] + [int(pid) for pid in children]


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds used so far by ``pids`` (from /proc/PID/stat, fields 14 and 15)."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / CLOCK_TICKS


def worker_rss_mb(master: int) -> list[float]:
    """RSS (MiB) of each gunicorn worker."""
    rss = []
    for pid in server_pids(master)[1:]:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss.append(int(line.split()[1]) / 1024)
    return rss


# ---- wrk ------------------------------------------------------------------------------------

# POSTs the body file; counts non-2xx answers per thread in response(); done() prints one JSON
# line (latencies in microseconds) that wrk_load parses. Socket errors and timeouts come from wrk's summary.
WRK_POST = """
local f = assert(io.open("%(body)s", "rb"))
wrk.method = "POST"
wrk.body = f:read("*all")
f:close()
wrk.headers["Content-Type"] = "image/png"
"""
WRK_SCRIPT = """
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


def write_wrk_script(body: bytes | None, folder: Path) -> Path:
    """The Lua script that posts the PNG ``body`` (None: a GET), and the body's file, in ``folder``."""
    if body is None:
        script = folder / "get.lua"
        script.write_text(WRK_SCRIPT % {})
        return script
    (folder / "digit.png").write_bytes(body)
    script = folder / "post_digit.lua"
    script.write_text((WRK_POST + WRK_SCRIPT) % {"body": folder / "digit.png"})
    return script


def wrk_load(port: int, script: Path, concurrency: int, seconds: int, master: int | None = None,
             path: str = "/predict/digit") -> dict:
    """One wrk run (1 thread, ``concurrency`` keep-alive connections) for ``seconds``: latency, throughput,
    errors, and the CPU seconds wrk and (given the gunicorn ``master``) the server used."""
    pids = server_pids(master) if master else []
    server_before = cpu_seconds(pids) if pids else 0.0
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # wrk is the only child that exits meanwhile
    out = subprocess.run(wrk_command(port, script, concurrency, seconds, path), capture_output=True, text=True,
                         check=True).stdout
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = {**wrk_summary(out), "wrk_cpu": (after.ru_utime + after.ru_stime - usage.ru_utime - usage.ru_stime)}
    if pids:
        result["server_cpu"] = cpu_seconds(pids) - server_before
    return result


def wrk_command(port: int, script: Path, concurrency: int, seconds: int, path: str = "/predict/digit") -> list[str]:
    return ["wrk", "-t1", f"-c{concurrency}", f"-d{seconds}s", "--timeout", "10s", "-s", str(script),
            f"http://127.0.0.1:{port}{path}"]


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


# ---- the run --------------------------------------------------------------------------------


BATCHING = {"SERVE_DYNAMIC_BATCHING": "1"}
# name -> (label, environment[, gunicorn's worker flags[, what gunicorn runs]])
SCENARIOS = {"paddle": ("Paddle Inference", {"SERVE_BACKEND": "paddle"}),
             "paddle+batching": ("Paddle Inference + dynamic batching", {"SERVE_BACKEND": "paddle", **BATCHING}),
             "onnxruntime": ("onnxruntime", {"SERVE_BACKEND": "onnxruntime"}),
             "onnxruntime+batching": ("onnxruntime + dynamic batching", {"SERVE_BACKEND": "onnxruntime", **BATCHING}),
             "openvino": ("OpenVINO", {"SERVE_BACKEND": "openvino"}),
             "auto": ("auto (the default)", {"SERVE_BACKEND": "auto"}),
             "auto+batching": ("auto + dynamic batching", {"SERVE_BACKEND": "auto", **BATCHING}),
             "auto+sync": ("auto, sync workers (`-w 2`, no `--threads`)", {"SERVE_BACKEND": "auto"}, SYNC),
             "floor": ("Flask alone, no work (`bench/flask_floor.py`)", {}, GTHREAD, FLOOR),
             "floor+sync": ("Flask alone, no work, sync workers", {}, SYNC, FLOOR)}
PLATFORM_BACKEND = {"paddle_inference": "paddle", "onnxruntime": "onnxruntime", "openvino": "openvino"}


def serve_scenario(models: Path, env: dict, tmp: Path, name: str, workers: tuple = GTHREAD, app: tuple = SERVER):
    """Start gunicorn for one scenario; returns (process, port, the backend it chose for mnist; - for no model)."""
    proc, port = start_gunicorn(models, {"PROMETHEUS_MULTIPROC_DIR": str(tmp / name), **env}, tmp / f"{name}.log",
                                workers, app)
    if app != SERVER:
        return proc, port, "-"
    platform = get_json(port, "/v2/models/mnist")[1]["platform"]
    return proc, port, PLATFORM_BACKEND.get(platform, platform)


def http_scenarios(models: Path, script: Path, names: list[str], seconds: int, tmp: Path) -> list[dict]:
    rows = []
    for name in names:
        label, env, *workers = SCENARIOS[name]
        proc, port, backend = serve_scenario(models, env, tmp, name, *workers)
        try:
            wrk_load(port, script, 4, 1)  # warm connections and caches
            for level in LEVELS:
                r = wrk_load(port, script, level, seconds, proc.pid)
                rows.append({"name": name, "label": label, "backend": backend, "level": level, **r})
                print(f"[serve_load] {name} ({backend}) c={level}: {r}", flush=True)
            if name == "auto":  # the HTTP floor: gunicorn + Flask + our hooks on a route that does nothing
                r = wrk_load(port, script.with_name("get.lua"), 32, seconds, proc.pid, "/v2/health/live")
                rows.append({"name": "live", "label": "`GET /v2/health/live` (no model, no image)",
                             "backend": "-", "level": 32, **r})
                print(f"[serve_load] GET /v2/health/live c=32: {r}", flush=True)
        finally:
            stop(proc)
    return rows


BALANCE_RUNS, BALANCE_LEVEL, BALANCE_SECONDS = 6, 8, 5


def balance(models: Path, script: Path, tmp: Path) -> list[dict]:
    """For gthread and sync workers: BALANCE_RUNS wrk runs (new connections each), req/s, p99 and
    the cores each worker used."""
    rows = []
    for name, workers in (("gthread `-w 2 --threads 4`", GTHREAD), ("sync `-w 2`", SYNC)):
        proc, port, _ = serve_scenario(models, {}, tmp, name.split()[0], workers)
        try:
            pids = server_pids(proc.pid)[1:]
            for i in range(BALANCE_RUNS):
                before = [cpu_seconds([pid]) for pid in pids]
                r = wrk_load(port, script, BALANCE_LEVEL, BALANCE_SECONDS)
                cores = [(cpu_seconds([pid]) - b) / r["wall"] for pid, b in zip(pids, before)]
                rows.append({"name": name, "run": i + 1, "cores": cores, **r})
                print(f"[serve_load] balance {name} run {i + 1}: {r['rps']:.0f} req/s, workers {cores}", flush=True)
        finally:
            stop(proc)
    return rows


def balance_markdown(rows: list[dict], load: str) -> str:
    lines = [f"`POST /predict/digit` ({IMAGE_SIZE}x{IMAGE_SIZE} PNG), backend auto, concurrency {BALANCE_LEVEL}: "
             f"{BALANCE_RUNS} wrk runs of {BALANCE_SECONDS} s per worker type, each run opening its connections "
             "anew (keep-alive within a run). Worker cores: CPU seconds of each gunicorn worker / wall seconds.", "",
             "| workers | run | req/s | p99 ms | errors | worker 1 cores | worker 2 cores |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['name']} | {r['run']} | {r['rps']:.0f} | {r['p99']:.1f} | {r['errors']} | "
                     + " | ".join(f"{c:.2f}" for c in r["cores"]) + " |")
    for name in dict.fromkeys(r["name"] for r in rows):
        mine = [r for r in rows if r["name"] == name]
        lopsided = sum(min(r["cores"]) < 0.25 * max(r["cores"]) for r in mine)
        lines += ["", f"{name}: median {np.median([r['rps'] for r in mine]):.0f} req/s, p99 median "
                      f"{np.median([r['p99'] for r in mine]):.1f} ms; runs where one worker did less than a quarter "
                      f"of the other's work: **{lopsided} of {len(mine)}**."]
    lines += ["", "With keep-alive, a gthread worker keeps every connection it accepted; when a client opens its "
                  "connections in a burst, one worker can take them all while the other idles. Sync workers close "
                  "the connection after each answer, so every request goes to whichever worker is free.",
              "", f"Load average (1 min, {os.cpu_count()} cores): {load}."]
    return "\n".join(lines)


def soak(models: Path, script: Path, seconds: int, tmp: Path) -> dict:
    """Concurrency-32 load on the default settings for ``seconds``: one wrk run (its connections opened
    once, as a long-lived client's pool would be), with the answers of every tenth counted from the
    server's own Prometheus counter; worker RSS at the start and the end, CPU of server and wrk."""
    proc, port, backend = serve_scenario(models, {}, tmp, "soak")
    try:
        wrk_load(port, script, SOAK_CONCURRENCY, max(1, min(10, round(seconds / 10))))  # past first-touch allocations
        rss_start, pids = worker_rss_mb(proc.pid), server_pids(proc.pid)
        cpu_before, usage = cpu_seconds(pids), resource.getrusage(resource.RUSAGE_CHILDREN)
        marks = [(time.monotonic(), answered(port))]
        wrk = subprocess.Popen(wrk_command(port, script, SOAK_CONCURRENCY, seconds), stdout=subprocess.PIPE, text=True)
        for i in range(1, 11):
            time.sleep(max(0.0, marks[0][0] + i * seconds / 10 - time.monotonic()))
            marks.append((time.monotonic(), answered(port)))
            print(f"[serve_load] soak tenth {i}: {marks[-1][1]}", flush=True)
        out = wrk.communicate()[0]
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        server_cpu = cpu_seconds(pids) - cpu_before
        rss_end = worker_rss_mb(proc.pid)
    finally:
        stop(proc)
    tenths = [{"n": b[1][0] - a[1][0], "errors": b[1][1] - a[1][1], "rps": (b[1][0] - a[1][0]) / (b[0] - a[0])}
              for a, b in zip(marks, marks[1:])]
    whole = {**wrk_summary(out), "server_cpu": server_cpu,
             "wrk_cpu": after.ru_utime + after.ru_stime - usage.ru_utime - usage.ru_stime}
    return {"backend": backend, "tenths": tenths, "whole": whole, "rss_start": rss_start, "rss_end": rss_end}


def answered(port: int) -> tuple[int, int]:
    """(2xx answers, other answers) to ``POST /predict/digit`` so far, summed over all workers (/metrics)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    ok = other = 0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "serve_requests_total" and sample.labels.get("route") == "/predict/digit":
                if sample.labels.get("status", "").startswith("2"):
                    ok += int(sample.value)
                else:
                    other += int(sample.value)
    return ok, other


# ---- the report -----------------------------------------------------------------------------


def raw_table(raw: list) -> list[str]:
    lines = ["Raw predictor, batch 1, one (1, 1, 28, 28) digit, in-process:", "",
             "| predictor | us per call | calls/s |", "|---|---:|---:|"]
    return lines + [f"| {label} | {us:.0f} | {1e6 / us:.0f} |" for label, us in raw]


def load_table(rows: list[dict], floors: dict, seconds: int) -> list[str]:
    lines = [f"HTTP: `POST /predict/digit`, one raw {IMAGE_SIZE}x{IMAGE_SIZE} PNG per request, wrk with 1 thread "
             f"and keep-alive connections, {seconds} s per row; gunicorn `-w 2 --threads 4` (gthread workers) "
             "unless the scenario says otherwise, one predictor (1 math thread) per worker. CPU columns: cores in use on average (CPU seconds / wall seconds); "
             "server ms/request: the server's CPU time per answered request.", "",
             "| scenario | backend | concurrency | requests | errors | p50 ms | p99 ms | req/s | server CPU (cores) | "
             "server CPU ms/request | wrk CPU (cores) |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['label']} | {r['backend']} | {r['level']} | {r['n']} | {r['errors']} | {r['p50']:.2f} | "
                     f"{r['p99']:.2f} | {r['rps']:.0f} | {r['server_cpu'] / r['wall']:.2f} | "
                     f"{r['server_cpu'] / max(r['n'], 1) * 1e3:.2f} | {r['wrk_cpu'] / r['wall']:.3f} |")
    lines += ["", "Concurrency 1: HTTP p50 against the same work in this process (decode + preprocess the same PNG, "
              "then the scenario's backend at batch 1; medians):", "",
              "| scenario | preprocess ms | backend ms | in-process ms | HTTP p50 ms | HTTP p50 / in-process |",
              "|---|---:|---:|---:|---:|---:|"]
    for r in (r for r in rows if r["level"] == 1 and r["backend"] in floors):
        f = floors[r["backend"]]
        lines.append(f"| {r['label']} | {f['pre']:.3f} | {f['model']:.3f} | {f['total']:.3f} | {r['p50']:.2f} | "
                     f"**{r['p50'] / f['total']:.2f}x** |")
    return lines


def verdicts(rows: list[dict], floors: dict) -> list[str]:
    """Issue 9's targets at concurrency 32, whether batching wins at every concurrency, and where the time goes."""
    by = {(r["name"], r["level"]): r for r in rows}
    lines = []
    if (auto := by.get(("auto", 32))) is not None:
        ok = auto["rps"] >= TARGET["rps"] and auto["p99"] < TARGET["p99_ms"] and auto["errors"] == 0
        lines.append(f"Targets at concurrency 32, auto: >= {TARGET['rps']} req/s, p99 < {TARGET['p99_ms']:g} ms, "
                     f"0 errors; measured {auto['rps']:.0f} req/s, p99 {auto['p99']:.1f} ms, {auto['errors']} errors: "
                     f"**{'met' if ok else 'not met'}**.")
        cpu_ms = auto["server_cpu"] / max(auto["n"], 1) * 1e3
        f = floors[auto["backend"]]
        rest = cpu_ms - f["pre"] - f["model"]
        live = by.get(("live", 32))
        live_text = (f", of which {live['server_cpu'] / max(live['n'], 1) * 1e3:.2f} ms is what the server spends on "
                     "`GET /v2/health/live`, a route that does nothing") if live else ""
        lines.append(f"Where a request's server CPU goes (auto, concurrency 32): {cpu_ms:.2f} ms in all = "
                     f"preprocessing {f['pre']:.2f} ms ({f['pre'] / cpu_ms:.0%}) + {auto['backend']} "
                     f"{f['model']:.2f} ms ({f['model'] / cpu_ms:.0%}) + the rest (HTTP parsing, Flask, threads, "
                     f"metrics, JSON) {rest:.2f} ms ({rest / cpu_ms:.0%}){live_text}; {os.cpu_count()} cores / "
                     f"{cpu_ms:.2f} ms = a ceiling of {os.cpu_count() / cpu_ms * 1e3:.0f} req/s "
                     f"(the server used {auto['server_cpu'] / auto['wall']:.2f} cores, wrk "
                     f"{auto['wrk_cpu'] / auto['wall']:.3f}).")
    lines += floor_verdicts(by, floors)
    sync = [(by.get(("auto", c)), by.get(("auto+sync", c))) for c in LEVELS]
    if all(gthread and other for gthread, other in sync):
        def per_request(r):
            return r["server_cpu"] / max(r["n"], 1) * 1e3
        rps = ", ".join(f"{o['rps'] / g['rps']:.2f}x" for g, o in sync)
        p99 = ", ".join(f"{g['p99']:.1f} -> {o['p99']:.1f} ms" for g, o in sync)
        cpu = ", ".join(f"{per_request(g):.2f} -> {per_request(o):.2f} ms" for g, o in sync)
        lines.append("Sync workers (`-w 2`) against gthread (`-w 2 --threads 4`), auto, at concurrency "
                     f"{', '.join(str(c) for c in LEVELS)}: req/s {rps}; p99 {p99}; server CPU per request {cpu}.")
    for name in ("auto", "paddle", "onnxruntime"):
        pairs = [(by.get((name, c)), by.get((name + "+batching", c))) for c in LEVELS]
        if all(off and on for off, on in pairs):
            wins = [on["rps"] > off["rps"] and on["errors"] == 0 for off, on in pairs]
            ratios = ", ".join(f"{on['rps'] / off['rps']:.2f}x" for off, on in pairs)
            lines.append(f"Dynamic batching, {name}: req/s with / without at concurrency "
                         f"{', '.join(str(c) for c in LEVELS)}: "
                         f"{ratios}; wins at every "
                         f"concurrency: **{'yes' if all(wins) else 'no'}**"
                         + (" (so it stays off by default)." if name == "auto" and not all(wins) else "."))
    return lines


FLOOR_PAIRS = (("auto", "floor", "gthread"), ("auto+sync", "floor+sync", "sync"))  # our server, Flask alone


def floor_verdicts(by: dict, floors: dict) -> list[str]:
    """What the targets leave for the HTTP stack, against what gunicorn + Flask cost doing nothing."""
    lines = []
    for server, floor, workers in FLOOR_PAIRS:
        ours, alone = by.get((server, 1)), by.get((floor, 1))
        if ours is None or alone is None:
            continue
        inside = floors[ours["backend"]]["total"]
        left = 0.5 * inside - alone["p50"]
        lines.append(f"The 1.5x target at concurrency 1, {workers} workers: in-process work {inside:.3f} ms, so "
                     f"HTTP may add at most {0.5 * inside:.2f} ms (p50 {1.5 * inside:.2f} ms). Flask alone under the "
                     f"same gunicorn, answering the same request with no work, takes {alone['p50']:.2f} ms p50, "
                     f"which leaves **{max(left, 0):.2f} ms** for all that our server does besides preprocessing "
                     f"and the model (routing, metrics, checks, the answer); our server: {ours['p50']:.2f} ms p50, "
                     f"{ours['p50'] - inside:.2f} ms beyond the in-process work.")
    for server, floor, workers in FLOOR_PAIRS:
        ours, alone = by.get((server, 32)), by.get((floor, 32))
        if ours is None or alone is None:
            continue
        f = floors[ours["backend"]]
        stack_ms = alone["server_cpu"] / max(alone["n"], 1) * 1e3
        cores = os.cpu_count() - ours["wrk_cpu"] / ours["wall"]
        best_ms = stack_ms + f["pre"] + f["model"]
        lines.append(f"The {TARGET['rps']} req/s target at concurrency 32, {workers} workers: {cores:.2f} cores (wrk "
                     f"takes the rest) / {TARGET['rps']} req/s = {cores / TARGET['rps'] * 1e3:.2f} ms of server CPU "
                     f"per request. Flask alone costs {stack_ms:.2f} ms per request ({alone['rps']:.0f} req/s), "
                     f"preprocessing {f['pre']:.2f} ms and {ours['backend']} {f['model']:.2f} ms: {best_ms:.2f} ms, a "
                     f"ceiling of **{cores / best_ms * 1e3:.0f} req/s** if all that our server does besides "
                     f"preprocessing and the model (routing, metrics, checks, the answer) cost nothing; measured "
                     f"{ours['rps']:.0f} req/s.")
    return lines


def load_markdown(raw: list, rows: list[dict], floors: dict, seconds: int, load: str) -> str:
    lines = raw_table(raw) + [""] + load_table(rows, floors, seconds) + [""]
    lines += [line for v in verdicts(rows, floors) for line in (v, "")]
    return "\n".join(lines + [f"Load average (1 min, {os.cpu_count()} cores): {load}."])


def soak_markdown(s: dict, seconds: int, load: str) -> str:
    t, whole = s["tenths"], s["whole"]
    rss0, rss1 = sum(s["rss_start"]), sum(s["rss_end"])
    growth, ratio = rss1 / rss0 - 1, t[-1]["rps"] / t[0]["rps"]
    errors = whole["errors"]  # wrk's count: socket errors, timeouts and non-2xx (the tenths' column is the server's)
    ok = errors == 0 and growth < TARGET["soak_rss_growth"] and ratio >= TARGET["soak_last_first"]
    lines = [f"Soak: `POST /predict/digit` ({IMAGE_SIZE}x{IMAGE_SIZE} PNG), concurrency {SOAK_CONCURRENCY}, default "
             f"settings (backend auto chose {s['backend']}, no dynamic batching), gunicorn `-w 2 --threads 4`; one "
             f"wrk run of {seconds} s (connections opened once). Each tenth's answers are counted from the server's "
             "`serve_requests_total` (non-2xx as errors), scraped every tenth.", "",
             "| tenth | answers | errors | req/s |", "|---:|---:|---:|---:|"]
    lines += [f"| {i + 1} | {x['n']} | {x['errors']} | {x['rps']:.0f} |" for i, x in enumerate(t)]
    lines += ["", f"wrk: {whole['n']} requests, p50 {whole['p50']:.2f} ms, p99 {whole['p99']:.2f} ms, "
                  f"{whole['rps']:.0f} req/s; **{errors} errors** (socket errors, timeouts, non-2xx). Throughput last "
                  f"tenth / first tenth: **{ratio:.2f}** ({t[-1]['rps']:.0f} / {t[0]['rps']:.0f} req/s); worker RSS "
                  f"{' + '.join(f'{m:.0f}' for m in s['rss_start'])} = {rss0:.0f} MiB at the start, "
                  f"{' + '.join(f'{m:.0f}' for m in s['rss_end'])} = {rss1:.0f} MiB at the end: **{growth:+.1%}**. "
                  f"Targets (0 errors, RSS growth under {TARGET['soak_rss_growth']:.0%}, last/first at least "
                  f"{TARGET['soak_last_first']}): **{'met' if ok else 'not met'}**. CPU on average: server "
                  f"{whole['server_cpu'] / whole['wall']:.2f} cores, wrk {whole['wrk_cpu'] / whole['wall']:.3f}.",
              "", f"Load average (1 min, {os.cpu_count()} cores): {load}."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.serve_load", description=__doc__.split("\n\n")[0])
    p.add_argument("--models", required=True, help="folder with a digits bundle named mnist (with inference.onnx)")
    p.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"), help="MNIST files (for the test digit)")
    p.add_argument("--seconds", type=int, default=10, help="wrk run per row (default: %(default)s)")
    p.add_argument("--backends", default=",".join(SCENARIOS), help="scenarios to run, comma-separated "
                   "(default: all: %(default)s)")
    p.add_argument("--raw-calls", type=int, default=2000, help="calls per in-process timing (default: %(default)s)")
    p.add_argument("--soak", type=int, nargs="?", const=300, default=None, metavar="SECONDS",
                   help="run only the soak, for SECONDS (default when given: %(const)s) at concurrency "
                        f"{SOAK_CONCURRENCY}; writes the serve_soak section")
    p.add_argument("--balance", action="store_true", help="run only the worker-balance comparison (gthread against "
                   "sync workers, concurrency 8); writes the serve_balance section")
    p.add_argument("--no-write", action="store_true", help="print, do not update docs/BENCHMARKS.md")
    p.add_argument("--allow-busy", action="store_true", help=f"write even when the load average at the start is "
                   f"above {MAX_START_LOAD} (the section then says so in bold)")
    args = p.parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install wrk (or run scripts/setup.sh as root)", file=sys.stderr)
        return 2
    names = [n.strip() for n in args.backends.split(",") if n.strip()]
    if unknown := [n for n in names if n not in SCENARIOS]:
        p.error(f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}")
    models, start_load = Path(args.models).resolve(), os.getloadavg()[0]
    body = digit_png(Path(args.data_dir))
    with tempfile.TemporaryDirectory(prefix="serve-load-") as tmp:
        script = write_wrk_script(body, Path(tmp))
        write_wrk_script(None, Path(tmp))
        if args.soak:
            result = soak(models, script, args.soak, Path(tmp))
        elif args.balance:
            result = balance(models, script, Path(tmp))
        else:
            raw = raw_predictors(models / "mnist", args.raw_calls)
            rows = http_scenarios(models, script, names, args.seconds, Path(tmp))
            floors = {b: in_process_ms(models / "mnist", body, b, args.raw_calls) for b in {r["backend"] for r in rows} - {"-"}}
    load = f"{start_load:.2f} at the start, {os.getloadavg()[0]:.2f} at the end"
    if args.soak:
        text = soak_markdown(result, args.soak, load)
    elif args.balance:
        text = balance_markdown(result, load)
    else:
        text = load_markdown(raw, rows, floors, args.seconds, load)
    print(text)
    if args.no_write:
        return 0
    text = busy_banner(start_load, args.allow_busy) + text
    command = "nice python -m bench.serve_load " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.balance:
        update_section("serve_balance", "Serving: how gunicorn's workers share keep-alive connections", command, text)
    elif args.soak:
        update_section("serve_soak", "Serving: soak under gunicorn (wrk, concurrency 32)", command, text)
    else:
        update_section("serve_load", "Serving: HTTP latency and throughput (gunicorn, wrk)", command, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
