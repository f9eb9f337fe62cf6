"""Turn a model into a static inference bundle, proven to compute what the dygraph model computed.

From Python::

    from export import export_checkpoint, export_layer
    export_checkpoint("runs/mnist-cnn", "bundles/mnist")                 # a python -m train run
    export_layer(my_layer, [InputSpec([None, 8], "float32", "x")], "bundles/mine")   # any paddle.nn.Layer

From the shell: ``python -m export --checkpoint PATH --out DIR`` or ``python -m export --layer
pkg.module:Class --weights W.pdparams --input NAME:DTYPE:SHAPE[:LOW..HIGH] --out DIR`` (``python -m
export -h``). The steps, in PaddleClas's order, are in ``export/pipeline.py``; the bundle format is
``common/bundle.py``; the runtimes each bundle is proven on, ``common/runtimes.py``.
"""

from common.bundle import Tolerance

# Parity of a layer export: |difference| <= 1e-6 + 1e-4 x max|reference| per output. Measured, oneDNN
# against plain kernels (which agree bit for bit with dygraph): 1e-6 .. 3e-5 of the output's largest value
# on the zoo CNNs (ResNet-18/50, MobileNet V2/V3); a graph that computes something else is off by far more.
LAYER_TOLERANCE = Tolerance(atol=1e-6, rtol=1e-4)


class ExportError(Exception):
    """A checkpoint, layer, output path, option or parity result that stops the export; the message says why."""


class ExportWarning(UserWarning):
    """Something the export left out, though the bundle is sound (a runtime that could not load or disagreed,
    a branch no parity input took); also in the manifest's notes."""


__all__ = ["export_checkpoint", "export_layer", "check_bundle", "ExportError", "ExportWarning", "FORMATS"]


def __getattr__(name: str):
    """Import paddle only when an export is wanted (``python -m export -h`` stays instant)."""
    if name in ("export_checkpoint", "export_layer", "FORMATS"):
        from . import pipeline

        return getattr(pipeline, name)
    if name == "check_bundle":
        from .pipeline import check_bundle

        return check_bundle
    raise AttributeError(f"module 'export' has no attribute {name!r}")
