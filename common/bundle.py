"""An exported inference bundle: the folder ``python -m export`` writes and the server loads.

Layout (everything a server needs, nothing from ``train/`` or ``models/``)::

    inference.json | inference.pdmodel   static graph (PIR JSON from Paddle 3, or legacy protobuf)
    inference.pdiparams                  weights
    inference.onnx                       the same graph in ONNX, when paddle2onnx could convert it (default)
    inference.yml                        model name, task, inputs, outputs, preprocessing, postprocessing
    samples.npz                          the first rows of the parity inputs, one array per input name
    manifest.json                        sha256 of every file, provenance, metrics, parity figures and tolerance

``inference.yml`` (PaddleClas/PaddleX style) is what drives the server::

    Global:      {model_name, task, format, batch, paddle_version}
    Inputs:      [{name, shape, dtype}, ...]   graph inputs in feed order; shape[0] -1 = any batch
    Outputs:     [{name, shape, dtype}, ...]   graph outputs in fetch order
    PreProcess:  optional; what turns a user's input into Inputs (the server refuses what it cannot run)
    PostProcess: optional; what the outputs mean (labels, units)

This module is the one reader of that format, imported by export (to check what it wrote) and by
serve (to load it). What runs a bundle (Paddle Inference, onnxruntime, OpenVINO) is ``common/runtimes.py``.
"""
from __future__ import annotations

import hashlib
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

PREFIX = "inference"
CONFIG_FILE = "inference.yml"
MANIFEST_FILE = "manifest.json"
SAMPLES_FILE = "samples.npz"  # a server checks its backends against Paddle Inference on these inputs
BUNDLE_FORMAT = "paddle-toolkit-bundle/1"
GRAPH_FILES = ("inference.json", "inference.pdmodel")  # Paddle Inference tries them in this order
# What the export concluded about each runtime (manifest.json parity.runtimes; export/parity.py says how).
PASSED, FAILED, UNAVAILABLE, SKIPPED = "passed", "failed", "unavailable", "skipped"
RULED_OUT = (FAILED, UNAVAILABLE)  # a server never uses a runtime that disagreed or could not load the graph
# Tensor dtypes a bundle may declare, and their Open Inference Protocol (KServe V2) names.
DTYPES = {"float32": "FP32", "float64": "FP64", "float16": "FP16", "int64": "INT64", "int32": "INT32",
          "int16": "INT16", "int8": "INT8", "uint8": "UINT8", "bool": "BOOL"}


@dataclass(frozen=True)
class Tolerance:
    """Parity rule for one output tensor: every |output - reference| <= atol + rtol * max|reference|.

    The relative part scales with the largest value of that output, not with each element: the
    rounding differences between two correct kernels (oneDNN's fused ones and plain ones, say) come
    from sums of many terms and are relative to the size of those terms, so an element near zero in
    a tensor of magnitude 30 differs by as much as its neighbours. ``atol`` is the floor for outputs
    that are all (near) zero. Integer and bool outputs must be equal; with ``top1`` every row's
    top-1 class must be too.
    """

    atol: float = 1e-5
    rtol: float = 0.0
    top1: bool = False

    def text(self) -> str:
        rule = f"|difference| <= {self.atol:g}" if not self.rtol else \
            f"|difference| <= {self.atol:g} + {self.rtol:g} x max|reference| of each output"
        return rule + (" and every top-1 equal" if self.top1 else "")

    def compare(self, reference: np.ndarray, output: np.ndarray) -> dict:
        """Figures for one output array against its reference: max abs and max relative (to max|reference|)
        difference, the limit, whether it passed; NaN anywhere fails."""
        ref, out = np.asarray(reference), np.asarray(output)
        if ref.shape != out.shape:
            return {"max_abs_diff": float("inf"), "max_rel_diff": float("inf"), "passed": False,
                    "shape": [list(ref.shape), list(out.shape)]}
        ref64, out64 = ref.astype(np.float64), out.astype(np.float64)
        diff = np.abs(out64 - ref64)
        worst = float(np.max(diff)) if diff.size else 0.0
        scale = float(np.max(np.abs(ref64))) if ref.size else 0.0
        relative = worst / scale if scale > 0 else (0.0 if worst == 0 else float("inf"))
        figures = {"max_abs_diff": worst, "max_rel_diff": relative}
        if ref.dtype.kind in "biu":  # ids, counts, masks: a difference of one is a different answer
            figures["mismatches"] = int(np.sum(ref != out))
            ok = figures["mismatches"] == 0
        else:
            figures["limit"] = self.atol + self.rtol * scale
            ok = bool(worst <= figures["limit"])  # False for NaN
        if self.top1 and ref.ndim >= 1 and ref.size:
            figures["top1_mismatches"] = int(np.sum(out.argmax(-1) != ref.argmax(-1)))
            ok = ok and figures["top1_mismatches"] == 0
        figures["passed"] = ok
        return figures


class BundleError(Exception):
    """A bundle that is incomplete, altered or unreadable; the message says which file and why."""


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def graph_file(folder: str | Path) -> Path:
    """The model graph in ``folder``: inference.json, else inference.pdmodel (BundleError if neither)."""
    folder = Path(folder)
    for name in GRAPH_FILES:
        if (folder / name).is_file():
            return folder / name
    raise BundleError(f"{folder} has no model graph ({' or '.join(GRAPH_FILES)})")


@dataclass
class Bundle:
    """A verified bundle: its folder, ``inference.yml`` (``info``) and ``manifest.json``."""

    path: Path
    info: dict
    manifest: dict

    @property
    def task(self) -> str:
        return self.info["Global"]["task"]

    @property
    def model_name(self) -> str:
        return self.info["Global"]["model_name"]

    @property
    def inputs(self) -> list[dict]:
        """The graph's inputs in feed order: ``{name, shape, dtype}`` each."""
        return self.info["Inputs"]

    @property
    def outputs(self) -> list[dict]:
        """The graph's outputs in fetch order: ``{name, shape, dtype}`` each."""
        return self.info["Outputs"]

    def zeros(self, rows: int = 1) -> list:
        """Zeros shaped like each input, batch ``rows`` and 1 for any other dimension declared -1
        (warm-up batches; parity inputs of last resort)."""
        return [np.zeros([rows] + [1 if d == -1 else d for d in t["shape"][1:]], dtype=t["dtype"])
                for t in self.inputs]

    @property
    def fixed_batch(self) -> int | None:
        """N for a graph exported with a fixed batch size N, None when any batch size goes (-1)."""
        lead = self.inputs[0]["shape"][0]
        return lead if lead > 0 else None

    @property
    def graph_file(self) -> Path:
        return graph_file(self.path)

    @property
    def onnx_file(self) -> Path | None:
        path = self.path / f"{PREFIX}.onnx"
        return path if path.is_file() else None

    @property
    def tolerance(self) -> Tolerance | None:
        """The export's parity rule (manifest ``tolerance``); None when not recorded (older bundles) or unreadable."""
        recorded = self.manifest.get("tolerance")
        try:
            return Tolerance(atol=float(recorded["atol"]), rtol=float(recorded.get("rtol", 0.0)),
                             top1=bool(recorded.get("top1", False)))
        except (TypeError, KeyError, ValueError, AttributeError):
            return None

    def runtime_result(self, runtime: str) -> dict | None:
        """What the export recorded for ``runtime`` (``{status, reason, ...}``), None when it recorded nothing."""
        recorded = (self.manifest.get("parity") or {}).get("runtimes")
        result = recorded.get(runtime) if isinstance(recorded, dict) else None
        return result if isinstance(result, dict) and isinstance(result.get("status"), str) else None

    def ruled_out(self, runtime: str) -> str | None:
        """Why the export ruled ``runtime`` out for this bundle (it disagreed, or could not load the graph), or None."""
        result = self.runtime_result(runtime)
        if result is None or result["status"] not in RULED_OUT:
            return None
        return f"{result['status']} at export: {result.get('reason') or 'no reason recorded'}"

    def samples(self) -> list | None:
        """The inputs in ``samples.npz``, one array per declared input in feed order; None if the bundle has none.

        ``BundleError`` if the file lacks an input or disagrees with its declared dtype or shape.
        """
        file = self.path / SAMPLES_FILE
        if not file.is_file():
            return None
        try:
            with np.load(file, allow_pickle=False) as data:
                arrays = [data[t["name"]] if t["name"] in data.files else None for t in self.inputs]
        except (OSError, ValueError, zipfile.BadZipFile) as exc:  # not an .npz, or an object array
            raise BundleError(f"{file} is unreadable: {exc}") from exc
        for t, a in zip(self.inputs, arrays):
            if a is None or a.dtype != np.dtype(t["dtype"]) or a.ndim != len(t["shape"]) or len(a) == 0 or \
                    len(a) != len(arrays[0]) or any(d not in (-1, n) for d, n in zip(t["shape"][1:], a.shape[1:])):
                raise BundleError(f"{file}: input {t['name']!r} is missing, empty or not shaped "
                                  f"{t['dtype']}{t['shape']} like the other inputs")
        return arrays


def read_bundle(path: str | Path, verify: bool = True) -> Bundle:
    """Load a bundle's YAML and manifest; with ``verify``, check every file's sha256.

    Raises ``BundleError`` naming the problem (missing file, checksum mismatch, bad YAML or JSON, or
    files that parse but lack the expected structure: a manifest that is not an object, ...).
    """
    path = Path(path)
    for name in (CONFIG_FILE, MANIFEST_FILE, f"{PREFIX}.pdiparams"):
        if not (path / name).is_file():
            raise BundleError(f"{path} is not a complete bundle: {name} is missing")
    graph_file(path)  # raises if there is none
    try:
        manifest = json.loads((path / MANIFEST_FILE).read_text())
        info = yaml.safe_load((path / CONFIG_FILE).read_text())
    except (ValueError, yaml.YAMLError, RecursionError) as exc:
        raise BundleError(f"{path}: unreadable {MANIFEST_FILE} or {CONFIG_FILE}: {exc}") from exc
    if not isinstance(manifest, dict):
        raise BundleError(f"{path}: {MANIFEST_FILE} must hold a JSON object, got {type(manifest).__name__}")
    if manifest.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"{path}: unknown bundle format {manifest.get('format')!r}")
    _check_types(path, manifest, info)
    if verify:
        for name, digest in manifest["files"].items():
            file = path / name
            if not file.is_file():
                raise BundleError(f"{path}: {name} is listed in the manifest but missing")
            if sha256_file(file) != digest:
                raise BundleError(f"{path}: {name} does not match its sha256 in the manifest (altered or damaged)")
    return Bundle(path, info, manifest)


def _check_types(path: Path, manifest, info) -> None:
    """Refuse, as a ``BundleError``, files that parse but do not have the structure readers index into."""
    def kind(value) -> str:
        return type(value).__name__

    files = manifest.get("files")
    if not isinstance(files, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
        raise BundleError(f"{path}: {MANIFEST_FILE} 'files' must map file names to sha256 strings, got {kind(files)}")
    if not isinstance(info, dict):
        raise BundleError(f"{path}: {CONFIG_FILE} must hold a mapping, got {kind(info)}")
    glob = info.get("Global")
    if not isinstance(glob, dict) or not isinstance(glob.get("task"), str):
        raise BundleError(f"{path}: {CONFIG_FILE} needs a Global mapping with a task name")
    for section in ("Inputs", "Outputs"):
        tensors = info.get(section)
        if not isinstance(tensors, list) or not tensors or not all(_is_tensor(t) for t in tensors):
            raise BundleError(f"{path}: {CONFIG_FILE} {section} must list tensors as {{name, shape: [integers], "
                              f"dtype: one of {', '.join(DTYPES)}}}")
        if len({t["name"] for t in tensors}) != len(tensors):
            raise BundleError(f"{path}: {CONFIG_FILE} {section} names a tensor twice")
    if len({t["shape"][0] for t in info["Inputs"]}) != 1:
        raise BundleError(f"{path}: {CONFIG_FILE} Inputs disagree on the batch dimension")


def _is_tensor(t) -> bool:
    shape = t.get("shape") if isinstance(t, dict) else None
    return (isinstance(t, dict) and isinstance(t.get("name"), str) and t.get("dtype") in DTYPES
            and isinstance(shape, list) and len(shape) >= 1
            and all(isinstance(d, int) and not isinstance(d, bool) and (d > 0 or d == -1) for d in shape))

