"""Step 8: proof that the saved graph computes what the dygraph layer computes.

The same inputs (real test samples for a task, generated or given ones for a layer) go through the
dygraph layer and a real ``paddle.inference`` predictor loaded from the files on disk, at batch 1
and at batch 64 (or the fixed batch), with oneDNN on and off (its fused kernels are the likeliest
source of a difference). Every output is compared under the plan's ``Tolerance`` (for tasks, from
``common.tasks``). The ONNX file (written unless ``--no-onnx``) is checked the same way against the
predictor, with onnxruntime and with OpenVINO: the two runtimes a server may pick for it.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import paddle

from common.bundle import PREFIX, PredictorRunner, create_predictor, graph_file, openvino_model, openvino_run

from . import ExportError

BIG_BATCH = 64
# What the conversion child runs (see to_onnx): graph, weights, target file from argv.
ONNX_CHILD = "import sys, paddle2onnx; paddle2onnx.export(sys.argv[1], sys.argv[2], save_file=sys.argv[3])"
ONNX_MISSING = "ONNX export needs paddle2onnx and onnxruntime (pip install -r requirements.txt): {reason}"


def as_list(out) -> list:
    """A forward's result as a list of tensors (a tensor, or a tuple/list of them)."""
    if isinstance(out, (tuple, list)):
        return list(out)
    if isinstance(out, dict):
        raise ExportError("forward returns a dict; return a tensor or a tuple of tensors (name them with --output)")
    return [out]


def batches(x: list[np.ndarray], size: int, fixed: bool):
    """Consecutive slices of ``size`` rows of every input; for a fixed-batch graph the last is zero-padded."""
    rows = len(x[0])
    for start in range(0, rows, size):
        parts = [a[start:start + size] for a in x]
        if fixed and len(parts[0]) < size:
            parts = [np.concatenate([p, np.zeros((size - len(p),) + p.shape[1:], p.dtype)]) for p in parts]
        yield [np.ascontiguousarray(p) for p in parts], min(size, rows - start)


def collect(run, x: list[np.ndarray], size: int, fixed: bool) -> list[np.ndarray]:
    """``run(slices) -> outputs`` over all rows, ``size`` at a time; outputs concatenated per output."""
    pieces = [[o[:n] for o in run(parts)] for parts, n in batches(x, size, fixed)]
    return [np.concatenate(per_output) for per_output in zip(*pieces)]


def dygraph_outputs(layer, x, size: int, fixed: bool) -> list[np.ndarray]:
    """The dygraph layer's outputs."""
    with paddle.no_grad():
        return collect(lambda parts: [t.numpy() for t in as_list(layer(*map(paddle.to_tensor, parts)))],
                       x, size, fixed)


def batch_sizes(batch: int | None, rows: int) -> list[int]:
    """Batch 1 and a larger batch for a dynamic graph; only its own size for a fixed one."""
    return sorted({1, min(BIG_BATCH, rows)}) if batch is None else [batch]


def compare(tolerance, reference: list[np.ndarray], output: list[np.ndarray]) -> dict:
    """Worst figures over all outputs (the first output's top-1 when the tolerance asks for it)."""
    per_output = [tolerance.compare(r, o) for r, o in zip(reference, output, strict=True)]
    worst = {"max_abs_diff": max(f["max_abs_diff"] for f in per_output),
             "passed": all(f["passed"] for f in per_output)}
    for key in ("max_rel_diff", "top1_mismatches"):
        if key in per_output[0]:
            worst[key] = max(f.get(key, 0) for f in per_output)
    return worst


def run_parity(plan, folder: Path, batch: int | None) -> dict:
    """Compare dygraph and predictor outputs for every (oneDNN, batch) setting; return the figures."""
    fixed, x = batch is not None, plan.samples.x
    sizes = batch_sizes(batch, len(x[0]))
    reference = {size: dygraph_outputs(plan.layer, x, size, fixed) for size in sizes}
    settings = []
    for mkldnn in (True, False):
        runner = PredictorRunner(create_predictor(folder, threads=1, mkldnn=mkldnn), [s.name for s in plan.inputs])
        for size in sizes:
            settings.append({"batch": size, "onednn": mkldnn,
                             **compare(plan.tolerance, reference[size], collect(runner.run, x, size, fixed))})
    result = {"samples": int(len(x[0])), "origin": plan.samples.origin, "tolerance": plan.tolerance.text(),
              "settings": settings, "passed": all(s["passed"] for s in settings)}
    if plan.served_metrics and len(plan.samples.y):
        # Not a parity figure, a sanity one: the samples are real and the exported model works on them.
        result["dygraph_metrics"] = plan.served_metrics(reference[sizes[0]][0], plan.samples.y)
    return result


def require(parity: dict, what: str = "the exported graph") -> None:
    """Raise ExportError naming the worst setting unless every setting passed."""
    failed = [s for s in parity["settings"] if not s["passed"]]
    if failed:
        worst = max(failed, key=lambda s: (np.nan_to_num(s["max_abs_diff"], nan=np.inf), s.get("top1_mismatches", 0)))
        extra = f", {worst['top1_mismatches']} top-1 differ" if worst.get("top1_mismatches") else ""
        raise ExportError(f"parity failed: {what} differs from the dygraph model at batch {worst['batch']}, "
                          f"oneDNN {'on' if worst['onednn'] else 'off'}: max abs diff {worst['max_abs_diff']:.3g}"
                          f"{extra} over {parity['samples']} samples (tolerance: {parity['tolerance']})")


# ---- ONNX (step 7, skipped with a note when paddle2onnx cannot convert; checked like the Paddle graph) -----


def onnx_missing() -> str | None:
    """Why ONNX export cannot run here, or None when it can."""
    try:
        import onnxruntime  # noqa: F401
        import paddle2onnx  # noqa: F401
    except ImportError as exc:
        return ONNX_MISSING.format(reason=str(exc))
    return None


def to_onnx(folder: Path, timeout: float = 600) -> str | None:
    """Write ``inference.onnx`` next to the Paddle graph in ``folder`` (paddle2onnx reads .json and .pdmodel).

    Returns None when written, else why not: then the bundle is Paddle-only, which every server can
    still serve. (A file that converts but computes something else is another matter: parity fails.)
    paddle2onnx runs in a child process because on some graphs it does not raise but aborts the
    whole process (SIGABRT after "[ERROR][Paddle2ONNX] Can not get input 'axis(dim)' value." for a
    data-dependent ``if``), which no ``except`` can catch.
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


def onnx_session(path: Path, threads: int = 1):
    """An onnxruntime CPU session with ``threads`` intra-op threads."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def runtime_parity(plan, folder: Path, batch: int | None, run, runtime: str) -> dict:
    """Compare ``run(inputs) -> outputs`` (a runtime on inference.onnx) with the Paddle predictor, oneDNN off,
    on the parity samples at the same batch sizes."""
    fixed, x = batch is not None, plan.samples.x
    runner = PredictorRunner(create_predictor(folder, threads=1, mkldnn=False), [s.name for s in plan.inputs])
    settings = []
    for size in batch_sizes(batch, len(x[0])):
        ref = collect(runner.run, x, size, fixed)
        settings.append({"batch": size, "onednn": False, **compare(plan.tolerance, ref, collect(run, x, size, fixed))})
    return {"runtime": runtime, "samples": int(len(x[0])), "against": "paddle.inference predictor, oneDNN off",
            "tolerance": plan.tolerance.text(), "settings": settings, "passed": all(s["passed"] for s in settings)}


def onnx_parity(plan, folder: Path, batch: int | None) -> dict:
    """onnxruntime on inference.onnx against the Paddle predictor."""
    sess = onnx_session(folder / f"{PREFIX}.onnx")
    names = [i.name for i in sess.get_inputs()]  # paddle2onnx keeps the feed order
    return runtime_parity(plan, folder, batch, lambda parts: sess.run(None, dict(zip(names, parts))), "onnxruntime")


def openvino_parity(plan, folder: Path, batch: int | None) -> dict:
    """OpenVINO on inference.onnx against the Paddle predictor; ``{"skipped": why}`` if openvino is not installed."""
    try:
        import openvino  # noqa: F401
    except ImportError as exc:
        return {"runtime": "openvino", "skipped": f"openvino is not installed ({exc})", "passed": None}
    request = openvino_model(folder / f"{PREFIX}.onnx").create_infer_request()
    return runtime_parity(plan, folder, batch, lambda parts: openvino_run(request, parts), "openvino")
