"""Step 7: the Paddle graph converted to ``inference.onnx`` for the runtimes that read ONNX.

A model paddle2onnx cannot convert is no failure: those runtimes are recorded as unavailable, with
paddle2onnx's reason, and the bundle serves with Paddle Inference.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from common.bundle import PREFIX, graph_file

# What the conversion child runs (see to_onnx): graph, weights, target file from argv.
ONNX_CHILD = "import sys, paddle2onnx; paddle2onnx.export(sys.argv[1], sys.argv[2], save_file=sys.argv[3])"
ONNX_MISSING = "ONNX export needs paddle2onnx (pip install 'paddle-d2s-toolkit[export]'): {reason}"


def onnx_missing() -> str | None:
    """Why ONNX export cannot run here, or None when it can."""
    try:
        import paddle2onnx  # noqa: F401
    except ImportError as exc:
        return ONNX_MISSING.format(reason=str(exc))
    return None


def to_onnx(folder: Path, timeout: float = 600) -> str | None:
    """Write ``inference.onnx`` next to the Paddle graph in ``folder`` (paddle2onnx reads .json and .pdmodel).

    Returns None when written, else why not. paddle2onnx runs in a child process because on some
    graphs it does not raise but aborts the whole process (SIGABRT after "[ERROR][Paddle2ONNX] Can
    not get input 'axis(dim)' value." for a data-dependent ``if``), which no ``except`` can catch.
    """
    if reason := onnx_missing():
        return reason
    graph = graph_file(folder)
    target = folder / f"{PREFIX}.onnx"
    cmd = [sys.executable, "-c", ONNX_CHILD, str(graph), str(folder / f"{PREFIX}.pdiparams"), str(target)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        proc = None
    if proc is None or proc.returncode != 0 or not target.is_file():
        target.unlink(missing_ok=True)
        why = f"no answer in {timeout:g} s" if proc is None else child_failure(proc)
        return f"paddle2onnx could not convert {graph.name}: {why}"
    return None


def child_failure(proc: subprocess.CompletedProcess) -> str:
    """The reason a conversion child gives: paddle2onnx's [ERROR] line, else its last line of stderr."""
    lines = [ln.strip() for ln in (proc.stdout + "\n" + proc.stderr).splitlines() if ln.strip()]
    errors = [ln.split("]", 2)[-1].strip() for ln in lines if ln.startswith("[ERROR]")]
    last = [ln for ln in proc.stderr.splitlines() if ln.strip()][-1:] or ["no output"]
    status = f"killed by signal {-proc.returncode}" if proc.returncode < 0 else f"exit status {proc.returncode}"
    return f"{(errors or last)[-1][:300]} ({status})"
