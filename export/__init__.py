"""Turn a training checkpoint into a static inference bundle, proven equal to the dygraph model.

From Python::

    from export import export_checkpoint
    bundle_dir = export_checkpoint("runs/mnist-cnn/checkpoints/best.pdckpt", "bundles/mnist-cnn")

From the shell: ``python -m export --checkpoint PATH --out DIR`` (see ``python -m export -h``).
The bundle format is described (and read) by ``common.bundle``.
"""
from .errors import ExportError

__all__ = ["export_checkpoint", "check_bundle", "ExportError", "FORMATS"]


def __getattr__(name: str):
    """Import paddle only when the export itself is wanted (``python -m export -h`` stays instant)."""
    if name in ("export_checkpoint", "FORMATS"):
        from . import pipeline

        return getattr(pipeline, name)
    if name == "check_bundle":
        from .parity import check_bundle

        return check_bundle
    raise AttributeError(f"module 'export' has no attribute {name!r}")
