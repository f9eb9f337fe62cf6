"""Step 4: ``paddle.jit.to_static`` + ``paddle.jit.save`` into the bundle's temporary folder.

``json`` (Paddle 3's PIR program) is written in this process. ``pdmodel`` (the legacy protobuf
program that older Paddle Inference, Paddle2ONNX and FastDeploy 1.x read) can only be written
while the PIR API is off, and that flag is read once, when paddle is imported: so it is written
by ``python -m export.legacy`` in a child process started with ``FLAGS_enable_pir_api=0``.
"""
from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
from pathlib import Path

import paddle

from common.bundle import PREFIX

from .errors import ExportError
from .wrap import input_spec

ROOT = Path(__file__).resolve().parent.parent
CONTROL_FLOW_HINT = ("rewrite data-dependent Python control flow (an if/while on tensor values) so that every "
                     "branch returns the same structure of tensors, or use paddle.where / "
                     "paddle.static.nn.cond / paddle.static.nn.while_loop")


def save_static(wrapped, task: str, batch: int | None, folder: Path) -> None:
    """Convert a copy of ``wrapped`` (the original stays dygraph, for parity) and save it in ``folder``."""
    spec = input_spec(task, batch)
    name = f"{type(_inner(wrapped)).__name__}.forward"
    try:
        # A copy: to_static replaces forward on the layer it is given.
        static = paddle.jit.to_static(copy.deepcopy(wrapped), input_spec=spec, full_graph=True)
        paddle.jit.save(static, str(folder / PREFIX), input_spec=spec)
    except Exception as exc:  # any conversion failure is the model's code, not ours: say what to change
        raise ExportError(conversion_message(name, exc)) from exc


def _inner(wrapped):
    """The user's network inside a wrapper (its class names the code to fix)."""
    return getattr(wrapped, "net", wrapped)


def conversion_message(name: str, exc: Exception) -> str:
    """One line: which forward failed, Paddle's own reason, and how to fix it."""
    text = str(exc)
    reasons = re.findall(r"(?:^|\n)\s*(?:[\w.]+\.)?(\w+(?:Exception|Error)): (.+)", text)
    if reasons:
        reason = f"{reasons[-1][0]}: {reasons[-1][1]}"
    else:
        reason = (text.strip().splitlines() or [type(exc).__name__])[-1]
    where = re.findall(r'File "([^"]+)", line (\d+), in forward', text)  # outermost first: take the model's
    at = f" (at {Path(where[-1][0]).name}:{where[-1][1]})" if where else ""
    return (f"paddle.jit.to_static could not convert {name}{at}: {reason.strip()[:300]}; {CONTROL_FLOW_HINT}")


def save_legacy(checkpoint: Path, batch: int | None, folder: Path, timeout: float = 600) -> None:
    """Write ``inference.pdmodel`` by running ``python -m export.legacy`` with the PIR API off."""
    env = {**os.environ, "FLAGS_enable_pir_api": "0",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    cmd = [sys.executable, "-m", "export.legacy", str(checkpoint.resolve()), str(folder.resolve()),
           "dynamic" if batch is None else str(batch)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
        reason = lines[-1][len("error: "):] if lines else (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise ExportError(f"--format pdmodel: writing the legacy program failed: {reason}")
    if not (folder / f"{PREFIX}.pdmodel").is_file():
        raise ExportError("--format pdmodel: this Paddle wrote no inference.pdmodel even with FLAGS_enable_pir_api=0; "
                          "use --format json, or Paddle 2.6 for the legacy format")
