"""``python -m export.legacy JOB_JSON FOLDER``: write the legacy ``inference.pdmodel`` in a child process.

Started by ``export.pipeline.save_legacy`` with ``FLAGS_enable_pir_api=0`` in the environment, so
that paddle, imported here for the first time in this process, saves the old protobuf program.
JOB_JSON names how to rebuild the layer (``{"checkpoint": path}`` or ``{"layer": "pkg.mod:Class",
"weights": path, "kwargs": {...}}``) and its inputs as ``--input`` takes them. Prints ``error: ...``
and exits 2 when the layer cannot be rebuilt or converted.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from . import ExportError, breaks
from .pipeline import load_layer, parse_input, plan_from_checkpoint, save_static


def main(argv: list[str]) -> int:
    job, folder = json.loads(argv[0]), Path(argv[1])
    recipe = job["recipe"]
    try:
        if "checkpoint" in recipe:
            layer = plan_from_checkpoint(recipe["checkpoint"], with_samples=False).layer
        else:
            layer = load_layer(recipe["layer"], recipe.get("weights"), recipe.get("kwargs"))
        parsed = [parse_input(text) for text in job["inputs"]]
        save_static(layer, [feed.spec(batch) for feed, batch in parsed], folder, breaks.scan(layer))
    except ExportError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
