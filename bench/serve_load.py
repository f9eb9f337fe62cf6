"""The image endpoint under load: the production server (``python -m serve``), driven by wrk, against the stack's floor.

    nice python -m bench.serve_load --models DIR [--seconds 10] [--rows auto,batching,...]
    nice python -m bench.serve_load --models DIR --soak [SECONDS]

DIR holds a digits bundle named ``mnist`` with inference.onnx (the export's default). The request
is what the drawing page sends: one 200x200 PNG (the first MNIST test digit, a 7, enlarged, dark
ink on white) as a raw ``image/png`` body to ``POST /predict/digit``. Measures, on loopback:

  1. the same work in this process: decode + preprocess the PNG, then the backend the server
     chose, at batch 1 (medians): what no request can go below;
  2. concurrency 1, 8 and 32 against each row (the production server as shipped, with request
     threads and dynamic batching, with a forced backend) and, as the floor, Flask alone answering
     the same request with no work behind the same front (bench/flask_floor.py): p50/p99, req/s,
     errors (socket errors, timeouts, non-2xx) and the CPU of the server's processes and of wrk;
  3. with ``--soak``: only a soak, the production server at concurrency 32 for SECONDS (default
     300) as one wrk run whose connections stay open, each tenth's answers counted from the
     server's own request counter, and the workers' memory at the start and the end.

Targets as data: at least 1,500 req/s at concurrency 32; in the soak 0 errors, memory growth under
10%, the last tenth at least 0.9x the first. Writes the ``serve_load`` (``serve_soak``) section of
docs/BENCHMARKS.md, only when the 1-minute load average at the start is at most 0.5.
"""
from __future__ import annotations

import argparse
import http.client
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from bench.harness import ROOT, SHARED_DATA, Check, LoadWatch, add_write_flags, free_port, verdict_table
from bench.load import process_tree, rss_mb, start, wrk_load, wrk_summary, write_wrk_script
from bench.report import publish

LEVELS = (1, 8, 32)
SOAK_CONCURRENCY = 32
IMAGE_SIZE = 200  # pixels: a drawing, as the page sends it (its canvas is 280x280)
PATH = "/predict/digit"
TARGETS = {"rps_at_32": 1500, "soak_rss_growth": 0.10, "soak_last_first": 0.9}
# row -> (label, the server's flags); "floor" is Flask alone behind the same front
ROWS = {
    "auto": ("the production server as shipped (`--workers 2`, backend auto)", []),
    "batching": ("`--request-threads 2 --dynamic-batching`", ["--request-threads", "2", "--dynamic-batching"]),
    "onnxruntime": ("`--backend onnxruntime`", ["--backend", "onnxruntime"]),
    "openvino": ("`--backend openvino`", ["--backend", "openvino"]),
    "paddle": ("`--backend paddle`", ["--backend", "paddle"]),
    "floor": ("Flask alone, no work, behind the same front (`bench/flask_floor.py`)", None),
}
PLATFORM_BACKEND = {"paddle_inference": "paddle", "onnxruntime": "onnxruntime", "openvino": "openvino"}


def digit_png(data_dir: Path | None, size: int = IMAGE_SIZE) -> bytes:
    """The first MNIST test image (a 7) enlarged to size x size, dark ink on white, as PNG bytes."""
    import cv2

    from common.datasets import read_mnist

    image = read_mnist("test", data_dir, limit=1)[0][0]
    drawing = 255 - cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR)
    return cv2.imencode(".png", drawing)[1].tobytes()


def in_process_ms(bundle_dir: Path, body: bytes, backend: str, calls: int) -> dict:
    """Median ms of the server's per-request work in this process on ``body``: decode and preprocess (the
    bundle's DigitPipeline), then ``backend`` (serve's own, pool of 1) at batch 1."""
    from common.bundle import read_bundle
    from serve import config
    from serve.backends import create_backend
    from serve.pipelines import pipeline_for

    bundle = read_bundle(bundle_dir)
    settings = config.resolve({"MODELS": str(bundle_dir), "POOL_SIZE": 1, "THREADS": 1, "BACKEND": backend})
    runner = create_backend(bundle, settings, [bundle.zeros(1)] * 3)
    pipeline = pipeline_for(bundle)
    pre, model = [], []
    for i in range(calls + 20):
        t0 = time.perf_counter()
        header = pipeline.header(body)
        _, x = pipeline.model_input(pipeline.decode(body, settings["MAX_PIXELS"], header))
        t1 = time.perf_counter()
        runner.run([x])
        if i >= 20:  # warm-up
            pre.append(t1 - t0), model.append(time.perf_counter() - t1)
    runner.close()
    pre_ms, model_ms = float(np.median(pre)) * 1e3, float(np.median(model)) * 1e3
    return {"pre": pre_ms, "model": model_ms, "total": pre_ms + model_ms}


def launch(row: str, models: Path, log: Path, port: int):
    """Start one row's server on ``port``."""
    flags = ROWS[row][1]
    if flags is None:
        argv = [sys.executable, "-m", "granian", "--interface", "rsgi", "--factory", "--workers", "2", "--http", "1",
                "--no-ws", "--port", str(port), "bench.flask_floor:rsgi_app"]
        return start(argv, port, log, cwd=ROOT)
    argv = [sys.executable, "-m", "serve", "--models", str(models), "--port", str(port), "--workers", "2", *flags]
    return start(argv, port, log, cwd=ROOT, env={"PROMETHEUS_MULTIPROC_DIR": ""})


def backend_of(port: int) -> str:
    """The backend the server chose for mnist."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/v2/models/mnist")
    platform = json.loads(conn.getresponse().read())["platform"]
    return PLATFORM_BACKEND.get(platform, platform)


def measure(rows: list[str], models: Path, script: Path, seconds: float, tmp: Path) -> dict:
    results = {}
    for row in rows:
        port = free_port()
        running = launch(row, models, tmp / f"{row}.log", port)
        try:
            backend = "-" if ROWS[row][1] is None else backend_of(port)
            wrk_load(port, PATH, script, 8, 5)  # warm connections and caches, not reported
            levels = {c: wrk_load(port, PATH, script, c, seconds, running.pids()) for c in LEVELS}
        finally:
            running.stop()
        results[row] = {"label": ROWS[row][0], "backend": backend, "levels": levels}
        print(f"{row:12s} ({backend}) " + "  ".join(f"c={c}: {levels[c]['rps']:.0f} req/s p99 {levels[c]['p99']:.1f} ms"
                                                  for c in LEVELS), flush=True)
        time.sleep(2)
    return results


def load_markdown(results: dict, floors: dict, seconds: float, watch: LoadWatch) -> str:
    lines = [f"`POST {PATH}`, one raw {IMAGE_SIZE}x{IMAGE_SIZE} PNG per request, wrk with 1 thread and keep-alive "
             f"connections, {seconds:g} s per concurrency, 2 workers. Server CPU: its processes' CPU time per answered "
             "request; wrk: the cores the load generator used.", "",
             "| row | backend | c | req/s | p50 ms | p99 ms | errors | server CPU ms/request | wrk cores |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results.values():
        for c, x in r["levels"].items():
            lines.append(f"| {r['label']} | {r['backend']} | {c} | {x['rps']:.0f} | {x['p50']:.2f} | {x['p99']:.1f} | "
                         f"{x['errors']} | {x['cpu_ms_per_request']:.3f} | {x['wrk_cpu'] / x['wall']:.3f} |")
    lines += ["", "The same work in this process (decode + preprocess the same PNG, then the backend at batch 1; "
              "medians), against the server's p50 at concurrency 1:", "",
              "| backend | preprocess ms | backend ms | in-process ms | HTTP p50 ms (production server) |",
              "|---|---:|---:|---:|---:|"]
    for backend, f in floors.items():
        http = next((r["levels"][1]["p50"] for r in results.values() if r["backend"] == backend), float("nan"))
        lines.append(f"| {backend} | {f['pre']:.3f} | {f['model']:.3f} | {f['total']:.3f} | {http:.2f} |")
    checks = []
    if "auto" in results:
        checks.append(Check("req/s at concurrency 32, the production server", results["auto"]["levels"][32]["rps"],
                            TARGETS["rps_at_32"], fmt="{:.0f}"))
        checks.append(Check("errors, the production server, all concurrencies",
                            sum(x["errors"] for x in results["auto"]["levels"].values()), 0, at_least=False,
                            fmt="{:.0f}"))
    return "\n".join(lines) + "\n\n" + verdict_table(checks) + "\n\n" + watch.note() + "\n"


def answered(port: int) -> tuple[int, int]:
    """(2xx answers, other answers) to ``POST /predict/digit`` so far, summed over all workers (/metrics)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    ok = other = 0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "serve_requests_total" and sample.labels.get("route") == PATH:
                if sample.labels.get("status", "").startswith("2"):
                    ok += int(sample.value)
                else:
                    other += int(sample.value)
    return ok, other


def soak(models: Path, script: Path, seconds: int, tmp: Path) -> dict:
    """The production server at concurrency 32 for ``seconds``: one wrk run (its connections opened once, as a
    long-lived client's pool would be), the answers of every tenth from the server's own counter, and the
    workers' memory at the start and the end."""
    port = free_port()
    running = launch("auto", models, tmp / "soak.log", port)
    try:
        wrk_load(port, PATH, script, SOAK_CONCURRENCY, max(1, min(10, round(seconds / 10))))  # first-touch allocations
        workers = process_tree(running.proc.pid)[1:]
        rss_start = [rss_mb(pid) for pid in workers]
        marks = [(time.monotonic(), answered(port))]
        wrk = subprocess.Popen(["wrk", "-t1", f"-c{SOAK_CONCURRENCY}", f"-d{seconds}s", "--timeout", "10s", "-s",
                                str(script), f"http://127.0.0.1:{port}{PATH}"], stdout=subprocess.PIPE, text=True)
        for i in range(1, 11):
            time.sleep(max(0.0, marks[0][0] + i * seconds / 10 - time.monotonic()))
            marks.append((time.monotonic(), answered(port)))
            print(f"soak tenth {i}: {marks[-1][1]}", flush=True)
        out = wrk.communicate()[0]
        rss_end = [rss_mb(pid) for pid in workers]
    finally:
        running.stop()
    tenths = [{"n": b[1][0] - a[1][0], "errors": b[1][1] - a[1][1], "rps": (b[1][0] - a[1][0]) / (b[0] - a[0])}
              for a, b in zip(marks, marks[1:])]
    return {"tenths": tenths, "whole": wrk_summary(out), "rss_start": rss_start, "rss_end": rss_end}


def soak_markdown(s: dict, seconds: int, watch: LoadWatch) -> str:
    t, whole = s["tenths"], s["whole"]
    rss0, rss1 = sum(s["rss_start"]), sum(s["rss_end"])
    lines = [f"`POST {PATH}` ({IMAGE_SIZE}x{IMAGE_SIZE} PNG), concurrency {SOAK_CONCURRENCY}, the production server "
             f"as shipped; one wrk run of {seconds} s (connections opened once). Each tenth's answers are counted "
             "from the server's `serve_requests_total` (non-2xx as errors), scraped every tenth.", "",
             "| tenth | answers | errors | req/s |", "|---:|---:|---:|---:|"]
    lines += [f"| {i + 1} | {x['n']} | {x['errors']} | {x['rps']:.0f} |" for i, x in enumerate(t)]
    lines += ["", f"wrk: {whole['n']} requests, p50 {whole['p50']:.2f} ms, p99 {whole['p99']:.2f} ms, "
                  f"{whole['rps']:.0f} req/s. Worker memory {' + '.join(f'{m:.0f}' for m in s['rss_start'])} = "
                  f"{rss0:.0f} MiB at the start, {' + '.join(f'{m:.0f}' for m in s['rss_end'])} = {rss1:.0f} MiB at "
                  "the end.", ""]
    checks = [Check("errors (wrk: socket errors, timeouts, non-2xx)", whole["errors"], 0, at_least=False, fmt="{:.0f}"),
              Check("worker memory growth", rss1 / rss0 - 1, TARGETS["soak_rss_growth"], at_least=False,
                    fmt="{:+.1%}"),
              Check("req/s last tenth / first tenth", t[-1]["rps"] / t[0]["rps"], TARGETS["soak_last_first"],
                    fmt="{:.2f}")]
    return "\n".join(lines) + "\n" + verdict_table(checks) + "\n\n" + watch.note() + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.serve_load", description=__doc__.split("\n\n")[0])
    p.add_argument("--models", required=True, type=Path, help="folder with a digits bundle named mnist")
    p.add_argument("--data-dir", type=Path, default=SHARED_DATA, help="MNIST files (for the test digit)")
    p.add_argument("--seconds", type=float, default=10, help="wrk run per concurrency (default: %(default)s)")
    p.add_argument("--rows", default="auto,batching,floor", help=f"rows to run, of {', '.join(ROWS)} "
                   "(default: %(default)s)")
    p.add_argument("--calls", type=int, default=2000, help="calls per in-process timing (default: %(default)s)")
    p.add_argument("--soak", type=int, nargs="?", const=300, default=None, metavar="SECONDS",
                   help="run only the soak, for SECONDS (default when given: %(const)s)")
    add_write_flags(p)
    args = p.parse_args(argv)
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk (or run scripts/setup.sh as root)")
    rows = [r for r in args.rows.split(",") if r]
    if unknown := [r for r in rows if r not in ROWS]:
        p.error(f"unknown row(s) {', '.join(unknown)}; choose from {', '.join(ROWS)}")
    models = args.models.resolve()
    body = digit_png(args.data_dir)
    watch = LoadWatch()
    if not args.no_write:
        watch.banner(args.allow_busy)  # refuse a busy start before minutes of measuring
    command = "nice python -m bench.serve_load " + " ".join(argv if argv is not None else sys.argv[1:])
    with tempfile.TemporaryDirectory(prefix="serve-load-") as tmp:
        script = write_wrk_script(Path(tmp), "digit", body, "image/png")
        if args.soak:
            text = soak_markdown(soak(models, script, args.soak, Path(tmp)), args.soak, watch)
            publish("serve_soak", "Serving: soak of the production server (wrk, concurrency 32)", text, command,
                    watch, args.allow_busy, write=not args.no_write)
            return 0
        results = measure(rows, models, script, args.seconds, Path(tmp))
    floors = {b: in_process_ms(models / "mnist", body, b, args.calls)
              for b in {r["backend"] for r in results.values()} - {"-"}}
    publish("serve_load", "Serving: the image endpoint under load (production server, wrk)",
            load_markdown(results, floors, args.seconds, watch), command, watch, args.allow_busy,
            write=not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
