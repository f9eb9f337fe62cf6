"""Optional step: ``inference.onnx`` with paddle2onnx, checked against the Paddle predictor.

paddle2onnx 2.x reads both the PIR ``inference.json`` and the legacy ``inference.pdmodel``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from common.bundle import PREFIX, graph_file

from .errors import ExportError
from .parity import TOLERANCE_TEXT, batch_sizes, batches, compare, open_predictor, predictor_outputs
from .samples import Samples

MISSING = "--onnx needs paddle2onnx and onnxruntime (pip install paddle2onnx onnxruntime); {reason}"


def missing_reason() -> str | None:
    """Why ONNX export cannot run here, or None when it can."""
    try:
        import onnxruntime  # noqa: F401
        import paddle2onnx  # noqa: F401
    except ImportError as exc:
        return MISSING.format(reason=str(exc))
    return None


def convert(folder: Path) -> Path:
    """Write ``inference.onnx`` next to the Paddle graph in ``folder``."""
    import paddle2onnx

    graph = graph_file(folder)
    target = folder / f"{PREFIX}.onnx"
    try:
        paddle2onnx.export(str(graph), str(folder / f"{PREFIX}.pdiparams"), save_file=str(target))
    except Exception as exc:  # paddle2onnx raises bare Exceptions for unsupported operators
        raise ExportError(f"paddle2onnx could not convert {graph.name}: {str(exc).strip()[:300]}; "
                          "export without --onnx") from exc
    if not target.is_file():
        raise ExportError(f"paddle2onnx wrote no {target.name} from {graph.name}; export without --onnx")
    return target


def session(path: Path, threads: int = 1):
    """An onnxruntime CPU session with ``threads`` intra-op threads."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx_outputs(sess, x: np.ndarray, size: int, fixed: bool) -> np.ndarray:
    """onnxruntime outputs, ``size`` rows at a time (padded for a fixed batch, like the predictor)."""
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: np.ascontiguousarray(part)})[0][:n]
                           for part, n in batches(x, size, fixed)])


def onnx_parity(folder: Path, task: str, samples: Samples, batch: int | None) -> dict:
    """Compare onnxruntime with the Paddle predictor (oneDNN off) on the parity samples."""
    fixed = batch is not None
    sess, predictor = session(folder / f"{PREFIX}.onnx"), open_predictor(folder, mkldnn=False)
    settings = []
    for size in batch_sizes(batch):
        ref = predictor_outputs(predictor, samples.x, size, fixed)
        out = onnx_outputs(sess, samples.x, size, fixed)
        settings.append({"batch": size, "onednn": False, **compare(task, ref, out)})
    return {"samples": int(len(samples.x)), "against": "paddle.inference predictor, oneDNN off",
            "tolerance": TOLERANCE_TEXT[task], "settings": settings,
            "passed": all(s["passed"] for s in settings)}
