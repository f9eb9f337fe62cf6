"""The export, in PaddleClas's order, in a temporary folder renamed into place at the end:

    load checkpoint -> build model, eval() -> task head -> parity inputs -> dygraph reference
    -> to_static(InputSpec) + jit.save -> inference.yml -> inference.onnx (when paddle2onnx converts it)
    -> parity, runtime by runtime -> samples.npz -> manifest.json and report -> verified read -> place

``export_checkpoint`` starts from a ``python -m train`` checkpoint and takes everything else from
the task table (``common.tasks``); ``export_layer`` starts from any ``paddle.nn.Layer`` and the
input specs the caller gives. Both become a ``Plan`` and go through the same ``build_bundle``.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import datetime
import importlib
import io
import json
import os
import subprocess
import sys
import time
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import paddle
import yaml
from paddle import nn

import models
from common import checkpoint, tasks
from common.atomic import atomic_write_text
from common.bundle import BUNDLE_FORMAT, CONFIG_FILE, DTYPES, MANIFEST_FILE, PASSED, PREFIX, RULED_OUT, SAMPLES_FILE, \
    BundleError, read_bundle, sha256_file
from common.datasets import DataMissingError
from common.runtimes import REFERENCE, RUNTIMES
from common.tasks import Samples, TensorSpec, Tolerance

from . import LAYER_TOLERANCE, ExportError, ExportWarning, breaks, inputs, parity, paths, place
from .onnx import onnx_missing, to_onnx
from .report import report_lines
from .signature import Feed, default_output_names, feed_from_tensor, feeds_from_specs, parse_input

FORMATS = ("json", "pdmodel")
ROOT = Path(__file__).resolve().parent.parent
CUSTOM_TASK = "custom"  # Global.task of a bundle exported from a layer: served over V2 only
TO_STATIC = {"mode": "AST (full_graph=True)",
             "why": "paddle.jit.save needs forward as one program; SOT (full_graph=False) would run what it cannot "
                    "convert as Python between graphs, which a saved graph cannot hold (Paddle then ignores "
                    "input_spec and converts with AST anyway)"}
SHOWN_KINDS = ("numpy", "tolist", "item", "number", "print")  # graph-leaving code worth a note when it exported


@dataclass
class Plan:
    """What one export needs, whatever it started from."""

    layer: nn.Layer                 # eval-mode dygraph layer whose forward becomes the graph
    inputs: list[Feed]              # graph inputs: dimensions after the batch axis, value ranges
    outputs: list[TensorSpec]       # graph outputs, in jit.save's order (empty: learnt from the reference run)
    name: str                       # Global.model_name
    task: str                       # Global.task ("custom" for a layer)
    samples: Samples                # real parity inputs (x: one array per input; may be empty) and targets
    tolerance: Tolerance
    recipe: dict                    # how python -m export.legacy rebuilds ``layer`` in a child process
    source: dict                    # provenance for the manifest
    preprocess: dict | None = None  # inference.yml PreProcess / PostProcess
    postprocess: dict | None = None
    served_metrics: object = None   # (outputs, targets) -> metrics of the exported model on the samples
    config: dict = field(default_factory=dict)  # the training config, copied into the manifest
    generate: bool = False          # parity on generated inputs too (layers), not only on the samples
    dim_sizes: dict = field(default_factory=dict)  # dynamic dimension -> the sizes generated inputs take
    output_names: list[str] | None = None  # names the caller gave the outputs
    require: tuple[str, ...] = ()   # runtimes that must pass, besides Paddle Inference


# ---- entry points ---------------------------------------------------------------------------


def export_checkpoint(checkpoint_path: str | Path, out: str | Path, *, fmt: str = "json", batch: int | None = None,
                      onnx: bool = True, force: bool = False, data_dir: str | None = None,
                      require: tuple[str, ...] = ()) -> Path:
    """Export a ``python -m train`` checkpoint (a file, a run folder or ``checkpoints/latest``) to ``out``.

    ``fmt``: "json" (PIR program) or "pdmodel" (legacy program); ``batch``: None for any batch
    size, or a fixed one; ``onnx``: also write inference.onnx when paddle2onnx can convert the model
    (otherwise an ``ExportWarning`` and a note in the manifest); ``force``: replace an existing
    bundle; ``data_dir``: where the parity samples are (default: the checkpoint's data_dir, then
    Paddle's cache); ``require``: runtimes (``common.runtimes.RUNTIMES``) that must pass parity too.
    Raises ``ExportError`` for anything the user can fix, leaving no files behind.
    """
    started = time.perf_counter()
    check_options(fmt, batch, require)
    place.check_destination(Path(out), force)
    plan = plan_from_checkpoint(checkpoint_path, data_dir)
    plan.require = tuple(require)
    return build_bundle(plan, Path(out), fmt=fmt, batch=batch, onnx=onnx, started=started)


def export_layer(layer: nn.Layer, input_spec: list, out: str | Path, *, output_names: list[str] | None = None,
                 name: str | None = None, samples=None, tolerance: Tolerance = LAYER_TOLERANCE,
                 dim_sizes: dict | None = None, fmt: str = "json", onnx: bool = True, force: bool = False,
                 recipe: dict | None = None, require: tuple[str, ...] = ()) -> Path:
    """Export any ``paddle.nn.Layer`` (weights already loaded) to the bundle folder ``out``.

    ``input_spec``: one entry per argument of ``forward``, a named ``InputSpec`` or a
    ``NAME:DTYPE:SHAPE[:LOW..HIGH]`` string (``export/signature.py``: named dynamic dimensions, value
    ranges); the first dimension is the batch (None or -1: any size; all inputs must agree).
    ``output_names`` names what ``forward`` returns (a tensor, a tuple/list, or a dict: by default its
    keys, else output_0, output_1, ...). Parity runs on ``samples`` ({input name: array}, or an
    .npz file of them), if given, and on generated inputs of several batch sizes and
    ``dim_sizes`` ({dimension name: sizes}). ``require``: runtimes that must pass besides Paddle
    Inference. ``fmt="pdmodel"`` needs ``recipe`` (how a child process rebuilds the layer), which
    ``python -m export --layer`` provides.
    """
    started = time.perf_counter()
    check_options(fmt, None, require)
    if fmt == "pdmodel" and recipe is None:
        raise ExportError("fmt='pdmodel' from a layer object: the legacy program is written by a child process "
                          "that must rebuild the layer; use python -m export --layer ... --format pdmodel, or fmt='json'")
    place.check_destination(Path(out), force)
    feeds, batch = feeds_from_specs(input_spec)
    check_dim_sizes(feeds, dim_sizes or {})
    layer.eval()
    rows, origin = inputs.read_samples(samples, feeds) if samples is not None else ([], "")
    plan = Plan(layer=layer, inputs=feeds, outputs=[], name=name or type(layer).__name__, task=CUSTOM_TASK,
                samples=Samples(rows, np.zeros(0), origin), tolerance=tolerance,
                recipe=recipe or {},
                source={"layer": f"{type(layer).__module__}.{type(layer).__qualname__}", **(recipe or {})},
                generate=True, dim_sizes=dict(dim_sizes or {}), output_names=output_names, require=tuple(require))
    return build_bundle(plan, Path(out), fmt=fmt, batch=batch, onnx=onnx, started=started)


def check_options(fmt: str, batch: int | None, require=()) -> None:
    """Refuse option values and combinations that cannot work, before any work is done."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
    if batch is not None and (isinstance(batch, bool) or not isinstance(batch, int) or batch < 1):
        raise ExportError(f"batch must be None (dynamic) or a positive integer, got {batch!r}")
    unknown = [r for r in require if r not in RUNTIMES]
    if unknown:
        raise ExportError(f"--require {unknown[0]}: unknown runtime; choose from {', '.join(RUNTIMES)}")


def check_dim_sizes(feeds: list[Feed], dim_sizes: dict) -> None:
    """Refuse sizes for a dimension no input has, and sizes that are not positive integers."""
    names = inputs.dim_names(feeds)
    for dim, sizes in dim_sizes.items():
        if dim not in names:
            raise ExportError(f"--dim {dim}: no input has a dimension named {dim!r} (named ones: "
                              f"{', '.join(n for n in names if '.' not in n) or 'none'}; name one in --input's SHAPE)")
        if not sizes or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in sizes):
            raise ExportError(f"--dim {dim}: sizes must be positive integers, got {list(sizes)}")


# ---- steps 1-3: load the checkpoint, build the model, put the task's head on it -----------------------------


def load_source(path: str | Path) -> tuple[Path, dict]:
    """Step 1: the checkpoint file ``path`` means (file, run folder, ``latest``), read and verified."""
    try:
        file = checkpoint.resolve_path(path)
        state = checkpoint.load(file)
    except checkpoint.CheckpointError as exc:
        raise ExportError(str(exc)) from exc
    for key in ("config", "model_state"):
        if key not in state:
            raise ExportError(f"{file} has no {key!r}; was it written by python -m train?")
    try:
        task = tasks.get(state["config"]["task"])
    except ValueError as exc:
        raise ExportError(f"{file}: {exc}") from exc
    missing = [k for k in task.required_stats if k not in (state.get("stats") or {})]
    if missing:
        raise ExportError(f"{file} lacks the statistics {', '.join(missing)} that serving needs; "
                          "retrain with python -m train")
    return file, state


def build_eval_model(file: Path, state: dict) -> nn.Layer:
    """Step 2: the checkpoint's network with its weights, in eval mode (dropout off, batch norm frozen)."""
    cfg = state["config"]
    try:
        net = models.build_model(cfg["task"], cfg["model"], cfg.get("dropout"))
    except ValueError as exc:
        raise ExportError(f"{file}: {exc}") from exc
    missing, unexpected = net.set_state_dict(state["model_state"])
    if missing or unexpected:
        raise ExportError(f"{file}: weights do not fit model {cfg['model']!r} "
                          f"(missing {list(missing)[:3]}, unexpected {list(unexpected)[:3]})")
    net.eval()
    return net


def plan_from_checkpoint(path: str | Path, data_dir: str | None = None, with_samples: bool = True) -> Plan:
    """Steps 1-3 for a training checkpoint: everything else comes from its task's entry in the table."""
    file, state = load_source(path)
    cfg, stats = state["config"], state.get("stats") or {}
    task = tasks.get(cfg["task"])
    layer = task.head(build_eval_model(file, state), stats)  # step 3: what a client wants, e.g. probabilities
    layer.eval()
    samples = Samples([], np.zeros(0), "none")
    if with_samples:  # before anything is written: missing data fails early
        try:
            found = task.parity_samples(data_dir or cfg.get("data_dir"), stats)
        except DataMissingError as exc:
            raise ExportError(f"the parity check needs real test samples: {exc}") from exc
        samples = Samples([found.x], found.y, found.origin)
    return Plan(layer=layer, inputs=[feed_from_tensor(t) for t in task.inputs], outputs=list(task.outputs),
                name=cfg["model"], task=task.name,
                samples=samples, tolerance=task.tolerance, recipe={"checkpoint": str(file.resolve())},
                source=describe_checkpoint(file, state), preprocess=task.preprocess(stats),
                postprocess=task.postprocess(stats), served_metrics=task.served_metrics, config=cfg)


def describe_checkpoint(file: Path, state: dict) -> dict:
    """Provenance: file, sha256, position in training and the metrics of that epoch."""
    progress = state.get("progress") or {}
    history = [row for row in progress.get("history", []) if isinstance(row, dict)]
    # A checkpoint's weights are those of the last epoch in its own history (best.pdckpt is written at
    # the end of the best epoch, so for it that row is the best one); a mid-epoch checkpoint has
    # trained past that row, which "mid_epoch" says.
    row = history[-1] if history else {}
    return {"path": str(file.resolve()), "sha256": sha256_file(file), "epoch": row.get("epoch"),
            "mid_epoch": bool(progress.get("step_in_epoch")), "global_step": progress.get("global_step"),
            "best_epoch": progress.get("best_epoch"),
            "metrics": {k: v for k, v in row.items() if k.startswith(("val_", "test_"))}}


# ---- a layer ---------------------------------------------------------------------------------------------------


def load_layer(target: str, weights: str | None, kwargs: dict | None = None) -> nn.Layer:
    """``package.module:Class`` -> an instance (``kwargs`` to its constructor) with ``weights`` loaded."""
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise ExportError(f"--layer {target!r}: expected package.module:ClassName")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ExportError(f"--layer {target!r}: cannot import it ({exc}); run from the folder that holds "
                          "the package, or put it on PYTHONPATH") from exc
    try:
        layer = cls(**(kwargs or {}))
    except TypeError as exc:  # wrong --layer-kwargs for the constructor
        raise ExportError(f"--layer {target!r} could not be constructed with --layer-kwargs {kwargs or {}}: {exc}") from exc
    if not isinstance(layer, nn.Layer):
        raise ExportError(f"--layer {target!r} made a {type(layer).__name__}, not a paddle.nn.Layer")
    if weights:
        if not Path(weights).is_file():
            raise ExportError(f"--weights {weights} does not exist")
        try:
            state = paddle.load(weights)
        except Exception as exc:  # paddle.load raises many kinds for a bad file
            raise ExportError(f"--weights {weights} could not be read: {exc}") from exc
        missing, unexpected = layer.set_state_dict(state)
        if missing or unexpected:
            raise ExportError(f"--weights {weights} do not fit {attr} (missing {list(missing)[:3]}, "
                              f"unexpected {list(unexpected)[:3]})")
    layer.eval()
    return layer


# ---- steps 4-10: the bundle -----------------------------------------------------------------------------------


def build_bundle(plan: Plan, out: Path, *, fmt: str, batch: int | None, onnx: bool, started: float) -> Path:
    """Run the dygraph reference, write every file of the bundle into a temporary folder, prove it runtime by
    runtime, then rename it to ``out``; ``ExportWarning`` s for what it had to leave out."""
    sites = breaks.scan(plan.layer)  # code that leaves the graph: named in errors, noted when proven harmless
    feeds, expected, paths_seen = dygraph_reference(plan, batch, sites)  # its faults before any file is written
    if not plan.outputs:
        plan.outputs = output_specs(plan, feeds, expected)
    created = place.missing_parents(out)
    tmp = place.make_temp(out)
    try:
        control_flow = save_graph(plan, tmp, fmt, batch, sites)                           # 4-5
        atomic_write_text(tmp / CONFIG_FILE, yaml.safe_dump(inference_config(plan, fmt, batch), sort_keys=False))  # 6
        # 7: without paddle2onnx the ONNX runtimes are skipped (this Python), not unavailable (this graph)
        no_converter = onnx_missing() if onnx else None
        onnx_reason = to_onnx(tmp) if onnx and not no_converter else None
        figures = prove(plan, tmp, feeds, expected, paths_seen, control_flow, onnx_reason)  # 8
        parity.require_reference(figures, sites=sites)
        require_runtimes(plan.require, figures["runtimes"])
        warned = ([f"no inference.onnx: {no_converter}"] if no_converter else []) + \
            runtime_warnings(figures["runtimes"], onnx_reason) + path_warnings(figures)
        drop_unused_onnx(tmp, figures["runtimes"])
        write_samples(tmp, plan.inputs, feeds.kept)
        notes = warned + site_notes(sites, figures)
        write_manifest(tmp, plan, fmt, batch, figures, time.perf_counter() - started, notes, out)  # 9
        try:
            read_bundle(tmp, verify=True)  # the server's reader accepts it, checksums included
        except BundleError as exc:
            raise ExportError(f"the bundle just written does not read back: {exc}") from exc
        place.install(tmp, out)                                                                # 10
    except BaseException:  # including Ctrl-C: no half bundle, no temporary folder
        place.discard(tmp, created)
        raise
    for text in warned:
        warnings.warn(text, ExportWarning, stacklevel=3)
    return out


def dygraph_reference(plan: Plan, batch: int | None, sites) -> tuple:
    """(the parity inputs, the dygraph layer's answers to every call, its number of paths through forward)."""
    feeds = inputs.build(plan.inputs, batch, rows=plan.samples.x or None, rows_origin=plan.samples.origin,
                         generated=plan.generate, dim_sizes=plan.dim_sizes)
    expected, paths_seen = parity.dygraph(plan.layer, feeds, plan.tolerance, sites)
    return feeds, expected, paths_seen


def output_specs(plan: Plan, feeds, expected: list) -> list[TensorSpec]:
    """Names, dtypes and shapes of what forward returns, from the reference run (names from one more call)."""
    first = feeds.cases[0].calls[0]
    with paddle.no_grad():
        structure = plan.layer(*[paddle.to_tensor(a) for a in first.arrays])
    names = plan.output_names or default_output_names(structure)
    calls = [(call.keep, outs) for case, per_case in zip(feeds.cases, expected) for call, outs in zip(case.calls, per_case)]
    counts = sorted({len(outs) for _, outs in calls})
    if len(counts) > 1:
        raise ExportError(f"{parity.layer_name(plan.layer)} returns {' or '.join(map(str, counts))} tensors depending "
                          f"on its input; a static graph has one signature: {breaks.CONTROL_FLOW_HINT}")
    if len(names) != counts[0]:
        raise ExportError(f"{len(names)} output names for {counts[0]} outputs of {parity.layer_name(plan.layer)}")
    return [output_spec(name, [(rows, outs[i]) for rows, outs in calls]) for i, name in enumerate(names)]


def output_spec(name: str, seen: list[tuple[int, np.ndarray]]) -> TensorSpec:
    """One output from its arrays over the parity calls (with each call's rows): a dimension that varied is -1."""
    dtypes = sorted({str(a.dtype) for _, a in seen})
    if len(dtypes) > 1:
        raise ExportError(f"output {name!r} is {' or '.join(dtypes)} depending on the input; a static graph has "
                          f"one dtype per output: {breaks.CONTROL_FLOW_HINT}")
    dtype = dtypes[0]
    if dtype not in DTYPES:
        raise ExportError(f"output {name!r} has dtype {dtype}, which bundles cannot declare")
    shapes = {a.shape for _, a in seen}
    if len({len(s) for s in shapes}) != 1 or any(a.ndim == 0 or len(a) != rows for rows, a in seen):
        raise ExportError(f"output {name!r} has shapes {sorted(map(list, shapes))} for batches of "
                          f"{sorted({rows for rows, _ in seen})}: every output needs the batch as its first dimension "
                          "(one row per input row: the server splits answers by rows) and a fixed rank")
    rank = len(next(iter(shapes)))
    return TensorSpec(name, tuple(-1 if len({s[k] for s in shapes}) > 1 else next(iter(shapes))[k]
                                  for k in range(1, rank)), dtype)


def prove(plan: Plan, folder: Path, feeds, expected, paths_seen: int, control_flow, onnx_reason) -> dict:
    """Step 8, every runtime against the dygraph reference: the manifest's ``parity``."""
    results = parity.check_runtimes(folder, feeds, expected, plan.tolerance, [f.name for f in plan.inputs],
                                    [o.name for o in plan.outputs], onnx_reason)
    figures = {"reference": "the dygraph layer, in eval mode", **feeds.describe(), "paths": paths_seen,
               "control_flow": control_flow, "tolerance": plan.tolerance.text(), "runtimes": results,
               "passed": results[REFERENCE]["status"] == PASSED}
    if plan.served_metrics and len(plan.samples.y):
        # Not a parity figure, a sanity one: the samples are real and the exported model works on them.
        first_output = np.concatenate([call[0] for call in expected[0]])
        figures["dygraph_metrics"] = plan.served_metrics(first_output, plan.samples.y)
    return figures


def require_runtimes(required: tuple[str, ...], results: dict) -> None:
    """ExportError when a runtime the user requires did not pass."""
    for name in required:
        result = results[name]
        if result["status"] != PASSED:
            raise ExportError(f"--require {name}: {name} {result['status']}: {result.get('reason', '')}")


def runtime_warnings(results: dict, onnx_reason: str | None) -> list[str]:
    """One line per runtime left out (the ONNX ones together when there is no inference.onnx)."""
    lines = []
    if onnx_reason:
        names = [n for n, r in RUNTIMES.items() if r.reads_onnx]
        lines.append(f"no inference.onnx: {onnx_reason}; {', '.join(names)} unavailable, the bundle serves with "
                     "Paddle Inference")
    for name, result in results.items():
        if result["status"] in RULED_OUT and not (onnx_reason and RUNTIMES[name].reads_onnx):
            lines.append(f"{name} {result['status']}: {result['reason']}; the server will not use it")
    return lines


def path_warnings(figures: dict) -> list[str]:
    """A warning when the graph branches on data but every parity input went the same way through forward."""
    flow = figures.get("control_flow") or {}
    if sum(flow.values()) and (figures["paths"] or 0) <= 1:
        what = ", ".join(f"{n} {kind}" for kind, n in flow.items() if n)
        return [f"the graph has data-dependent control flow ({what}) but every parity input took the same path "
                "through forward: the other branches are unproven; give --samples that take them, or value ranges "
                "(--input NAME:DTYPE:SHAPE:LOW..HIGH) that reach them"]
    return []


def site_notes(sites: list, figures: dict) -> list[str]:
    """Graph-leaving code that exported anyway: what to_static made of it, and what proved it."""
    notes, lines = [], set()
    for site in sites:
        if site.kind not in SHOWN_KINDS or (site.path, site.line) in lines:
            continue
        lines.add((site.path, site.line))
        if site.kind == "print":
            notes.append(f"{site.where()} `{site.code}`: {breaks.KINDS['print'][0]}")
        else:
            notes.append(f"{site.where()} `{site.code}` takes a tensor out of the graph ({site.kind}); to_static "
                         f"turned it into graph operations here, and parity on {figures['calls']} calls found the "
                         f"same answers; still, {site.advice}")
    return notes


def drop_unused_onnx(folder: Path, results: dict) -> None:
    """Delete inference.onnx when no runtime that reads it passed: a file no server may use."""
    onnx_file = folder / f"{PREFIX}.onnx"
    readers = [n for n, r in RUNTIMES.items() if r.reads_onnx]
    if onnx_file.is_file() and not any(results[n]["status"] == PASSED for n in readers):
        onnx_file.unlink()


def save_graph(plan: Plan, folder: Path, fmt: str, batch: int | None, sites=()) -> dict | None:
    """Steps 4-5: to_static with named InputSpecs, then jit.save (legacy format: in a child process).

    Returns the graph's control flow (``paths.control_flow``), None when not inspected (legacy format)."""
    if fmt == "json":
        return paths.control_flow(save_static(plan.layer, [f.spec(batch) for f in plan.inputs], folder, sites))
    save_legacy(plan.recipe, plan.inputs, batch, folder)
    return None


def save_static(layer: nn.Layer, spec: list, folder: Path, sites=()):
    """Convert a copy of ``layer`` (the original stays dygraph, for parity), save it in ``folder``; returns the
    converted layer. A failure is one line naming the user's code (``breaks.conversion_error``)."""
    printed = io.StringIO()  # a print in forward runs once here, on symbolic values: a note says so instead
    try:
        with contextlib.redirect_stdout(printed), warnings.catch_warnings():
            # Paddle's conversion warnings concern its internals (dict outputs come out by sorted key, which
            # the output names follow; Values have no place); the parity check says what matters.
            warnings.filterwarnings("ignore", module=r"paddle\.")
            # A copy: to_static replaces forward on the layer it is given.
            static = paddle.jit.to_static(copy.deepcopy(layer), input_spec=spec, full_graph=True)
            paddle.jit.save(static, str(folder / PREFIX), input_spec=spec)
    except Exception as exc:  # any conversion failure is the model's code, not ours: say what to change
        raise ExportError(breaks.conversion_error(parity.layer_name(layer), exc, list(sites),
                                                  paths.user_files(layer))) from exc
    return static


def save_legacy(recipe: dict, feeds: list[Feed], batch: int | None, folder: Path, timeout: float = 600) -> None:
    """Write ``inference.pdmodel`` by running ``python -m export.legacy`` with the PIR API off.

    The legacy protobuf program can only be written while ``FLAGS_enable_pir_api`` is 0, and Paddle
    reads that flag once, at import: so a child process rebuilds the layer from ``recipe`` and saves it.
    """
    job = {"recipe": recipe, "inputs": [f.text(batch) for f in feeds]}
    env = {**os.environ, "FLAGS_enable_pir_api": "0",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.getcwd(), os.environ.get("PYTHONPATH")]))}
    cmd = [sys.executable, "-m", "export.legacy", json.dumps(job), str(folder.resolve())]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
        reason = lines[-1][len("error: "):] if lines else (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise ExportError(f"--format pdmodel: writing the legacy program failed: {reason}")
    if not (folder / f"{PREFIX}.pdmodel").is_file():
        raise ExportError("--format pdmodel: this Paddle wrote no inference.pdmodel even with FLAGS_enable_pir_api=0; "
                          "use --format json, or Paddle 2.6 for the legacy format")


def inference_config(plan: Plan, fmt: str, batch: int | None) -> dict:
    """Step 6: ``inference.yml``, what the server reads (plain types only, for yaml.safe_dump)."""
    config = {
        "Global": {"model_name": plan.name, "task": plan.task, "format": fmt,
                   "batch": "dynamic" if batch is None else batch, "paddle_version": paddle.__version__},
        "Inputs": [s.declared(batch) for s in plan.inputs],
        "Outputs": [s.declared(batch) for s in plan.outputs],
    }
    if plan.preprocess:
        config["PreProcess"] = plan.preprocess
    if plan.postprocess:
        config["PostProcess"] = plan.postprocess
    return config


def write_samples(folder: Path, feeds: list[Feed], kept: list[np.ndarray]) -> None:
    """The first parity rows as ``samples.npz`` (one array per input name): a server checks every backend it
    may choose against Paddle Inference on them."""
    # np.savez(file, **arrays) would break on an input named "file"; this is what it writes.
    with zipfile.ZipFile(folder / SAMPLES_FILE, "w") as archive:
        for feed, x in zip(feeds, kept):
            with archive.open(f"{feed.name}.npy", "w") as f:
                np.lib.format.write_array(f, np.ascontiguousarray(x), allow_pickle=False)


def write_manifest(folder: Path, plan: Plan, fmt: str, batch: int | None, figures: dict, seconds: float,
                   notes: list[str], out: Path) -> dict:
    """Step 9: checksum every file of ``folder`` and write ``manifest.json`` with the report; returns the manifest.

    ``tolerance`` is the parity rule as numbers, which a server applies when it compares backends;
    ``parity.runtimes`` says which runtimes passed (a server's ``--backend auto`` considers no other);
    ``notes`` say what the export left out and why, and what it proved despite appearances."""
    files = {p.name: sha256_file(p) for p in sorted(folder.iterdir()) if p.is_file() and p.name != MANIFEST_FILE}
    manifest = {
        "format": BUNDLE_FORMAT, "task": plan.task, "model_name": plan.name, "graph_format": fmt,
        "batch": "dynamic" if batch is None else batch, "paddle_version": paddle.__version__,
        "exported_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "export_seconds": round(seconds, 2), "files": files, "source_checkpoint": plan.source,
        "signature": signature(plan, batch), "to_static": TO_STATIC, "dim_sizes": plan.dim_sizes,
        "require": list(plan.require), "parity": figures, "tolerance": dataclasses.asdict(plan.tolerance),
        "notes": list(notes), "training_config": plan.config,
    }
    manifest["report"] = report_lines(manifest, str(out))
    atomic_write_text(folder / MANIFEST_FILE, json.dumps(manifest, indent=2, default=str) + "\n")
    return manifest


def signature(plan: Plan, batch: int | None) -> dict:
    """The inputs as ``--input`` takes them, the outputs as ``NAME:DTYPE:SHAPE``."""
    return {"inputs": [f.text(batch) for f in plan.inputs],
            "outputs": [f"{o.name}:{o.dtype}:{','.join(map(str, o.declared(batch)['shape']))}" for o in plan.outputs]}


# ---- re-checking an existing bundle ---------------------------------------------------------------


def check_bundle(bundle_dir: str | Path, checkpoint: str | Path | None = None, *, layer: nn.Layer | None = None,
                 data_dir: str | None = None, verify: bool = True) -> dict:
    """Re-run the parity check of an existing bundle, every runtime; returns the figures (the manifest's
    ``parity`` as it would be now) with the report under ``report``.

    The reference is ``checkpoint`` (for a checkpoint export), ``layer`` (weights loaded), or else the
    layer the manifest's provenance rebuilds (``python -m export --layer`` exports: its --layer, --weights
    and --layer-kwargs). With ``verify`` the
    sha256 checksums are checked first (an altered file fails there); with ``verify=False`` the
    numbers alone must catch it. Raises ExportError when Paddle Inference differs.
    """
    try:
        bundle = read_bundle(bundle_dir, verify=verify)
    except BundleError as exc:
        raise ExportError(str(exc)) from exc
    plan = plan_from_checkpoint(checkpoint, data_dir) if checkpoint else plan_from_bundle(bundle, layer)
    if (bundle.task, bundle.model_name) != (plan.task, plan.name):
        raise ExportError(f"{bundle_dir} holds {bundle.task}/{bundle.model_name}, the reference {plan.task}/{plan.name}")
    sites = breaks.scan(plan.layer)
    feeds, expected, paths_seen = dygraph_reference(plan, bundle.fixed_batch, sites)
    figures = prove(plan, bundle.path, feeds, expected, paths_seen,
                    (bundle.manifest.get("parity") or {}).get("control_flow"), None)
    parity.require_reference(figures, f"{bundle_dir}", sites)
    manifest = {**bundle.manifest, "parity": figures, "notes": runtime_warnings(figures["runtimes"], None)}
    figures["report"] = report_lines(manifest, str(bundle_dir), title="[verify]")
    return figures


def plan_from_bundle(bundle, layer: nn.Layer | None) -> Plan:
    """The plan of a layer export, from its manifest: the layer (given, or rebuilt as ``--layer``, ``--weights``
    and ``--layer-kwargs`` built it), its inputs as declared, its outputs, tolerance and dimension sizes; the
    sample rows of samples.npz when the export had real samples."""
    manifest, source = bundle.manifest, bundle.manifest.get("source_checkpoint") or {}
    if layer is None:
        if "weights" not in source:
            raise ExportError(f"{bundle.path} was exported from a layer object, which its manifest cannot rebuild: "
                              "pass the layer (check_bundle(..., layer=net)) or --checkpoint")
        layer = load_layer(source["layer"], source["weights"], source.get("kwargs"))
    layer.eval()
    feeds = [parse_input(text)[0] for text in (manifest.get("signature") or {}).get("inputs", [])]
    had_rows = str((manifest.get("parity") or {}).get("origin", "")).startswith("samples")
    rows = bundle.samples() if had_rows else None
    outputs = [TensorSpec(o["name"], tuple(o["shape"][1:]), o["dtype"]) for o in bundle.outputs]
    return Plan(layer=layer, inputs=feeds, outputs=outputs, name=bundle.model_name, task=bundle.task,
                samples=Samples(rows or [], np.zeros(0), "samples.npz of the bundle" if rows else ""),
                tolerance=bundle.tolerance or LAYER_TOLERANCE, recipe=source, source=source, generate=True,
                dim_sizes={k: tuple(v) for k, v in (manifest.get("dim_sizes") or {}).items()})
