"""Step 5 and the last step: the bundle's ``inference.yml`` and ``manifest.json``.

``inference.yml`` follows PaddleClas/PaddleX (Global, Inputs/Outputs, PreProcess, PostProcess):
what a server needs to feed the graph and read its answer. ``manifest.json`` is the bundle's
provenance and integrity record, in the format ``common.bundle.read_bundle`` checks.
"""
from __future__ import annotations

import datetime
import json
from pathlib import Path

import paddle
import yaml

from common.atomic import atomic_write_text
from common.bundle import BUNDLE_FORMAT, CONFIG_FILE, MANIFEST_FILE, sha256_file
from common.digit_image import PREPROCESS_SPEC

from .source import Source
from .wrap import SIGNATURES

DIGIT_LABELS = [str(d) for d in range(10)]


def inference_config(source: Source, fmt: str, batch: int | None) -> dict:
    """The content of ``inference.yml`` for this checkpoint (plain types only, for yaml.safe_dump)."""
    in_name, in_shape, out_name, out_shape = SIGNATURES[source.task]
    lead = -1 if batch is None else batch  # -1: any batch size, as Paddle writes dynamic dimensions
    return {
        "Global": {"model_name": source.model_name, "task": source.task, "format": fmt,
                   "batch": "dynamic" if batch is None else batch, "paddle_version": paddle.__version__},
        "Inputs": [{"name": in_name, "shape": [lead] + in_shape, "dtype": "float32"}],
        "Outputs": [{"name": out_name, "shape": [lead] + out_shape, "dtype": "float32"}],
        "PreProcess": _preprocess(source),
        "PostProcess": _postprocess(source),
    }


def _preprocess(source: Source) -> dict:
    if source.task == "mnist":
        return PREPROCESS_SPEC
    stats = source.stats
    return {"feature_names": list(stats["feature_names"]), "mean": [float(v) for v in stats["feature_mean"]],
            "std": [float(v) for v in stats["feature_std"]],
            "formula": "features = (raw - mean) / std, in feature_names order (training-split statistics)"}


def _postprocess(source: Source) -> dict:
    if source.task == "mnist":
        return {"name": "Topk", "topk": 5, "label_list": DIGIT_LABELS}
    stats = source.stats
    return {"name": "Regression", "target": "MEDV", "unit": "$1000s",
            "target_mean": float(stats["target_mean"]), "target_std": float(stats["target_std"]),
            "note": "de-normalisation is inside the graph: its output is already the price in $1000s"}


def write_inference_config(folder: Path, config: dict) -> None:
    atomic_write_text(folder / CONFIG_FILE, yaml.safe_dump(config, sort_keys=False))


def write_manifest(folder: Path, *, source: Source, provenance: dict, fmt: str, batch: int | None,
                   parity: dict, seconds: float) -> dict:
    """Checksum every file of ``folder`` and write ``manifest.json``; returns the manifest."""
    files = {p.name: sha256_file(p) for p in sorted(folder.iterdir()) if p.is_file() and p.name != MANIFEST_FILE}
    manifest = {
        "format": BUNDLE_FORMAT,
        "task": source.task,
        "model_name": source.model_name,
        "graph_format": fmt,
        "batch": "dynamic" if batch is None else batch,
        "paddle_version": paddle.__version__,
        "exported_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "export_seconds": round(seconds, 2),
        "files": files,
        "source_checkpoint": provenance,
        "parity": parity,
        "training_config": source.config,
    }
    atomic_write_text(folder / MANIFEST_FILE, json.dumps(manifest, indent=2, default=str) + "\n")
    return manifest
