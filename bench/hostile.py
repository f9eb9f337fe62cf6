"""Hostile clients against a server as it is deployed: what each attack does to everyone else, side by side.

    nice python -m bench.hostile --models DIR [--baseline CHECKOUT]

Starts the production server (``python -m serve``, 2 workers) over DIR (a ``mnist`` and a ``housing``
bundle) and, with ``--baseline``, the production setup an older checkout documents (its gunicorn
line, ``-w 2 --threads 4``, over DIR_OLD: bundles that checkout exported, ``--baseline-models``),
one at a time, and for each:

  - holds ATTACKERS connections of each slow-client kind (slow headers, slow body, idle, never
    reading, a lying Content-Length) while timing a normal house request every 50 ms: the slowest
    normal request, and how many failed;
  - sends the malformed requests that once got a 500, and records the statuses;
  - uploads four 5000x5000 16-bit RGBA PNGs at once (legal: 25 MP each) while sampling the
    workers' memory: the peak;
  - sends one request of 64 drawings of 2000x2000 (legal one by one) and reads the CPU the server
    spent on it, and its status.

The attacks are bench/attacks.py's, which tests/test_hostile.py asserts on; here they are figures. Writes the
``hostile`` section of docs/BENCHMARKS.md (quiet machine only).
"""
from __future__ import annotations

import argparse
import json
import socket
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from bench.harness import ROOT, LoadWatch, add_write_flags, free_port
from bench.load import cpu_seconds, process_tree, rss_mb, start
from bench.report import publish
from bench.attacks import ATTACKS, MALFORMED, drawn_png, raw_request

HOUSE = [0.00632, 18.0, 2.31, 0.0, 0.538, 6.575, 65.2, 4.09, 1.0, 296.0, 15.3, 396.9, 4.98]
ATTACKERS, HOLD_S = 64, 6.0
FIVE = ["invalid chunk size", "superscript length", "5000-digit length", "input name is a list",
        "output name is an object"]


def slow_clients(port: int, kind: str) -> dict:
    """ATTACKERS connections of ``kind`` for HOLD_S seconds; normal requests meanwhile."""
    until = time.monotonic() + HOLD_S

    def attacker():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                ATTACKS[kind](sock, until)
        except OSError:
            pass

    threads = [threading.Thread(target=attacker, daemon=True) for _ in range(ATTACKERS)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    latencies, failed = [], 0
    while time.monotonic() < until - 0.3:
        started = time.perf_counter()
        try:
            ok = requests.post(f"http://127.0.0.1:{port}/predict/house", json=HOUSE, timeout=30).status_code == 200
        except requests.RequestException:
            ok = False
        latencies.append(time.perf_counter() - started)
        failed += not ok
        time.sleep(0.05)
    for t in threads:
        t.join(20)
    return {"max_s": max(latencies), "median_s": sorted(latencies)[len(latencies) // 2], "n": len(latencies),
            "failed": failed}


def malformed(port: int) -> dict:
    return {name: raw_request(port, MALFORMED[name][0])[0] for name in FIVE}


def memory_peak(running) -> dict:
    """Four concurrent uploads of the costliest legal image; the peak memory of the server's processes."""
    deep = drawn_png(5000, deep=True)
    peaks, stop = {}, threading.Event()

    def sample():
        while not stop.is_set():
            for pid in process_tree(running.proc.pid):
                try:
                    peaks[pid] = max(peaks.get(pid, 0.0), rss_mb(pid))
                except OSError:
                    pass
            time.sleep(0.02)

    before = sum(rss_mb(pid) for pid in process_tree(running.proc.pid))
    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        with ThreadPoolExecutor(4) as pool:
            statuses = list(pool.map(lambda _: requests.post(f"http://127.0.0.1:{running.port}/predict/digit",
                                                             data=deep, headers={"Content-Type": "image/png"},
                                                             timeout=120).status_code, range(4)))
    finally:
        stop.set()
        sampler.join()
    return {"before_mb": before, "peak_mb": sum(peaks.values()), "statuses": statuses}


def many_images(running) -> dict:
    """One request of 64 drawings of 2000x2000: its status, wall time and the server's CPU for it."""
    files = [("file", (f"{i}.png", drawn_png(2000), "image/png")) for i in range(64)]
    pids = process_tree(running.proc.pid)
    cpu0, started = cpu_seconds(pids), time.monotonic()
    r = requests.post(f"http://127.0.0.1:{running.port}/predict/digit", files=files, timeout=300)
    return {"status": r.status_code, "wall_s": time.monotonic() - started, "cpu_s": cpu_seconds(pids) - cpu0}


def run_server(label: str, argv: list[str], cwd: Path, env: dict, port: int, log: Path) -> dict:
    running = start(argv, port, log, env=env, cwd=cwd)
    try:
        result = {"label": label, "slow": {kind: slow_clients(port, kind) for kind in ATTACKS}}
        time.sleep(2)
        result["malformed"] = malformed(port)
        result["memory"] = memory_peak(running)
        result["many"] = many_images(running)
    finally:
        running.stop()
    print(json.dumps(result, indent=1), flush=True)
    return result


def markdown(rows: list[dict], watch: LoadWatch) -> str:
    lines = [f"{ATTACKERS} connections per attack, held {HOLD_S:g} s while a normal `POST /predict/house` is "
             "timed every 50 ms: the slowest normal request (and how many failed).", "",
             "| attack | " + " | ".join(r["label"] for r in rows) + " |", "|---|" + "---:|" * len(rows)]
    for kind in ATTACKS:
        lines.append(f"| {kind.replace('_', ' ')} | " + " | ".join(
            f"{r['slow'][kind]['max_s']:.2f} s ({r['slow'][kind]['failed']} failed)" for r in rows) + " |")
    lines += ["", "The malformed requests that once got a 500: status answered.", "",
              "| request | " + " | ".join(r["label"] for r in rows) + " |", "|---|" + "---:|" * len(rows)]
    lines += [f"| {name} | " + " | ".join(str(r["malformed"][name]) for r in rows) + " |" for name in FIVE]
    lines += ["", "Legal worst cases:", "", "| case | " + " | ".join(r["label"] for r in rows) + " |",
              "|---|" + "---:|" * len(rows),
              "| 4 concurrent 5000x5000 16-bit RGBA PNGs: server memory before -> peak (MiB) | " + " | ".join(
                  f"{r['memory']['before_mb']:.0f} -> {r['memory']['peak_mb']:.0f}" for r in rows) + " |",
              "| ... their statuses | " + " | ".join(" ".join(map(str, r["memory"]["statuses"])) for r in rows) + " |",
              "| 64 drawings of 2000x2000 in one request: server CPU s, status | " + " | ".join(
                  f"{r['many']['cpu_s']:.2f} s, {r['many']['status']}" for r in rows) + " |"]
    return "\n".join(lines) + "\n\n" + watch.note() + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.hostile", description=__doc__.split("\n\n")[0])
    p.add_argument("--models", required=True, type=Path, help="bundles mnist and housing for the production server")
    p.add_argument("--baseline", type=Path, help="a checkout of an older commit: its documented gunicorn setup too")
    p.add_argument("--baseline-models", type=Path, help="bundles that checkout exported (default: --models)")
    add_write_flags(p)
    args = p.parse_args(argv)
    watch = LoadWatch()
    if not args.no_write:
        watch.banner(args.allow_busy)
    rows = []
    with tempfile.TemporaryDirectory(prefix="hostile-") as tmp:
        if args.baseline:
            port = free_port()
            argv_old = [sys.executable, "-m", "gunicorn", "-c", "serve/gunicorn_conf.py", "-w", "2", "--threads", "4",
                        "-b", f"127.0.0.1:{port}", "serve.app:create_app()"]
            env = {"SERVE_MODELS": str((args.baseline_models or args.models).resolve()), "SERVE_POOL_SIZE": "1",
                   "PYTHONPATH": str(args.baseline.resolve())}
            rows.append(run_server(f"gunicorn `-w 2 --threads 4` ({args.baseline.name})", argv_old, args.baseline,
                                   env, port, Path(tmp) / "baseline.log"))
        port = free_port()
        rows.append(run_server("`python -m serve`", [sys.executable, "-m", "serve", "--models",
                                                     str(args.models.resolve()), "--port", str(port)],
                               ROOT, {}, port, Path(tmp) / "ours.log"))
    command = "nice python -m bench.hostile " + " ".join(argv if argv is not None else sys.argv[1:])
    publish("hostile", "Serving: hostile clients, as deployed", markdown(rows, watch), command, watch,
            args.allow_busy, write=not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
