"""Where Paddle Inference's per-call time goes: operators vs the framework around them, batch 1, one thread.

    nice python -m bench.paddle_profile --models DIR [--calls 2000] [--allow-busy] [--no-write]

DIR holds a digits bundle named ``mnist`` (the server's default). A child process builds the
predictor with the server's settings (oneDNN on, IR optimisation, 1 math thread), times
``--calls`` batch-1 calls of (1, 1, 28, 28) with the profiler off, then again on a second
predictor with Paddle Inference's own profiler on (``config.enable_profile()``), whose op table
Paddle prints when that predictor is destroyed; this script captures and parses it. Per call:
wall time with the profiler off, wall time with it on, the sum of the operators the profiler
timed (kernels, with their infermeta), and the difference, which is the executor's own work
(scheduling, the feed/fetch copies, Python and the pybind11 call). Operators that ran fewer
times than ``--calls`` (constant folding at load) are left out.

Writes the ``paddle_profile`` section of docs/BENCHMARKS.md only when the 1-minute load average at
the start is at most 0.5, unless --allow-busy; --no-write only prints.
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from functools import partial
from pathlib import Path

import numpy as np

from bench.harness import LoadWatch, add_write_flags, interleaved, timed
from bench.report import publish

WARMUP = 20  # calls before the unprofiled predictor is timed (the profiled one counts every call it makes)


def child(bundle_dir: str, calls: int) -> None:
    """Time the calls without and with the profiler; the profiler's table follows on destruction."""
    from paddle import inference

    from common.bundle import read_bundle
    from common.runtimes import PredictorRunner, predictor_config

    bundle = read_bundle(bundle_dir)
    x = np.random.default_rng(0).standard_normal((1, 1, 28, 28)).astype(np.float32)
    walls = {}
    for profiled in (False, True):
        config = predictor_config(bundle, threads=1, mkldnn=True, memory_optim=False)
        if profiled:
            config.enable_profile()
        runner = PredictorRunner(inference.create_predictor(config))
        seconds = interleaved({"run": timed(partial(runner.run, x))}, calls, warmup=0 if profiled else WARMUP)["run"]
        walls["profiled" if profiled else "plain"] = float(np.mean(seconds)) * 1e3
        if profiled:
            print("WALL_JSON " + json.dumps(walls), flush=True)
        del runner  # the profiled predictor prints its report here


def parse_report(text: str, calls: int) -> list[tuple[str, int, float]]:
    """(operator, calls, total ms) of the report's Event Summary, top-level events that ran every call."""
    section = text.split("Event Summary", 1)[1] if "Event Summary" in text else ""
    rows = []
    for line in section.splitlines():
        if line.startswith("thread") or "Memory Profiling" in line:
            break  # the per-thread repeat of the same table, or the next report
        m = re.match(r"^(\S+)\s+(\d+)\s+([\d.]+)\s", line)  # indented lines (infermeta) are inside their op
        if m and int(m.group(2)) >= calls:
            rows.append((m.group(1), int(m.group(2)), float(m.group(3))))
    return rows


def markdown(walls: dict, ops: list, calls: int, load_note: str) -> str:
    per_call = [(name, total / calls * 1e3) for name, n, total in ops]  # us
    op_us = sum(us for _, us in per_call)
    plain, profiled = walls["plain"] * 1e3, walls["profiled"] * 1e3
    lines = [f"Paddle Inference, the server's settings (oneDNN on, IR optimisation, 1 math thread), batch 1, "
             f"(1, 1, 28, 28), {calls} calls; `config.enable_profile()`'s op table, per call:", "",
             "| part | us per call | share of the profiled call |", "|---|---:|---:|"]
    lines += [f"| operator {name} | {us:.1f} | {us / profiled:.0%} |" for name, us in per_call]
    lines += [f"| **all operators** | **{op_us:.1f}** | **{op_us / profiled:.0%}** |",
              f"| **the rest: executor, feed/fetch copies, pybind11, Python** | **{profiled - op_us:.1f}** | "
              f"**{(profiled - op_us) / profiled:.0%}** |",
              f"| the whole call, profiler on | {profiled:.1f} | 100% |", "",
              f"The whole call with the profiler off: **{plain:.1f} us** (the profiler adds {profiled - plain:.1f} us "
              f"of its own). {load_note}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.paddle_profile", description=__doc__.split("\n\n")[0])
    p.add_argument("--models", required=True, help="folder with a digits bundle named mnist")
    p.add_argument("--calls", type=int, default=2000, help="batch-1 calls timed (default: %(default)s)")
    add_write_flags(p)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    bundle_dir = str(Path(args.models).resolve() / "mnist")
    if args.child:
        child(bundle_dir, args.calls)
        return 0
    watch = LoadWatch()
    # Paddle prints the report from C++ on the predictor's destruction: a child process, output captured,
    # run in a temporary folder because the profiler also leaves a profile.log in the working directory.
    with tempfile.TemporaryDirectory(prefix="paddle-profile-") as tmp:
        cmd = [sys.executable, "-m", "bench.paddle_profile", "--child", "--models", str(Path(args.models).resolve()),
               "--calls", str(args.calls)]
        out = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, check=True)
    text = out.stdout + out.stderr
    line = next((x for x in text.splitlines() if x.startswith("WALL_JSON ")), None)
    ops = parse_report(text, args.calls)
    if line is None or not ops:
        print(text[-3000:], file=sys.stderr)
        raise RuntimeError("no timing or no profiler report in the child's output (above)")
    body = markdown(json.loads(line.split(" ", 1)[1]), ops, args.calls, watch.note())
    command = "nice python -m bench.paddle_profile " + " ".join(argv if argv is not None else sys.argv[1:])
    publish("paddle_profile", "Paddle Inference: where a batch-1 call's time goes (profiler)", body, command, watch,
            args.allow_busy, write=not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
