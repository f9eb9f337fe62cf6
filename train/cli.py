"""``python -m train``: parse flags, run, print one clear line on a user error."""
from __future__ import annotations

import sys

from .config import config_from_args
from .errors import USER_ERRORS
from .launch import processes, relaunch
from .loop import run


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    config = config_from_args(argv)
    try:
        procs = processes(config)
        if procs > 1:
            return relaunch(procs, argv, config)
        result = run(config)
    except USER_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    best = result["best"] or result["final"] or {}
    summary = {k: round(v, 4) for k, v in best.items() if k.startswith(("val_", "test_"))}
    print(f"[train] done: best epoch {best.get('epoch')} {summary}; checkpoints in {result['output']}/checkpoints",
          flush=True)
    return 0
