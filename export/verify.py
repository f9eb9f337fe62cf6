"""``python -m export.verify BUNDLE [--checkpoint PATH]``: re-run the parity check of an existing bundle.

Checks the manifest's sha256 of every file (unless ``--no-checksums``), rebuilds the dygraph model
(from ``--checkpoint`` for a checkpoint export; from the manifest's provenance, the ``--layer``,
``--weights`` and ``--input`` flags it was exported with, for a layer export), runs the same kinds of
parity inputs through it and through every runtime on the bundle's files, and prints the export
report with today's figures. Exit 0 when Paddle Inference agrees; one ``error:`` line and exit 2
otherwise. ``--json`` prints the figures as JSON instead.
"""
from __future__ import annotations

import argparse
import json
import sys

from . import ExportError


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m export.verify", description=__doc__.split("\n\n")[1])
    p.add_argument("bundle", help="bundle folder written by python -m export")
    p.add_argument("--checkpoint", help="the checkpoint it was exported from (checkpoint exports)")
    p.add_argument("--data-dir", help="folder with the test data (default: the checkpoint's data_dir)")
    p.add_argument("--no-checksums", action="store_true", help="skip the sha256 check: let the numbers speak")
    p.add_argument("--json", action="store_true", help="print the parity figures as JSON, not the report")
    args = p.parse_args(argv)
    from .pipeline import check_bundle

    try:
        figures = check_bundle(args.bundle, args.checkpoint, data_dir=args.data_dir, verify=not args.no_checksums)
    except ExportError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    print(json.dumps(figures, indent=2, default=str) if args.json else "\n".join(figures["report"]))
    return 0


if __name__ == "__main__":
    from .__main__ import import_paddle

    import_paddle()
    sys.exit(main())
