"""``python -m export.verify BUNDLE --checkpoint PATH``: re-run the parity check of an existing bundle.

Checks the manifest's sha256 of every file (unless ``--no-checksums``), then runs the checkpoint's
dygraph model and a paddle.inference predictor on the bundle over the same real samples. Exit 0
and the figures when they agree; one ``error:`` line and exit 2 otherwise.
"""
from __future__ import annotations

import argparse
import json
import sys

from . import ExportError


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m export.verify", description=__doc__.split("\n\n")[1])
    p.add_argument("bundle", help="bundle folder written by python -m export")
    p.add_argument("--checkpoint", required=True, help="the checkpoint it was exported from")
    p.add_argument("--data-dir", help="folder with the test data (default: the checkpoint's data_dir)")
    p.add_argument("--no-checksums", action="store_true", help="skip the sha256 check: let the numbers speak")
    args = p.parse_args(argv)
    from .pipeline import check_bundle

    try:
        parity = check_bundle(args.bundle, args.checkpoint, data_dir=args.data_dir, verify=not args.no_checksums)
    except ExportError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    print(json.dumps(parity, indent=2))
    return 0


if __name__ == "__main__":
    from .__main__ import import_paddle

    import_paddle()
    sys.exit(main())
