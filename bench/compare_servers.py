"""Our server against KServe's and MLServer's model servers: the same ONNX model, the same V2 request, one run.

    nice python -m bench.compare_servers --bundle DIR [--seconds 10] [--rows ours,kserve,...]

DIR is a digits bundle with inference.onnx (``python -m export`` writes one by default). Each
peer runs in a virtual environment of its own, pinned by ``bench/peers/<peer>.txt`` and made
under ``.bench/venvs/`` the first time (pip; needs the package index), with the minimal ONNX model
class a user of that server writes (``bench/peers/*_onnx.py``): one onnxruntime session of one
intra-op thread per worker, as ours. One server at a time, on loopback, 2 workers (or the peer's
equivalent) on the 2 cores: wrk POSTs the same V2 JSON request (the first MNIST test digit,
normalised: 15.6 kB) to ``/v2/models/mnist/infer`` at concurrency 1, 8 and 32 with keep-alive,
and the server's whole process tree's CPU is read from /proc around each run.

Writes the ``compare_servers`` section of docs/BENCHMARKS.md (only when the 1-minute load average
at the start is at most 0.5, unless --allow-busy): req/s, p50, p99, server CPU per request and
failed requests per row and concurrency, versions, and the targets as data (ratios to the best
peer, CPU per request, p99).
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.harness import Check, LoadWatch, add_write_flags, free_port, verdict_table
from bench.load import post_status, start, wrk_load, write_wrk_script
from bench.report import publish
from common.bundle import read_bundle
from common.datasets import read_mnist
from common.digit_image import normalize
from common.version import toolkit_version

ROOT = Path(__file__).resolve().parent.parent
PEERS = Path(__file__).resolve().parent / "peers"
VENVS = ROOT / ".bench" / "venvs"
LEVELS = (1, 8, 32)
WARMUP_S = 5  # seconds of load at concurrency 8 before the measured runs, for every server alike
PATH = "/v2/models/mnist/infer"
TARGETS = {"ratio_to_best_peer": 1.2, "cpu_ms_per_request": 0.5, "p99_ms_at_32": 25.0}
# row -> (label, peer environment or None for ours)
ROWS = {
    "ours": ("ours: `python -m serve --workers 2` (granian, the production default)", None),
    "ours-gunicorn": ("ours under gunicorn, sync workers (`-w 2`), the documented alternative", None),
    "kserve": ("KServe ModelServer, 2 workers, request logs off", "kserve"),
    "mlserver": ("MLServer, inference in the HTTP process (`parallel_workers: 0`)", "mlserver"),
    "mlserver-2": ("MLServer, 2 parallel inference workers", "mlserver"),
}
QUIET_LOGS = {"version": 1, "disable_existing_loggers": False, "root": {"level": "WARNING", "handlers": ["err"]},
              "handlers": {"err": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr"}},
              "loggers": {name: {"level": "WARNING"} for name in ("kserve", "kserve.trace", "uvicorn", "uvicorn.access",
                                                                  "uvicorn.error", "mlserver")}}


def request_body(data_dir: Path | None) -> bytes:
    """The V2 JSON request: the first MNIST test digit, normalised as the model takes it."""
    image = read_mnist("test", data_dir, limit=1)[0][:1]
    x = normalize(image)  # (1, 1, 28, 28) float32
    return json.dumps({"inputs": [{"name": "image", "shape": list(x.shape), "datatype": "FP32",
                                   "data": x.ravel().tolist()}]}).encode()


def peer_python(peer: str) -> Path:
    """The peer's virtual environment (made from bench/peers/<peer>.txt when missing); its python."""
    venv = VENVS / peer
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "-r", str(PEERS / f"{peer}.txt")], check=True)
    return python


def peer_versions(peer: str) -> str:
    pins = [line.split("==")[0] for line in (PEERS / f"{peer}.txt").read_text().splitlines()
            if line and not line.startswith("#")]
    out = subprocess.run([str(peer_python(peer)), "-m", "pip", "list", "--format", "json"], capture_output=True,
                         text=True, check=True).stdout
    installed = {p["name"].lower(): p["version"] for p in json.loads(out)}
    return ", ".join(f"{name} {installed.get(name.lower(), '?')}" for name in pins)


def launch(row: str, bundle: Path, work: Path, port: int):
    """Start one row's server over ``bundle`` on ``port``; (the running server, versions)."""
    log = work / f"{row}.log"
    onnx = str(bundle / "inference.onnx")
    if row in ("ours", "ours-gunicorn"):
        models = work / "models"
        if not models.exists():
            models.mkdir()
            (models / "mnist").symlink_to(bundle.resolve())
        if row == "ours":
            argv = [sys.executable, "-m", "serve", "--models", str(models), "--port", str(port), "--workers", "2"]
        else:
            argv = [sys.executable, "-m", "gunicorn", "-c", "serve/gunicorn_conf.py", "-w", "2",
                    "-b", f"127.0.0.1:{port}", "serve.app:create_app()"]
        return start(argv, port, log, env={"SERVE_MODELS": str(models)}, cwd=ROOT), f"toolkit {toolkit_version()}"
    python = peer_python(ROWS[row][1])
    config = work / f"{row}-logging.json"
    config.write_text(json.dumps(QUIET_LOGS))
    if row == "kserve":
        argv = [str(python), str(PEERS / "kserve_onnx.py"), "--model_name", "mnist", "--onnx", onnx,
                "--http_port", str(port), "--grpc_port", str(free_port()), "--workers", "2",
                "--enable_latency_logging", "False", "--log_config_file", str(config)]
        return start(argv, port, log, cwd=work), peer_versions("kserve")
    folder = work / row
    (folder / "mnist").mkdir(parents=True, exist_ok=True)
    (folder / "settings.json").write_text(json.dumps({
        "debug": False, "parallel_workers": 2 if row == "mlserver-2" else 0, "host": "127.0.0.1", "http_port": port,
        "grpc_port": free_port(), "metrics_port": free_port(), "logging_settings": QUIET_LOGS}))
    (folder / "mnist" / "model-settings.json").write_text(json.dumps({
        "name": "mnist", "implementation": "mlserver_onnx.OnnxModel", "parameters": {"uri": onnx}}))
    argv = [str(python.parent / "mlserver"), "start", str(folder)]
    return start(argv, port, log, env={"PYTHONPATH": str(PEERS)}, cwd=work), peer_versions("mlserver")


def measure(row: str, bundle: Path, body: bytes, work: Path, seconds: float) -> dict:
    """One row: start its server, check one answer, run every concurrency, stop it."""
    port = free_port()
    running, versions = launch(row, bundle, work, port)
    try:
        try:
            status = post_status(port, PATH, body, "application/json")
        except OSError as exc:
            raise RuntimeError(f"{row}: {exc}:\n{running.log.read_text()[-3000:]}") from None
        if status != 200:
            raise RuntimeError(f"{row}: the request answered {status}:\n{running.log.read_text()[-2000:]}")
        script = write_wrk_script(work, "v2", body, "application/json")
        wrk_load(port, PATH, script, 8, WARMUP_S, running.pids())  # warm-up, not reported
        levels = {c: wrk_load(port, PATH, script, c, seconds, running.pids()) for c in LEVELS}
    finally:
        running.stop()
    return {"label": ROWS[row][0], "versions": versions, "levels": levels}


def checks(results: dict) -> list[Check]:
    """The targets as data: ours against the best peer at each concurrency, CPU per request, p99."""
    ours = results.get("ours")
    peers = {row: r for row, r in results.items() if ROWS[row][1]}
    if not ours or not peers:
        return []
    found = []
    for c in LEVELS:
        best = max(peers, key=lambda row: peers[row]["levels"][c]["rps"])
        found.append(Check(f"req/s at c={c}, ours / the best peer ({best})",
                           ours["levels"][c]["rps"] / peers[best]["levels"][c]["rps"], TARGETS["ratio_to_best_peer"],
                           fmt="{:.2f}x"))
        found.append(Check(f"server CPU ms per request at c={c}", ours["levels"][c]["cpu_ms_per_request"],
                           TARGETS["cpu_ms_per_request"], at_least=False, fmt="{:.3f}"))
    found.append(Check("p99 ms at c=32", ours["levels"][32]["p99"], TARGETS["p99_ms_at_32"], at_least=False,
                       fmt="{:.1f}"))
    return found


def markdown(results: dict, body: bytes, seconds: float, watch: LoadWatch) -> str:
    head = ("| server | req/s c=1 / 8 / 32 | p50 ms c=1 / 8 / 32 | p99 ms c=1 / 8 / 32 | server CPU ms per request "
            "c=1 / 8 / 32 | failed |\n|---|---|---|---|---|---:|\n")
    lines = []
    for r in results.values():
        lv = r["levels"]

        def cells(key, fmt):
            return " / ".join(format(lv[c][key], fmt) for c in LEVELS)
        lines.append(f"| {r['label']} | {cells('rps', '.0f')} | {cells('p50', '.2f')} | {cells('p99', '.1f')} | "
                     f"{cells('cpu_ms_per_request', '.3f')} | {sum(lv[c]['errors'] for c in LEVELS)} |")
    versions = "\n".join(f"- {r['label']}: {r['versions']}" for r in results.values())
    return (f"The same `inference.onnx`, the same {len(body) / 1000:.1f} kB V2 JSON request to `POST {PATH}`, "
            f"wrk with keep-alive, {seconds:g} s per concurrency, one server at a time on loopback. Server CPU is the "
            "whole process tree's (main process and workers), from /proc.\n\n" + head + "\n".join(lines)
            + "\n\n" + verdict_table(checks(results)) + f"\n\nVersions:\n{versions}\n\n" + watch.note() + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", type=Path, required=True, help="a digits bundle with inference.onnx")
    p.add_argument("--seconds", type=float, default=10, help="wrk run per concurrency (default: %(default)s)")
    p.add_argument("--rows", default=",".join(ROWS), help="which servers (default: %(default)s)")
    p.add_argument("--data-dir", type=Path, default=None, help="folder holding mnist/ (default: Paddle's cache)")
    add_write_flags(p)
    args = p.parse_args(argv)
    bundle = read_bundle(args.bundle).path
    if not (bundle / "inference.onnx").is_file():
        raise SystemExit(f"{bundle} has no inference.onnx: export it without --no-onnx")
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    rows = [r for r in args.rows.split(",") if r]
    for row in rows:
        if row not in ROWS:
            raise SystemExit(f"unknown row {row!r}; rows are {', '.join(ROWS)}")
        if ROWS[row][1]:
            peer_python(ROWS[row][1])  # made before the measurement, not during it
    body = request_body(args.data_dir)
    watch = LoadWatch()
    if not args.no_write:
        watch.banner(args.allow_busy)  # refuses a busy start before minutes of measuring
    results = {}
    with tempfile.TemporaryDirectory(prefix="compare-servers-") as tmp:
        for row in rows:
            results[row] = measure(row, bundle, body, Path(tmp), args.seconds)
            lv = results[row]["levels"]
            print(f"{row:14s} " + "  ".join(f"c={c}: {lv[c]['rps']:.0f} req/s p99 {lv[c]['p99']:.1f} ms "
                                           f"{lv[c]['cpu_ms_per_request']:.3f} ms CPU" for c in LEVELS), flush=True)
            time.sleep(2)  # let the machine settle between servers
    command = "python -m bench.compare_servers " + " ".join(argv if argv is not None else sys.argv[1:])
    publish("compare_servers", "Serving: ours against KServe and MLServer (V2, the same ONNX model)",
            markdown(results, body, args.seconds, watch), command, watch, args.allow_busy, write=not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
