"""``python -m export.legacy CHECKPOINT FOLDER BATCH``: write the legacy ``inference.pdmodel``.

Started by ``export.convert.save_legacy`` with ``FLAGS_enable_pir_api=0`` in the environment, so
that paddle, imported here for the first time in this process, saves the old protobuf program.
Prints ``error: ...`` and exits 2 when the model cannot be converted.
"""
from __future__ import annotations

import sys
from pathlib import Path

from .convert import save_static
from .errors import ExportError
from .source import build_eval_model, load_source
from .wrap import wrap


def main(argv: list[str]) -> int:
    checkpoint, folder, batch = argv
    try:
        source = load_source(checkpoint)
        wrapped = wrap(build_eval_model(source), source.task, source.stats)
        save_static(wrapped, source.task, None if batch == "dynamic" else int(batch), Path(folder))
    except ExportError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
