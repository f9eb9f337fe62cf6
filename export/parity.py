"""Step 8: proof, runtime by runtime, that the saved graph computes what the dygraph layer computes.

The dygraph layer runs every call of the parity inputs (``export/inputs.py``): its outputs are the
reference, and its paths through ``forward`` are counted (``export/paths.py``). It must give the
same answer twice for the same input, or nothing can be proven. Then every runtime of
``common.runtimes.RUNTIMES`` runs the same calls from the files on disk, once per option set it
declares (Paddle Inference: oneDNN on and off, its fused kernels being the likeliest source of a
difference), and every output of every call is compared with the reference under the plan's
``Tolerance``. Paddle Inference is the product and must pass, or the export fails. Every runtime
ends with a status in the manifest:

- ``passed``: it ran every call within tolerance;
- ``failed``: it ran, but disagreed beyond tolerance (its figures are recorded) or failed on some shape;
- ``unavailable``: it could not load the graph (or there is no inference.onnx: paddle2onnx could
  not convert it);
- ``skipped``: not tried here (its package is not installed, it needs a GPU, ``--no-onnx``).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import paddle

from common.bundle import FAILED, PASSED, SKIPPED, UNAVAILABLE
from common.runtimes import REFERENCE, RUNTIMES, onnx_session  # noqa: F401  (bench/export_latency.py imports it here)

from . import ExportError
from .breaks import suspects
from .paths import PathRecorder, user_files

NONDETERMINISM = ("random", "state")  # the constructs that make two calls on one input differ


def flat(out) -> list:
    """A forward's result as a flat list of tensors, in jit.save's order (dicts by sorted key)."""
    return [t for t in paddle.utils.flatten(out) if t is not None]


def rows(array, keep: int) -> np.ndarray:
    """The first ``keep`` rows of an output (a fixed-batch graph's padding rows do not count); 0-d as it is."""
    array = np.asarray(array)
    return array[:keep] if array.ndim else array


def reference(layer, inputs, name: str) -> tuple[list[list[list[np.ndarray]]], int | None]:
    """The dygraph layer's outputs for every call of every case (rows that count only), and its number of paths
    through forward (None when all of its code is Paddle's: nothing of the user's to trace)."""
    recorder, outputs = PathRecorder(user_files(layer)), []
    with paddle.no_grad():
        for case in inputs.cases:
            per_call = []
            for call in case.calls:
                try:
                    out = recorder.run(layer, *[paddle.to_tensor(a) for a in call.arrays])
                except Exception as exc:  # the user's forward on inputs we made: say which and how to steer them
                    raise ExportError(forward_failed(name, case, call, exc)) from exc
                per_call.append([rows(t.numpy(), call.keep) for t in flat(out)])
            outputs.append(per_call)
    return outputs, len(recorder.paths) if recorder.files else None


def forward_failed(name: str, case, call, exc: Exception) -> str:
    """One line: which parity inputs the dygraph forward failed on, its error, and how to give other inputs."""
    shapes = ", ".join(f"{a.dtype}{list(a.shape)}" for a in call.arrays)
    return (f"{name} failed on the parity inputs of {case.label} ({shapes}): {type(exc).__name__}: "
            f"{' '.join(str(exc).split())[:300]}; if it does not take such values or sizes, state them: "
            "--input NAME:DTYPE:SHAPE:LOW..HIGH (e.g. ids:int64:-1,seq:0..49 for an embedding of 50 rows), "
            "--dim NAME=SIZES, or give real inputs with --samples FILE.npz")


def require_deterministic(layer, inputs, expected: list[np.ndarray], tolerance, name: str, sites) -> None:
    """ExportError unless the layer answers the first parity call again as it did the first time."""
    call = inputs.cases[0].calls[0]
    with paddle.no_grad():
        again = [rows(t.numpy(), call.keep) for t in flat(layer(*[paddle.to_tensor(a) for a in call.arrays]))]
    figures = [tolerance.compare(e, a) for e, a in zip(expected, again, strict=True)]
    if not all(f["passed"] for f in figures):
        worst = max(f["max_abs_diff"] for f in figures)
        raise ExportError(f"{name} is not deterministic: two calls on the same input differ (max abs diff {worst:.3g}), "
                          "so no static graph can be proven equal to it" + (suspects(sites, NONDETERMINISM) or
                          "; look for randomness (paddle.rand*, dropout in training mode) or state kept between calls"))


def compare_case(tolerance, case, expected: list[list[np.ndarray]], got: list[list[np.ndarray]], names) -> dict:
    """Per output, the worst figures over the case's calls."""
    outputs = {}
    for i, name in enumerate(names):
        figures = [tolerance.compare(e[i], g[i]) for e, g in zip(expected, got, strict=True)]
        worst = {"max_abs_diff": max(f["max_abs_diff"] for f in figures),
                 "max_rel_diff": max(f["max_rel_diff"] for f in figures), "passed": all(f["passed"] for f in figures)}
        for key in ("top1_mismatches", "mismatches"):
            if key in figures[0]:
                worst[key] = sum(f[key] for f in figures)
        outputs[name] = worst
    return {"case": case.label, "batch": case.batch, "outputs": outputs,
            "passed": all(o["passed"] for o in outputs.values())}


def run_setting(runner, inputs, expected, tolerance, names) -> list[dict]:
    """Every case through one runner; a case whose run raises is a failed case with the error."""
    cases = []
    for case, case_expected in zip(inputs.cases, expected):
        try:
            got = [[rows(o, call.keep) for o in runner.run(call.arrays)] for call in case.calls]
        except Exception as exc:  # noqa: BLE001  a runtime that cannot run a shape has failed, with the reason
            cases.append({"case": case.label, "batch": case.batch, "outputs": {}, "passed": False,
                          "error": f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"})
            continue
        if len(got[0]) != len(names):
            cases.append({"case": case.label, "batch": case.batch, "outputs": {}, "passed": False,
                          "error": f"{len(got[0])} outputs, the dygraph model has {len(names)}"})
            continue
        cases.append(compare_case(tolerance, case, case_expected, got, names))
    return cases


def check_runtime(runtime, folder: Path, inputs, expected, tolerance, input_names, output_names,
                  onnx_reason: str | None = None) -> dict:
    """One runtime's result: ``{status, reason, settings: [{switches, label, cases, passed}]}``."""
    if runtime.reads_onnx and onnx_reason:
        return {"status": UNAVAILABLE, "reason": onnx_reason}
    if why := runtime.unavailable(folder, "cpu"):
        return {"status": SKIPPED, "reason": why}
    settings = []
    for switches in runtime.parity_switches:
        try:
            runner = runtime.open(folder, input_names=input_names, threads=1, **switches).runner()
        except Exception as exc:  # noqa: BLE001  the runtime cannot load this graph: a status, not a crash
            return {"status": UNAVAILABLE, "reason": f"could not load the graph: {one_line(exc)}"}
        cases = run_setting(runner, inputs, expected, tolerance, output_names)
        settings.append({"switches": switches, "label": runtime.describe(switches), "cases": cases,
                         "passed": all(c["passed"] for c in cases)})
    result = {"status": PASSED if all(s["passed"] for s in settings) else FAILED, "settings": settings}
    if result["status"] == FAILED:
        result["reason"] = worst_text(settings, tolerance)
    return result


def one_line(exc: BaseException) -> str:
    """An exception as one line: its type and the last lines of its message that say most."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip() and not ln.strip().startswith("Check '")]
    tail = [ln for ln in lines if "failed" in ln.lower() or "error" in ln.lower()][-2:] or lines[-1:]
    return f"{type(exc).__name__}: {' '.join(' / '.join(tail).split())[:300]}"


def worst_text(settings: list[dict], tolerance) -> str:
    """The worst disagreement of a runtime in a few words: where, which output, how far."""
    failed = [(s, c) for s in settings for c in s["cases"] if not c["passed"]]
    setting, case = failed[0]
    where = f"{case['case']}" + (f", {setting['label']}" if setting["label"] != "-" else "")
    if "error" in case:
        return f"failed on {where}: {case['error']}"
    name, figures = max(((n, f) for n, f in case["outputs"].items() if not f["passed"]),
                        key=lambda item: np.nan_to_num(item[1]["max_abs_diff"], nan=np.inf))
    extra = "".join(f", {figures[k]} {what}" for k, what in (("top1_mismatches", "top-1 differ"),
                                                            ("mismatches", "values differ")) if figures.get(k))
    return (f"on {where}: output {name!r} max abs diff {figures['max_abs_diff']:.3g}, max relative diff "
            f"{figures['max_rel_diff']:.3g}{extra} (tolerance: {tolerance.text()})")


def layer_name(layer) -> str:
    """``Net.forward``: the user's network, also inside a task head (which keeps it as ``net``)."""
    return f"{type(getattr(layer, 'net', layer)).__name__}.forward"


def dygraph(layer, inputs, tolerance, sites=()) -> tuple[list, int | None]:
    """(the reference outputs per case and call, the number of paths through forward); ExportError when the
    dygraph layer fails on the inputs or is not deterministic."""
    expected, paths = reference(layer, inputs, layer_name(layer))
    require_deterministic(layer, inputs, expected[0][0], tolerance, layer_name(layer), sites)
    return expected, paths


def check_runtimes(folder: Path, inputs, expected, tolerance, input_names, output_names,
                   onnx_reason: str | None = None) -> dict[str, dict]:
    """Every registered runtime's result on the bundle in ``folder``, by name."""
    return {key: check_runtime(runtime, folder, inputs, expected, tolerance, input_names, output_names, onnx_reason)
            for key, runtime in RUNTIMES.items()}


def require_reference(figures: dict, what: str = "the exported graph", sites=()) -> None:
    """ExportError naming the worst disagreement unless Paddle Inference passed (``figures``: the manifest's parity)."""
    result = figures["runtimes"][REFERENCE]
    if result["status"] == PASSED:
        return
    if result["status"] != FAILED:
        raise ExportError(f"Paddle Inference cannot run {what}: {result['reason']}")
    raise ExportError(f"parity failed: {what} differs from the dygraph model {result['reason']} "
                      f"over {figures['calls']} calls" + suspects(sites, ("numpy", "tolist", "item", "number")))
