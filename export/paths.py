"""Which ways the parity inputs went through ``forward``, and how much control flow the static graph holds.

Paddle does not say, for a call of the saved graph, which branch of a ``pd_op.if`` ran. The dygraph
model does, in its own terms: a data-dependent ``if`` or ``while`` is plain Python there. So the
reference runs are traced (``sys.settrace``, only in the files that define the network's own
layers, not in Paddle's): the set of source-line transitions one call made is its path, and the
number of distinct paths is what the report shows. A loop that ran twice and one that ran three
times take the same transitions; one that ran zero times does not. On the graph side,
``control_flow`` counts the ``pd_op.if`` and ``pd_op.while`` operations of the converted program.
"""
from __future__ import annotations

import inspect
import sys
from collections import Counter
from pathlib import Path

import paddle

PADDLE_DIR = str(Path(paddle.__file__).resolve().parent)
CONTROL_FLOW_OPS = {"pd_op.if": "if", "pd_op.while": "while"}


def user_files(layer) -> set[str]:
    """Source files of the classes in ``layer`` 's tree that are not Paddle's own (the user's code)."""
    files = set()
    for sub in [layer, *layer.sublayers()]:
        try:
            file = str(Path(inspect.getsourcefile(type(sub))).resolve())
        except (TypeError, OSError):
            continue  # a class without a Python source file
        if not file.startswith(PADDLE_DIR):
            files.add(file)
    return files


class PathRecorder:
    """Records the path (a frozenset of (file, line, next line) transitions in ``files``) of each call it wraps."""

    def __init__(self, files: set[str]):
        self.files = files
        self.paths: set[frozenset] = set()  # stays empty when there is no code of the user's to trace
        self._arcs: set = set()
        self._mine: dict[str, bool] = {}  # code file name -> whether it is one of ``files`` (resolved once)

    def run(self, fn, *args):
        """``fn(*args)`` traced; its path joins ``paths``."""
        if not self.files:
            return fn(*args)
        self._arcs, previous = set(), sys.gettrace()
        sys.settrace(self._call)
        try:
            return fn(*args)
        finally:
            sys.settrace(previous)
            self.paths.add(frozenset(self._arcs))

    def _call(self, frame, event, arg):
        """Global trace function: trace lines only in the user's files (returns None elsewhere: no cost there)."""
        name = frame.f_code.co_filename
        if name not in self._mine:
            self._mine[name] = str(Path(name).resolve()) in self.files
        if event != "call" or not self._mine[name]:
            return None
        last = [frame.f_lineno]

        def line(frame, event, arg):
            if event == "line":
                self._arcs.add((frame.f_code.co_filename, last[0], frame.f_lineno))
                last[0] = frame.f_lineno
            return line
        return line


def control_flow(static_layer) -> dict[str, int]:
    """``{"if": n, "while": m}``: the conditional and loop operations of the converted program, nested ones too."""
    program = static_layer.forward.concrete_program.main_program
    counts: Counter = Counter()
    blocks = [program.global_block()]
    while blocks:
        for op in blocks.pop().ops:
            if op.name() in CONTROL_FLOW_OPS:
                counts[CONTROL_FLOW_OPS[op.name()]] += 1
            blocks.extend(op.blocks())
    return {kind: counts[kind] for kind in CONTROL_FLOW_OPS.values()}
