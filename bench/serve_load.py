"""Load test of the prediction service under gunicorn, against the raw predictor measured in the same run.

    nice python -m bench.serve_load --models DIR [--seconds 5] [--soak-seconds 180]

DIR holds a digits bundle named ``mnist`` with inference.onnx (the export's default; for the
onnxruntime, OpenVINO and auto rows). Measures, all on loopback:
  1. the raw predictor at batch 1 (Paddle Inference in several configurations, onnxruntime and
     OpenVINO): the floor a request cannot go below;
  2. single-digit POST /predict/digit (raw PNG body) at concurrency 1, 8 and 32 under gunicorn,
     for each backend forced (Paddle, also with dynamic batching; onnxruntime, also with dynamic
     batching; OpenVINO) and for --backend auto: p50/p99 latency and throughput;
  3. a soak (Paddle Inference): minutes of concurrent load, counting errors and sampling the workers' RSS.
The client runs on the same machine (it competes for the cores), in separate processes.
Writes the "serve_load" section of docs/BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import gzip
import http.client
import multiprocessing as mp
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import update_section

LEVELS = (1, 8, 32)
CLIENT_PROCESSES = 2


def digit_png(data_dir: Path) -> bytes:
    """The first MNIST test image as PNG bytes (a 7)."""
    import cv2

    with gzip.open(data_dir / "mnist" / "t10k-images-idx3-ubyte.gz") as f:
        image = np.frombuffer(f.read()[16:16 + 784], np.uint8).reshape(28, 28)
    return cv2.imencode(".png", image)[1].tobytes()


# ---- raw predictor --------------------------------------------------------------------------


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


# ---- HTTP load ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_gunicorn(models: Path, env: dict, log: Path) -> tuple[subprocess.Popen, int]:
    """gunicorn with the documented production settings for 2 cores; returns (process, port)."""
    port = free_port()
    cmd = [sys.executable, "-m", "gunicorn", "-c", "serve/gunicorn_conf.py", "-w", "2", "--threads", "4",
           "-b", f"127.0.0.1:{port}", "serve.app:create_app()"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log.open("wb"), stderr=subprocess.STDOUT,
                            env={**os.environ, "SERVE_MODELS": str(models), "SERVE_POOL_SIZE": "1", **env})
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gunicorn exited:\n{log.read_text()[-3000:]}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/v2/health/ready")
            if conn.getresponse().status == 200:
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


def _client(port: int, body: bytes, threads: int, seconds: float, max_requests: int, out) -> None:
    """One client process: ``threads`` keep-alive connections posting ``body`` until time or count runs out."""
    import threading

    latencies, errors, lock = [], [0], threading.Lock()
    deadline = time.perf_counter() + seconds

    def worker():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine, bad, n = [], 0, 0
        while time.perf_counter() < deadline and n < max_requests:
            started = time.perf_counter()
            try:
                conn.request("POST", "/predict/digit", body=body, headers={"Content-Type": "image/png"})
                response = conn.getresponse()
                response.read()
                ok = response.status == 200
            except OSError:
                ok = False
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            mine.append(time.perf_counter() - started)
            bad += not ok
            n += 1
        with lock:
            latencies.extend(mine)
            errors[0] += bad

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    began = time.perf_counter()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    out.put((latencies, errors[0], time.perf_counter() - began))


def load(port: int, body: bytes, concurrency: int, seconds: float, max_requests: int = 200_000) -> dict:
    """Run ``concurrency`` connections over CLIENT_PROCESSES processes; latency percentiles and throughput."""
    procs = min(CLIENT_PROCESSES, concurrency)
    ctx = mp.get_context("fork")
    out = ctx.Queue()
    workers = [ctx.Process(target=_client, args=(port, body, concurrency // procs + (i < concurrency % procs),
                                                 seconds, max_requests // concurrency + 1, out))
               for i in range(procs)]
    for w in workers:
        w.start()
    results = [out.get(timeout=seconds + 120) for _ in workers]
    for w in workers:
        w.join()
    latencies = np.array([x for r in results for x in r[0]]) * 1000
    wall = max(r[2] for r in results)
    return {"n": len(latencies), "errors": sum(r[1] for r in results), "p50": float(np.percentile(latencies, 50)),
            "p99": float(np.percentile(latencies, 99)), "rps": len(latencies) / wall}


def worker_rss_mb(master: int) -> list[float]:
    """RSS (MiB) of the gunicorn master's child processes."""
    children = []
    for task in Path(f"/proc/{master}/task").iterdir():
        children += (task / "children").read_text().split()
    rss = []
    for pid in children:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss.append(int(line.split()[1]) / 1024)
    return rss


# ---- the run --------------------------------------------------------------------------------


SCENARIOS = [("Paddle Inference", {"SERVE_BACKEND": "paddle"}),
             ("Paddle Inference + dynamic batching (max 16, 2 ms)", {"SERVE_BACKEND": "paddle",
                                                                    "SERVE_DYNAMIC_BATCHING": "1"}),
             ("onnxruntime", {"SERVE_BACKEND": "onnxruntime"}),
             ("onnxruntime + dynamic batching (max 16, 2 ms)", {"SERVE_BACKEND": "onnxruntime",
                                                               "SERVE_DYNAMIC_BATCHING": "1"}),
             ("OpenVINO", {"SERVE_BACKEND": "openvino"}),
             ("auto (the default: fastest that matches Paddle at load)", {"SERVE_BACKEND": "auto"})]


def http_scenarios(models: Path, body: bytes, seconds: float, tmp: Path) -> list[tuple[str, int, dict]]:
    rows = []
    for label, env in SCENARIOS:
        proc, port = start_gunicorn(models, {"PROMETHEUS_MULTIPROC_DIR": str(tmp / label[:5]), **env},
                                    tmp / f"{label[:5]}.log")
        try:
            load(port, body, 4, 1.0)  # warm connections and caches
            for level in LEVELS:
                rows.append((label, level, load(port, body, level, seconds)))
                print(f"[serve_load] {label} c={level}: {rows[-1][2]}", flush=True)
        finally:
            stop(proc)
    return rows


def soak(models: Path, body: bytes, seconds: float, tmp: Path) -> dict:
    """Concurrency-8 load for ``seconds``, in 10 chunks; RSS of the workers before and after."""
    proc, port = start_gunicorn(models, {"PROMETHEUS_MULTIPROC_DIR": str(tmp / "soak"), "SERVE_BACKEND": "paddle"},
                                tmp / "soak.log")
    try:
        load(port, body, 8, min(10.0, seconds / 10))  # past first-touch allocations
        rss_start = worker_rss_mb(proc.pid)
        chunks = [load(port, body, 8, seconds / 10) for _ in range(10)]
        rss_end = worker_rss_mb(proc.pid)
    finally:
        stop(proc)
    return {"requests": sum(c["n"] for c in chunks), "errors": sum(c["errors"] for c in chunks),
            "rps_first": chunks[0]["rps"], "rps_last": chunks[-1]["rps"], "p99_first": chunks[0]["p99"],
            "p99_last": chunks[-1]["p99"], "rss_start": rss_start, "rss_end": rss_end}


def markdown(raw: list, http_rows: list, soak_result: dict | None, seconds: float) -> str:
    paddle_us = raw[0][1]
    onnx_us = next((us for label, us in raw if label.startswith("onnxruntime")), None)
    lines = ["Raw predictor, batch 1, one (1, 1, 28, 28) digit, in-process (the floor for a request):", "",
             "| predictor | us per call | calls/s |", "|---|---:|---:|"]
    lines += [f"| {label} | {us:.0f} | {1e6 / us:.0f} |" for label, us in raw]
    if onnx_us:
        lines += ["", (f"Paddle Inference (the server's settings) / onnxruntime at batch 1: **{paddle_us / onnx_us:.1f}x** "
                       f"({paddle_us:.0f} us vs {onnx_us:.0f} us).")]
    lines += ["", (f"HTTP: `POST /predict/digit`, one raw PNG digit per request, keep-alive connections, {seconds:g} s "
                   "per row; gunicorn `-w 2 --threads 4`, one predictor (1 math thread) per worker; the load "
                   f"generator ({CLIENT_PROCESSES} processes) shares the machine's cores."), "",
              "| backend | concurrency | requests | errors | p50 ms | p99 ms | req/s | req/s vs raw predictor x2 workers |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
    openvino_us = next((us for label, us in raw if label.startswith("OpenVINO")), None)
    # the raw floor of each scenario's backend, by the first letters of its label (auto: the fastest)
    floors = {"onnx": onnx_us, "Open": openvino_us, "auto": min(us for us in (paddle_us, onnx_us, openvino_us) if us)}
    for label, level, r in http_rows:
        floor = 2 * 1e6 / (floors.get(label[:4]) or paddle_us)
        lines.append(f"| {label} | {level} | {r['n']} | {r['errors']} | {r['p50']:.2f} | {r['p99']:.2f} | "
                     f"{r['rps']:.0f} | {r['rps'] / floor:.0%} |")
    if soak_result:
        s = soak_result
        lines += ["", (f"Soak: Paddle Inference, concurrency 8, {s['requests']} requests, **{s['errors']} errors**; "
                       f"throughput first/last tenth {s['rps_first']:.0f}/{s['rps_last']:.0f} req/s, p99 "
                       f"{s['p99_first']:.1f}/{s['p99_last']:.1f} ms; worker RSS at start "
                       f"{', '.join(f'{m:.0f}' for m in s['rss_start'])} MiB, at end "
                       f"{', '.join(f'{m:.0f}' for m in s['rss_end'])} MiB.")]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", required=True, help="folder with a digits bundle named mnist (with inference.onnx)")
    p.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"), help="MNIST files (for the test digit)")
    p.add_argument("--seconds", type=float, default=5.0, help="load per row (default: %(default)s)")
    p.add_argument("--raw-calls", type=int, default=2000, help="calls per raw predictor timing (default: %(default)s)")
    p.add_argument("--soak-seconds", type=float, default=0.0, help="soak duration; 0 skips it (default: %(default)s)")
    p.add_argument("--no-write", action="store_true", help="print, do not update docs/BENCHMARKS.md")
    args = p.parse_args(argv)
    models = Path(args.models).resolve()
    body = digit_png(Path(args.data_dir))
    raw = raw_predictors(models / "mnist", args.raw_calls)
    for label, us in raw:
        print(f"[serve_load] raw {label}: {us:.0f} us", flush=True)
    with tempfile.TemporaryDirectory(prefix="serve-load-") as tmp:
        http_rows = http_scenarios(models, body, args.seconds, Path(tmp))
        soak_result = soak(models, body, args.soak_seconds, Path(tmp)) if args.soak_seconds else None
    text = markdown(raw, http_rows, soak_result, args.seconds)
    print(text)
    if not args.no_write:
        command = "nice python -m bench.serve_load " + " ".join(argv if argv is not None else sys.argv[1:])
        update_section("serve_load", "Serving: HTTP latency and throughput (gunicorn)", command, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
