"""The export, in PaddleClas's order, in a temporary folder renamed into place at the end:

    load checkpoint -> build model, eval() -> task head -> to_static(InputSpec) + jit.save
    -> inference.yml -> inference.onnx (when paddle2onnx converts it) -> parity -> samples.npz
    -> manifest.json -> verified read -> place

``export_checkpoint`` starts from a ``python -m train`` checkpoint and takes everything else from
the task table (``common.tasks``); ``export_layer`` starts from any ``paddle.nn.Layer`` and the
input specs the caller gives. Both become a ``Plan`` and go through the same ``build_bundle``.
"""
from __future__ import annotations

import copy
import dataclasses
import datetime
import importlib
import json
import os
import re
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
from paddle.static import InputSpec

import models
from common import checkpoint, tasks
from common.atomic import atomic_write_text
from common.bundle import BUNDLE_FORMAT, CONFIG_FILE, DTYPES, MANIFEST_FILE, PREFIX, SAMPLES_FILE, BundleError, \
    read_bundle, sha256_file
from common.datasets import DataMissingError
from common.tasks import Samples, TensorSpec, Tolerance

from . import ExportError, ExportWarning, parity, place

FORMATS = ("json", "pdmodel")
ROOT = Path(__file__).resolve().parent.parent
CONTROL_FLOW_HINT = ("rewrite data-dependent Python control flow (an if/while on tensor values) so that every "
                     "branch returns the same structure of tensors, or use paddle.where / "
                     "paddle.static.nn.cond / paddle.static.nn.while_loop")
CUSTOM_TASK = "custom"  # Global.task of a bundle exported from a layer: served over V2 only
GENERATED_SAMPLES = 64  # rows of generated inputs for the parity of a layer export
GENERATED_DIM = 8  # size given to a non-batch dimension declared -1, in generated inputs
SAMPLE_ROWS = 8  # rows of the parity inputs kept in samples.npz: enough for a server's check, a few KB


@dataclass
class Plan:
    """What one export needs, whatever it started from."""

    layer: nn.Layer                 # eval-mode dygraph layer whose forward becomes the graph
    inputs: list[TensorSpec]        # graph inputs, shapes after the batch axis
    outputs: list[TensorSpec]       # graph outputs, in the order forward returns them
    name: str                       # Global.model_name
    task: str                       # Global.task ("custom" for a layer)
    samples: Samples                # parity inputs (x: one array per input) and targets (may be empty)
    tolerance: Tolerance
    recipe: dict                    # how python -m export.legacy rebuilds ``layer`` in a child process
    source: dict                    # provenance for the manifest
    preprocess: dict | None = None  # inference.yml PreProcess / PostProcess
    postprocess: dict | None = None
    served_metrics: object = None   # (outputs, targets) -> metrics of the exported model on the samples
    config: dict = field(default_factory=dict)  # the training config, copied into the manifest


# ---- entry points ---------------------------------------------------------------------------


def export_checkpoint(checkpoint_path: str | Path, out: str | Path, *, fmt: str = "json", batch: int | None = None,
                      onnx: bool = True, force: bool = False, data_dir: str | None = None) -> Path:
    """Export a ``python -m train`` checkpoint (a file, a run folder or ``checkpoints/latest``) to ``out``.

    ``fmt``: "json" (PIR program) or "pdmodel" (legacy program); ``batch``: None for any batch
    size, or a fixed one; ``onnx``: also write inference.onnx when paddle2onnx can convert the model
    (otherwise an ``ExportWarning`` and a note in the manifest); ``force``: replace an existing
    bundle; ``data_dir``: where the parity samples are (default: the checkpoint's data_dir, then
    Paddle's cache). Raises ``ExportError`` for anything the user can fix, leaving no files behind.
    """
    started = time.perf_counter()
    check_options(fmt, batch)
    place.check_destination(Path(out), force)
    plan = plan_from_checkpoint(checkpoint_path, data_dir)
    return build_bundle(plan, Path(out), fmt=fmt, batch=batch, onnx=onnx, started=started)


def export_layer(layer: nn.Layer, input_spec: list[InputSpec], out: str | Path, *,
                 output_names: list[str] | None = None, name: str | None = None, samples: dict | None = None,
                 tolerance: Tolerance = Tolerance(atol=1e-5, rtol=1e-5), fmt: str = "json", onnx: bool = True,
                 force: bool = False, recipe: dict | None = None) -> Path:
    """Export any ``paddle.nn.Layer`` (weights already loaded) to the bundle folder ``out``.

    ``input_spec``: one named ``InputSpec`` per argument of ``forward``; the first dimension is the
    batch (None or -1: any size; all inputs must agree). ``output_names`` names what ``forward``
    returns (a tensor, or a tuple/list of them; default output_0, output_1, ...). Parity runs on
    ``samples`` ({input name: array}) or on generated inputs. ``fmt="pdmodel"`` needs ``recipe``
    (how a child process rebuilds the layer), which ``python -m export --layer`` provides.
    """
    started = time.perf_counter()
    check_options(fmt, None)
    if fmt == "pdmodel" and recipe is None:
        raise ExportError("fmt='pdmodel' from a layer object: the legacy program is written by a child process "
                          "that must rebuild the layer; use python -m export --layer ... --format pdmodel, or fmt='json'")
    place.check_destination(Path(out), force)
    specs, batch = tensor_specs(input_spec)
    layer.eval()
    inputs = samples_for(specs, batch, samples)
    outputs = output_specs(layer, specs, inputs, output_names)
    plan = Plan(layer=layer, inputs=specs, outputs=outputs, name=name or type(layer).__name__, task=CUSTOM_TASK,
                samples=inputs, tolerance=tolerance, recipe=recipe or {},
                source={"layer": f"{type(layer).__module__}.{type(layer).__qualname__}", **(recipe or {})})
    return build_bundle(plan, Path(out), fmt=fmt, batch=batch, onnx=onnx, started=started)


def check_options(fmt: str, batch: int | None) -> None:
    """Refuse option values and combinations that cannot work, before any work is done."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
    if batch is not None and (isinstance(batch, bool) or not isinstance(batch, int) or batch < 1):
        raise ExportError(f"batch must be None (dynamic) or a positive integer, got {batch!r}")


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
    return Plan(layer=layer, inputs=list(task.inputs), outputs=list(task.outputs), name=cfg["model"], task=task.name,
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


# ---- a layer's signature ------------------------------------------------------------------------------------


def tensor_specs(input_spec: list[InputSpec]) -> tuple[list[TensorSpec], int | None]:
    """Named ``InputSpec`` s -> TensorSpecs (shape after the batch axis) and the batch (None: any size)."""
    if not input_spec:
        raise ExportError("a layer export needs at least one input spec")
    specs, leads = [], set()
    for spec in input_spec:
        if not isinstance(spec, InputSpec) or not spec.name:
            raise ExportError(f"every input needs a named paddle.static.InputSpec, got {spec!r}")
        dtype = str(spec.dtype).replace("paddle.", "")
        if dtype not in DTYPES:
            raise ExportError(f"input {spec.name!r}: dtype {dtype} is not one of {', '.join(DTYPES)}")
        shape = [(-1 if d is None else int(d)) for d in spec.shape]
        if not shape or any(d == 0 or d < -1 for d in shape):
            raise ExportError(f"input {spec.name!r}: shape {shape} needs a batch dimension and sizes > 0 (or -1)")
        leads.add(shape[0])
        specs.append(TensorSpec(spec.name, tuple(shape[1:]), dtype))
    if len(leads) > 1:
        raise ExportError(f"inputs disagree on the batch dimension: {sorted(leads)}")
    if len({s.name for s in specs}) != len(specs):
        raise ExportError("two inputs have the same name")
    lead = leads.pop()
    return specs, None if lead == -1 else lead


def samples_for(specs: list[TensorSpec], batch: int | None, given: dict | None) -> Samples:
    """The caller's sample inputs, checked against the specs, or generated ones (seeded, so repeatable)."""
    if given is not None:
        missing = [s.name for s in specs if s.name not in given]
        if missing:
            raise ExportError(f"samples lack the inputs {missing}")
        x = [np.ascontiguousarray(given[s.name], dtype=s.dtype) for s in specs]
        if len({len(a) for a in x}) != 1:
            raise ExportError("sample inputs have different numbers of rows")
        return Samples(x, np.zeros(0), "samples given by the caller")
    rng = np.random.default_rng(0)
    rows = batch or GENERATED_SAMPLES
    x = []
    for s in specs:
        shape = (rows, *[GENERATED_DIM if d == -1 else d for d in s.shape])
        if s.dtype.startswith("float"):
            x.append(rng.standard_normal(shape).astype(s.dtype))
        elif s.dtype == "bool":
            x.append(rng.random(shape) < 0.5)
        else:  # integers: small non-negative values, valid as class ids or embedding indices
            x.append(rng.integers(0, 10, shape).astype(s.dtype))
    return Samples(x, np.zeros(0), f"{rows} generated rows (normal floats, integers 0..9, seed 0)")


def output_specs(layer: nn.Layer, specs: list[TensorSpec], samples: Samples, names: list[str] | None) -> list[TensorSpec]:
    """Run the layer once on the first sample to learn what it returns: names, shapes, dtypes."""
    try:
        with paddle.no_grad():
            out = parity.as_list(layer(*[paddle.to_tensor(a[:1]) for a in samples.x]))
    except ExportError:
        raise
    except Exception as exc:  # the user's forward, called with the declared inputs: say so
        raise ExportError(f"{type(layer).__name__}.forward failed on inputs shaped as declared "
                          f"({', '.join(f'{s.name}: {s.dtype}{[-1, *s.shape]}' for s in specs)}): "
                          f"{type(exc).__name__}: {str(exc).strip()[:300]}") from exc
    names = names or [f"output_{i}" for i in range(len(out))]
    if len(names) != len(out):
        raise ExportError(f"{len(names)} output names for {len(out)} outputs of {type(layer).__name__}.forward")
    result = []
    for name, tensor in zip(names, out):
        dtype = str(tensor.dtype).replace("paddle.", "")
        if dtype not in DTYPES:
            raise ExportError(f"output {name!r} has dtype {dtype}, which bundles cannot declare")
        result.append(TensorSpec(name, tuple(tensor.shape[1:]), dtype))
    return result


def parse_input(text: str) -> InputSpec:
    """``NAME:DTYPE:SHAPE`` (SHAPE comma-separated, -1 for any size, first the batch) -> InputSpec."""
    parts = text.split(":")
    if len(parts) != 3 or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", parts[0]):
        raise ExportError(f"--input {text!r}: expected NAME:DTYPE:SHAPE, e.g. image:float32:-1,1,28,28")
    name, dtype, shape = parts
    if dtype not in DTYPES:
        raise ExportError(f"--input {text!r}: dtype must be one of {', '.join(DTYPES)}")
    try:
        dims = [int(d) for d in shape.replace("x", ",").split(",")]
    except ValueError:
        raise ExportError(f"--input {text!r}: SHAPE must be integers separated by commas") from None
    return InputSpec([None if d == -1 else d for d in dims], dtype, name)


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
    layer = cls(**(kwargs or {}))
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
    """Write every file of the bundle into a temporary folder, prove it, then rename it to ``out``."""
    created = place.missing_parents(out)
    tmp = place.make_temp(out)
    try:
        save_graph(plan, tmp, fmt, batch)                                              # 4-5
        atomic_write_text(tmp / CONFIG_FILE, yaml.safe_dump(inference_config(plan, fmt, batch), sort_keys=False))  # 6
        notes = []
        if onnx and (why := parity.to_onnx(tmp)):                                      # 7
            notes.append(f"no inference.onnx: {why}; the bundle is Paddle-only")
            warnings.warn(notes[-1], ExportWarning, stacklevel=3)
        figures = parity.run_parity(plan, tmp, batch)                                  # 8
        parity.require(figures)
        if (tmp / f"{PREFIX}.onnx").is_file():  # a file that converts but computes otherwise fails the export
            figures["onnx"] = parity.onnx_parity(plan, tmp, batch)
            parity.require(figures["onnx"], "inference.onnx (onnxruntime)")
            figures["openvino"] = parity.openvino_parity(plan, tmp, batch)
            if figures["openvino"]["passed"] is not None:  # None: openvino not installed, skipped
                parity.require(figures["openvino"], "inference.onnx (OpenVINO)")
        write_samples(tmp, plan)
        write_manifest(tmp, plan, fmt, batch, figures, time.perf_counter() - started, notes)  # 9
        try:
            read_bundle(tmp, verify=True)  # the server's reader accepts it, checksums included
        except BundleError as exc:
            raise ExportError(f"the bundle just written does not read back: {exc}") from exc
        place.install(tmp, out)                                                        # 10
    except BaseException:  # including Ctrl-C: no half bundle, no temporary folder
        place.discard(tmp, created)
        raise
    return out


def save_graph(plan: Plan, folder: Path, fmt: str, batch: int | None) -> None:
    """Steps 4-5: to_static with named InputSpecs, then jit.save (legacy format: in a child process)."""
    if fmt == "json":
        save_static(plan.layer, input_spec(plan.inputs, batch), folder)
    else:
        save_legacy(plan.recipe, plan.inputs, batch, folder)


def input_spec(specs: list[TensorSpec], batch: int | None) -> list[InputSpec]:
    """The graph's named inputs: ``None`` batch (any size) or a fixed one."""
    return [InputSpec([batch, *[None if d == -1 else d for d in s.shape]], s.dtype, s.name) for s in specs]


def save_static(layer: nn.Layer, spec: list[InputSpec], folder: Path) -> None:
    """Convert a copy of ``layer`` (the original stays dygraph, for parity) and save it in ``folder``."""
    name = f"{type(getattr(layer, 'net', layer)).__name__}.forward"  # the user's network inside a task head
    try:
        # A copy: to_static replaces forward on the layer it is given.
        static = paddle.jit.to_static(copy.deepcopy(layer), input_spec=spec, full_graph=True)
        paddle.jit.save(static, str(folder / PREFIX), input_spec=spec)
    except Exception as exc:  # any conversion failure is the model's code, not ours: say what to change
        raise ExportError(conversion_message(name, exc)) from exc


def conversion_message(name: str, exc: Exception) -> str:
    """One line: which forward failed, Paddle's own reason, and how to fix it."""
    text = str(exc)
    reasons = re.findall(r"(?:^|\n)\s*(?:[\w.]+\.)?(\w+(?:Exception|Error)): (.+)", text)
    reason = f"{reasons[-1][0]}: {reasons[-1][1]}" if reasons else \
        (text.strip().splitlines() or [type(exc).__name__])[-1]
    where = re.findall(r'File "([^"]+)", line (\d+), in forward', text)  # outermost first: take the model's
    at = f" (at {Path(where[-1][0]).name}:{where[-1][1]})" if where else ""
    return f"paddle.jit.to_static could not convert {name}{at}: {reason.strip()[:300]}; {CONTROL_FLOW_HINT}"


def save_legacy(recipe: dict, specs: list[TensorSpec], batch: int | None, folder: Path, timeout: float = 600) -> None:
    """Write ``inference.pdmodel`` by running ``python -m export.legacy`` with the PIR API off.

    The legacy protobuf program can only be written while ``FLAGS_enable_pir_api`` is 0, and Paddle
    reads that flag once, at import: so a child process rebuilds the layer from ``recipe`` and saves it.
    """
    job = {"recipe": recipe, "inputs": [s.__dict__ | {"shape": list(s.shape)} for s in specs], "batch": batch}
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


def write_samples(folder: Path, plan: Plan) -> None:
    """The first ``SAMPLE_ROWS`` parity inputs as ``samples.npz`` (one array per input name): a server
    checks every backend it may choose against Paddle Inference on them."""
    # np.savez(file, **arrays) would break on an input named "file"; this is what it writes.
    with zipfile.ZipFile(folder / SAMPLES_FILE, "w") as archive:
        for spec, x in zip(plan.inputs, plan.samples.x):
            with archive.open(f"{spec.name}.npy", "w") as f:
                np.lib.format.write_array(f, np.ascontiguousarray(x[:SAMPLE_ROWS]), allow_pickle=False)


def write_manifest(folder: Path, plan: Plan, fmt: str, batch: int | None, figures: dict, seconds: float,
                   notes: list[str] = ()) -> dict:
    """Step 9: checksum every file of ``folder`` and write ``manifest.json``; returns the manifest.

    ``tolerance`` is the parity rule as numbers, which a server applies when it compares backends;
    ``notes`` say what the export left out and why (no ONNX file, ...)."""
    files = {p.name: sha256_file(p) for p in sorted(folder.iterdir()) if p.is_file() and p.name != MANIFEST_FILE}
    manifest = {
        "format": BUNDLE_FORMAT, "task": plan.task, "model_name": plan.name, "graph_format": fmt,
        "batch": "dynamic" if batch is None else batch, "paddle_version": paddle.__version__,
        "exported_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "export_seconds": round(seconds, 2), "files": files, "source_checkpoint": plan.source,
        "parity": figures, "tolerance": dataclasses.asdict(plan.tolerance), "notes": list(notes),
        "training_config": plan.config,
    }
    atomic_write_text(folder / MANIFEST_FILE, json.dumps(manifest, indent=2, default=str) + "\n")
    return manifest


# ---- re-checking an existing bundle ---------------------------------------------------------------


def check_bundle(bundle_dir: str | Path, checkpoint: str | Path, *, data_dir: str | None = None,
                 verify: bool = True) -> dict:
    """Re-run the parity check of an existing bundle against its checkpoint; returns the figures.

    With ``verify`` the sha256 checksums are checked first (an altered file fails there); with
    ``verify=False`` the numbers alone must catch it. Raises ExportError when anything differs.
    """
    try:
        bundle = read_bundle(bundle_dir, verify=verify)
    except BundleError as exc:
        raise ExportError(str(exc)) from exc
    plan = plan_from_checkpoint(checkpoint, data_dir)
    if (bundle.task, bundle.model_name) != (plan.task, plan.name):
        raise ExportError(f"{bundle_dir} holds {bundle.task}/{bundle.model_name}, the checkpoint {plan.task}/{plan.name}")
    figures = parity.run_parity(plan, bundle.path, bundle.fixed_batch)
    parity.require(figures, f"{bundle_dir}")
    return figures
