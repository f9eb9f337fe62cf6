"""``python -m train``: parse flags, run, print one clear line on a user error."""
from __future__ import annotations

import sys
from pathlib import Path

from .config import config_from_args
from .errors import USER_ERRORS
from .launch import processes, relaunch
from .loop import prepare, train
from .report import log


def main(argv: list[str] | None = None) -> int:
    """Train as the command line says; the exit status (2: a problem the user can fix)."""
    argv = sys.argv[1:] if argv is None else argv
    config = config_from_args(argv)
    notes: list[str] = []
    try:
        cfg, saved = prepare(config, say=notes.append)
        procs = processes(cfg)
        if procs > 1:  # the workers find the same checkpoint, and say so themselves
            return relaunch(procs, argv, Path(cfg.output) / "logs")
        for note in notes:
            log(note)
        result = train(cfg, saved)
    except USER_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    best = result["best"] or result["final"] or {}
    summary = {k: round(v, 4) for k, v in best.items() if k.startswith(("val_", "test_"))}
    print(f"[train] done: best epoch {best.get('epoch')} {summary}; checkpoints in {result['output']}/checkpoints",
          flush=True)
    return 0
