"""Use every core without typing the launcher line: ``python -m train mnist`` on a multi-core CPU
re-runs itself under ``paddle.distributed.launch`` with ``--procs`` data-parallel processes.

Paddle runs a CPU training step on one math thread (two threads were slower, docs/BENCHMARKS.md),
so a second process on the second core is what makes training faster. Only the command line does
this; ``train.run()`` (a notebook, a test) is always the one process it runs in.
"""
from __future__ import annotations

import ctypes
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import paddle

from .config import TrainConfig, split_batch

_PR_SET_PDEATHSIG = 1  # from <sys/prctl.h>
MAIN = Path(__file__).resolve().parent / "__main__.py"
AUTO_MAX = 2  # measured on 2 cores only: more processes on bigger machines are for --procs N
# What the launcher prints besides the training's own lines: its settings and Paddle's C++ log.
_NOISE = ("LAUNCH INFO", "I1", "W1", "=====", "FLAGS(", "  warnings.warn")
_BAR = re.compile(r"epoch \d+/\d+: +\d+%\|")  # the progress bar train/loop.py draws ("epoch 2/8:  41%|...")


def launched() -> bool:
    """Whether this process is one of the launcher's workers."""
    return "PADDLE_TRAINERS_NUM" in os.environ or "PADDLE_TRAINER_ID" in os.environ


def processes(cfg: TrainConfig) -> int:
    """How many processes the command line should train ``cfg`` (resolved) with; 1: just run here."""
    if launched():
        return 1
    if cfg.procs != "auto":
        procs = int(cfg.procs)
    elif cfg.device == "gpu" or (cfg.device == "auto" and paddle.device.cuda.device_count() > 0):
        procs = 1
    else:
        procs = max(1, min(AUTO_MAX, os.cpu_count() or 1))
    split_batch(cfg.batch_size, procs)  # refused here, before any process starts
    return procs


def _stop_with_parent() -> None:
    """In the launcher's process: get SIGTERM when this command dies, however it dies (kill -9 too).

    The launcher stops its workers on SIGTERM; without this, killing ``python -m train`` would leave
    them training, and writing checkpoints, on their own.
    """
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def relaunch(procs: int, argv: list[str], logs: Path) -> int:
    """Run this same command as ``procs`` workers under Paddle's launcher; return its exit code.

    The workers' logs go to ``logs/workerlog.N``; rank 0's lines are shown here as they come.
    """
    cmd = [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", str(procs),
           "--log_dir", str(logs), "--", str(MAIN), *argv]  # "--": our --log would be an ambiguous launcher option
    print(f"[train] {procs} data-parallel processes (--procs 1 for one): python -m paddle.distributed.launch "
          f"--nproc_per_node {procs} --log_dir {logs} train/__main__.py ...", flush=True)
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                          preexec_fn=_stop_with_parent) as proc:
        show_worker_output(proc.stdout, sys.stdout, sys.stdout.isatty())
    if proc.returncode:
        print(f"error: training failed in a worker (exit {proc.returncode}); see {logs}/workerlog.*",
              file=sys.stderr, flush=True)
    return proc.returncode


def show_worker_output(lines, out, tty: bool) -> None:
    """Copy the launcher's output to ``out``: rank 0's lines, without the launcher's own.

    The launcher passes rank 0's progress bar on as one line per refresh (its "\r" become line
    ends): on a terminal (``tty``) the bar is redrawn in place; elsewhere (a log, a pipe) it is
    dropped and the per-epoch lines remain.
    """
    bar_shown = False
    for line in lines:
        if _BAR.match(line):
            if tty:
                out.write("\r" + line.rstrip("\n") + "\x1b[K")
                out.flush()
                bar_shown = True
            continue
        if not line.strip() or line.startswith(_NOISE) or "No ccache found" in line:
            continue  # blank lines are what is left of the bar's "\r"
        if bar_shown:
            out.write("\r\x1b[K")  # clear the bar before the next line
            bar_shown = False
        out.write(line)
