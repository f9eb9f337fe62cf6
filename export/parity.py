"""Step 6: proof that the saved graph computes what the dygraph model computes.

The same real samples go through the dygraph wrapper and a real ``paddle.inference`` predictor
loaded from the files on disk, at batch 1 and at batch 64 (or the fixed batch), with oneDNN on
and off (its fused kernels are the likeliest source of a difference). Tolerances:

- digits: max |probability difference| <= 1e-5, and every top-1 class equal;
- housing: |price difference| <= 1e-5 * max(1, |price|), i.e. relative 1e-5 for prices above
  $1000. An absolute 1e-5 would be a few float32 ulps at $50k (ulp 3.8e-6), so a harmless change
  in the order of the additions could fail it; relative 1e-5 is still 1 cent per $1000.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import paddle

from common.bundle import BundleError, create_predictor, read_bundle, run_predictor

from .errors import ExportError
from .samples import Samples, load_samples
from .source import build_eval_model, load_source
from .wrap import wrap

TOLERANCE = 1e-5
BIG_BATCH = 64
TOLERANCE_TEXT = {"mnist": "max |probability difference| <= 1e-5 and every top-1 equal",
                  "housing": "|price difference| <= 1e-5 * max(1, |price in $1000s|) (relative 1e-5)"}


def batches(x: np.ndarray, size: int, fixed: bool):
    """Consecutive slices of ``size`` rows; a fixed-batch graph gets the last one zero-padded."""
    for start in range(0, len(x), size):
        part = x[start:start + size]
        if fixed and len(part) < size:
            part = np.concatenate([part, np.zeros((size - len(part),) + x.shape[1:], x.dtype)])
        yield part, min(size, len(x) - start)


def dygraph_outputs(wrapped, x: np.ndarray, size: int, fixed: bool) -> np.ndarray:
    """The wrapped dygraph model's outputs, computed ``size`` rows at a time."""
    with paddle.no_grad():
        return np.concatenate([wrapped(paddle.to_tensor(part)).numpy()[:n] for part, n in batches(x, size, fixed)])


def predictor_outputs(predictor, x: np.ndarray, size: int, fixed: bool) -> np.ndarray:
    """A predictor's outputs, computed ``size`` rows at a time."""
    return np.concatenate([run_predictor(predictor, np.ascontiguousarray(part))[:n]
                           for part, n in batches(x, size, fixed)])


def open_predictor(folder: Path, mkldnn: bool, threads: int = 1):
    """A CPU ``paddle.inference`` predictor on the graph files in ``folder`` (.json or .pdmodel)."""
    return create_predictor(folder, threads=threads, mkldnn=mkldnn)


def compare(task: str, reference: np.ndarray, output: np.ndarray) -> dict:
    """Differences between two output arrays, and whether they are within tolerance (NaN fails)."""
    diff = np.abs(output.astype(np.float64) - reference.astype(np.float64))
    figures = {"max_abs_diff": float(np.max(diff))}
    if task == "mnist":
        figures["top1_mismatches"] = int(np.sum(output.argmax(-1) != reference.argmax(-1)))
        ok = bool(np.all(diff <= TOLERANCE)) and figures["top1_mismatches"] == 0
    else:
        scale = np.maximum(1.0, np.abs(reference.astype(np.float64)))
        figures["max_rel_diff"] = float(np.max(diff / scale))
        ok = bool(np.all(diff <= TOLERANCE * scale))
    figures["passed"] = ok
    return figures


def batch_sizes(batch: int | None) -> list[int]:
    """Batch 1 and a larger batch for a dynamic graph; only its own size for a fixed one."""
    return [1, BIG_BATCH] if batch is None else [batch]


def run_parity(wrapped, folder: Path, task: str, samples: Samples, batch: int | None) -> dict:
    """Compare dygraph and predictor outputs for every (oneDNN, batch) setting; return the figures."""
    fixed = batch is not None
    reference = {size: dygraph_outputs(wrapped, samples.x, size, fixed) for size in batch_sizes(batch)}
    settings = []
    for mkldnn in (True, False):
        predictor = open_predictor(folder, mkldnn)
        for size, ref in reference.items():
            out = predictor_outputs(predictor, samples.x, size, fixed)
            settings.append({"batch": size, "onednn": mkldnn, **compare(task, ref, out)})
    result = {"samples": int(len(samples.x)), "origin": samples.origin, "tolerance": TOLERANCE_TEXT[task],
              "settings": settings, "passed": all(s["passed"] for s in settings)}
    if task == "mnist":  # not a parity figure, a sanity one: the samples are real and the model works
        first = next(iter(reference.values()))
        result["dygraph_accuracy"] = float(np.mean(first.argmax(-1) == samples.y))
    return result


def require(parity: dict, what: str = "the exported graph") -> None:
    """Raise ExportError naming the worst setting unless every setting passed."""
    failed = [s for s in parity["settings"] if not s["passed"]]
    if failed:
        worst = max(failed, key=lambda s: (np.nan_to_num(s["max_abs_diff"], nan=np.inf), s.get("top1_mismatches", 0)))
        extra = f", {worst['top1_mismatches']} top-1 differ" if "top1_mismatches" in worst else ""
        raise ExportError(f"parity failed: {what} differs from the dygraph model at batch {worst['batch']}, "
                          f"oneDNN {'on' if worst['onednn'] else 'off'}: max abs diff {worst['max_abs_diff']:.3g}"
                          f"{extra} over {parity['samples']} samples (tolerance: {parity['tolerance']})")


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
    source = load_source(checkpoint)
    if (bundle.task, bundle.model_name) != (source.task, source.model_name):
        raise ExportError(f"{bundle_dir} holds {bundle.task}/{bundle.model_name}, "
                          f"the checkpoint {source.task}/{source.model_name}")
    batch = bundle.info["Global"].get("batch", "dynamic")
    wrapped = wrap(build_eval_model(source), source.task, source.stats)
    parity = run_parity(wrapped, bundle.path, source.task, load_samples(source, data_dir),
                        None if batch == "dynamic" else int(batch))
    require(parity, f"{bundle_dir}")
    return parity
