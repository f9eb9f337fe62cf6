"""``--backend auto``: serve each model with the fastest runtime that computes what Paddle Inference computes.

When a model loads, every runtime of ``common.runtimes.RUNTIMES`` the bundle can use is built and
warmed up: Paddle Inference (the reference), and each other runtime that can run the bundle here
(onnxruntime and OpenVINO when the bundle has inference.onnx and the package imports, Paddle with
TensorRT on a GPU) and that the export did not record as failed or unavailable (manifest.json
``parity.runtimes``: a runtime that disagreed with the dygraph model, or could not load the graph,
at export is never considered). Each runs the bundle's own sample inputs (``samples.npz``,
written by ``python -m export``) and is compared with Paddle Inference under the export's own
parity tolerance (``tolerance`` in manifest.json). Those within it are timed: a few calls at batch
1 and at the dynamic-batching size, interleaved so that a burst of load elsewhere on the machine
hits all of them alike, median of each. The fastest at the batch the server will mostly run (the
dynamic-batching size with ``--dynamic-batching``, else 1) serves; the others are closed. The
table is logged, answered at ``GET /v2/models/NAME/stats`` and exported as the
``serve_model_backend`` metric.

A forced ``--backend`` builds that runtime alone, neither compared nor timed; it is refused for a
bundle whose export recorded that runtime as failed or unavailable.
"""
from __future__ import annotations

import dataclasses
import statistics
import time

import numpy as np

from common.bundle import Bundle, BundleError, Tolerance
from common.runtimes import REFERENCE, RUNTIMES

from .backends import create_backend

CANDIDATES = tuple(name for name in RUNTIMES if name != REFERENCE)  # compared with the reference
REPEATS = 7  # timed calls per backend and batch size, after one untimed call at that size
DUMMY_ROWS = 4  # rows of zeros for a bundle without samples.npz
DEFAULT_TOLERANCE = Tolerance(atol=1e-5, rtol=1e-5)  # for bundles exported before the tolerance was recorded


def select(bundle: Bundle, settings: dict, warmup: list[list[np.ndarray]], batch_n: int) -> tuple[object, dict]:
    """(the backend to serve ``bundle`` with, the report of how it was chosen: GET .../stats answers it)."""
    if settings["BACKEND"] != "auto":
        if why := bundle.ruled_out(settings["BACKEND"]):
            raise BundleError(f"{bundle.path}: --backend {settings['BACKEND']}: {why}")
        backend = create_backend(bundle, settings, warmup)
        reason = f"forced with --backend {settings['BACKEND']}; not compared or timed"
        row = _row(backend.name, chosen=True, reason=reason)
        return backend, {"selected_by": f"--backend {settings['BACKEND']}", "backends": [row]}
    inputs, origin = parity_inputs(bundle)
    tolerance = bundle.tolerance or DEFAULT_TOLERANCE
    built, rows = candidates(bundle, settings, warmup, inputs, tolerance)
    by_name = {r["backend"]: r for r in rows}
    batch_big = [x[np.arange(batch_n) % len(x)] for x in inputs]  # the sample rows, repeated to batch_n
    for batch, column in (([x[:1] for x in inputs], "batch_1_median_us"), (batch_big, "batch_n_median_us")):
        for name, micros in median_micros(built, batch).items():
            if isinstance(micros, Exception):  # ran the samples, not this batch size: it cannot serve
                by_name[name].update(passed=False, reason=f"failed at batch {len(batch[0])}: {_text(micros)}")
                built.pop(name).close()
            else:
                by_name[name][column] = round(micros, 1)
    if not built:
        raise RuntimeError(f"no backend ran batches of 1 and {batch_n}: "
                           + "; ".join(f"{r['backend']}: {r['reason']}" for r in rows))
    # The batch the server will mostly run: the batcher's size with dynamic batching, else single requests.
    key, decisive = ("batch_n_median_us", batch_n) if settings["DYNAMIC_BATCHING"] else ("batch_1_median_us", 1)
    winner = min(built, key=lambda name: by_name[name][key])
    by_name[winner]["chosen"] = True
    for name, backend in built.items():
        if name != winner:
            backend.close()
    return built[winner], {
        "selected_by": f"--backend auto: fastest at batch {decisive} among those within tolerance",
        "parity_inputs": origin, "tolerance": {**dataclasses.asdict(tolerance), "origin": "manifest.json"
                                               if bundle.tolerance else "default: manifest.json records none"},
        "batch_sizes": [1, batch_n], "repeats": REPEATS, "backends": rows}


def candidates(bundle: Bundle, settings: dict, warmup, inputs: list[np.ndarray], tolerance: Tolerance):
    """({name: backend} of Paddle Inference and the candidates within ``tolerance`` of it, every row of the table).

    Paddle Inference is the reference: if it cannot load, the model is refused (its error propagates).
    """
    reference = create_backend(bundle, {**settings, "TENSORRT": False}, warmup, REFERENCE)
    expected = reference.run(inputs)
    built = {reference.name: reference}
    rows = [_row(reference.name, passed=True, max_abs_diff=0.0, reason="reference: the others are compared with it")]
    for name in CANDIDATES:
        row, backend = _try(name, bundle, settings, warmup, inputs, expected, tolerance)
        rows.append(row)
        if backend is not None:
            built[name] = backend
    return built, rows


def _row(backend: str, *, passed: bool | None = None, max_abs_diff: float | None = None, chosen: bool = False,
         reason: str | None = None) -> dict:
    """One line of the table (timings are filled in for the backends that passed)."""
    return {"backend": backend, "passed": passed, "max_abs_diff": max_abs_diff, "batch_1_median_us": None,
            "batch_n_median_us": None, "chosen": chosen, "reason": reason}


def _try(name: str, bundle: Bundle, settings: dict, warmup, inputs, expected, tolerance: Tolerance):
    """(its row, the backend if it passed parity, else None) for one candidate."""
    platform = RUNTIMES[name].platform
    if why := unavailable(name, bundle, settings):
        return _row(platform, reason=why), None
    backend = None
    try:
        backend = create_backend(bundle, settings, warmup, name)
        outputs = backend.run(inputs)
        figures = [tolerance.compare(e, o) for e, o in zip(expected, outputs, strict=True)]
    except Exception as exc:  # noqa: BLE001  a candidate that cannot load or run is a row, not a refused model
        if backend is not None:
            backend.close()
        return _row(platform, passed=False, reason=f"failed to load or run: {_text(exc)}"), None
    worst = max(f["max_abs_diff"] for f in figures)
    if all(f["passed"] for f in figures):
        return _row(platform, passed=True, max_abs_diff=worst), backend
    backend.close()
    mismatches = sum(f.get("top1_mismatches", 0) for f in figures)
    return _row(platform, passed=False, max_abs_diff=worst, reason=f"parity failed: max abs diff {worst:.3g}"
                + (f", {mismatches} top-1 differ" if mismatches else "") + f" (tolerance: {tolerance.text()})"), None


def unavailable(name: str, bundle: Bundle, settings: dict) -> str | None:
    """Why runtime ``name`` cannot serve ``bundle`` here, or None when it can be tried."""
    return RUNTIMES[name].unavailable(bundle.path, settings["DEVICE"]) or bundle.ruled_out(name)


def parity_inputs(bundle: Bundle) -> tuple[list[np.ndarray], str]:
    """The bundle's samples.npz, or zeros shaped like its inputs (with a note saying so)."""
    try:
        samples = bundle.samples()
    except BundleError as exc:
        samples, why = None, f"samples.npz unusable ({exc})"
    else:
        why = "no samples.npz in the bundle"
    if samples is not None:
        return samples, f"samples.npz, {len(samples[0])} rows"
    zeros = bundle.zeros(bundle.fixed_batch or DUMMY_ROWS)
    return zeros, f"{why}: {len(zeros[0])} rows of zeros (a weak check; re-export to get samples)"


def median_micros(backends: dict, inputs: list[np.ndarray]) -> dict[str, float | Exception]:
    """Median microseconds of ``REPEATS`` calls of each backend on ``inputs``, the backends taking turns;
    the error instead for a backend whose first, untimed call at this size fails."""
    failed = {}
    for name, backend in backends.items():
        try:
            backend.run(inputs)  # untimed: the first call at a new size allocates
        except Exception as exc:  # noqa: BLE001  reported in the table; the others are still timed
            failed[name] = exc
    times: dict[str, list[float]] = {name: [] for name in backends if name not in failed}
    for _ in range(REPEATS):
        for name in times:
            started = time.perf_counter()
            backends[name].run(inputs)
            times[name].append(time.perf_counter() - started)
    return {**{name: statistics.median(t) * 1e6 for name, t in times.items()}, **failed}


def _text(exc: Exception) -> str:
    return f"{type(exc).__name__}: {str(exc)[:300]}"


def table_lines(report: dict) -> list[str]:
    """The report as a few aligned log lines."""
    n = report.get("batch_sizes", [1, "N"])[1]

    def cell(value, fmt: str, width: int) -> str:
        return f"{'-' if value is None else format(value, fmt):>{width}}"

    lines = [f"{'backend':<17} {'parity':<7} {'max diff':>9} {'batch 1 us':>11} {f'batch {n} us':>12}  chosen / reason"]
    for r in report["backends"]:
        parity = {True: "passed", False: "FAILED", None: "-"}[r["passed"]]
        note = "; ".join(filter(None, ["CHOSEN" if r["chosen"] else "", r["reason"]]))
        lines.append(f"{r['backend']:<17} {parity:<7} {cell(r['max_abs_diff'], '.2g', 9)} "
                     f"{cell(r['batch_1_median_us'], '.0f', 11)} {cell(r['batch_n_median_us'], '.0f', 12)}  {note}")
    return lines
