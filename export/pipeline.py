"""``export_checkpoint``: the export steps in PaddleClas's order, in a temporary folder.

load checkpoint -> build model, eval() -> wrap -> to_static + jit.save -> inference.yml ->
(inference.onnx) -> parity -> manifest.json -> verified read -> rename into place.
"""
from __future__ import annotations

import time
from pathlib import Path

from common.bundle import BundleError, read_bundle

from . import place, to_onnx
from .convert import save_legacy, save_static
from .describe import inference_config, write_inference_config, write_manifest
from .errors import ExportError
from .parity import require, run_parity
from .samples import Samples, load_samples
from .source import Source, build_eval_model, describe, load_source
from .wrap import wrap

FORMATS = ("json", "pdmodel")


def export_checkpoint(checkpoint: str | Path, out: str | Path, *, fmt: str = "json", batch: int | None = None,
                      onnx: bool = False, force: bool = False, data_dir: str | None = None) -> Path:
    """Export a ``python -m train`` checkpoint to the bundle folder ``out``; returns ``out``.

    ``fmt``: "json" (PIR program) or "pdmodel" (legacy program); ``batch``: None for any batch
    size, or a fixed one; ``onnx``: also write inference.onnx; ``force``: replace an existing
    bundle; ``data_dir``: where the parity samples are (default: the checkpoint's data_dir, then
    Paddle's cache). Raises ``ExportError`` for anything the user can fix, leaving no files behind.
    """
    started = time.perf_counter()
    checkpoint, out = Path(checkpoint), Path(out)
    check_options(fmt, batch, onnx)
    place.check_destination(out, force)
    source = load_source(checkpoint)
    wrapped = wrap(build_eval_model(source), source.task, source.stats)
    samples = load_samples(source, data_dir)  # before anything is written: missing data fails early
    created = place.missing_parents(out)
    tmp = place.make_temp(out)
    try:
        build_bundle(tmp, source, wrapped, samples, fmt=fmt, batch=batch, onnx=onnx, started=started)
        place.install(tmp, out)
    except BaseException:  # including Ctrl-C: no half bundle, no temporary folder
        place.discard(tmp, created)
        raise
    return out


def check_options(fmt: str, batch: int | None, onnx: bool) -> None:
    """Refuse option values and combinations that cannot work, before any work is done."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
    if batch is not None and (isinstance(batch, bool) or not isinstance(batch, int) or batch < 1):
        raise ExportError(f"batch must be None (dynamic) or a positive integer, got {batch!r}")
    if onnx and (reason := to_onnx.missing_reason()):
        raise ExportError(reason)


def build_bundle(folder: Path, source: Source, wrapped, samples: Samples, *, fmt: str, batch: int | None,
                 onnx: bool, started: float) -> None:
    """Write every file of the bundle into ``folder`` and prove it; raises ExportError on failure."""
    if fmt == "json":
        save_static(wrapped, source.task, batch, folder)
    else:
        save_legacy(source.path, batch, folder)
    write_inference_config(folder, inference_config(source, fmt, batch))
    if onnx:
        to_onnx.convert(folder)
    parity = run_parity(wrapped, folder, source.task, samples, batch)
    require(parity)
    if onnx:
        parity["onnx"] = to_onnx.onnx_parity(folder, source.task, samples, batch)
        require(parity["onnx"], "inference.onnx (onnxruntime)")
    write_manifest(folder, source=source, provenance=describe(source), fmt=fmt, batch=batch, parity=parity,
                   seconds=time.perf_counter() - started)
    try:
        read_bundle(folder, verify=True)  # the server's reader accepts it, checksums included
    except BundleError as exc:
        raise ExportError(f"the bundle just written does not read back: {exc}") from exc
