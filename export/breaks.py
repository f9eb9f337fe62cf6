"""Code in ``forward`` that leaves the static graph: found in the source, explained in one line with the fix.

``paddle.jit.to_static`` (AST mode, ``full_graph=True``) rewrites ``forward`` 's Python into graph
operations. Some of it it cannot rewrite, and some it rewrites into something else: a tensor's
values handed to NumPy (``.numpy()``) or to Python (``.item()``, ``.tolist()``,
``float()/int()/bool()`` of a tensor), Python-side randomness and state, prints. ``scan`` finds
these constructs in the source of the network's own ``forward`` methods (and the methods and
module functions they call), with file and line. The export uses them to turn a conversion error,
a parity failure or a non-deterministic ``forward`` into one line that names the line and the
Paddle API to use instead, and notes those the parity check proved harmless.
"""
from __future__ import annotations

import ast
import inspect
import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

import paddle

from .paths import user_files

# kind -> (what it does to the graph, what to write instead); the order is the priority when several share a line.
KINDS = {
    "random": ("Python-side randomness draws once, at export, and the graph keeps that draw",
               "draw with paddle.rand / paddle.randn inside forward, or move the randomness out of inference"),
    "state": ("an attribute set in forward is Python-side state, frozen into the graph at export",
              "keep state out of forward, or in a buffer (register_buffer) updated with paddle operations"),
    "numpy": (".numpy() hands the tensor's values to NumPy, which a saved graph cannot run",
              "compute with paddle operations on the tensor itself"),
    "tolist": (".tolist() turns the tensor into Python lists, which a saved graph cannot hold",
               "index the tensor itself (h[0], h[:, 1]) instead of its .tolist()"),
    "item": (".item() turns the tensor into a Python number",
             "keep the tensor (drop .item()): paddle operations take a 0-d tensor where they take a number"),
    "number": ("float()/int()/bool() of a tensor makes a Python number",
               "keep it a tensor (paddle.cast(x, 'int64'), or x itself)"),
    "print": ("print runs once, at conversion, and the saved graph does not print",
              "remove it, or print outside forward"),
}
# Where NumPy and Paddle differ in name or meaning; any other np.NAME with a paddle.NAME maps to it.
NUMPY_TO_PADDLE = {
    "concatenate": "paddle.concat", "expand_dims": "paddle.unsqueeze", "absolute": "paddle.abs",
    "power": "paddle.pow", "amax": "paddle.max", "amin": "paddle.min", "asarray": "the tensor itself",
    "array": "the tensor itself", "astype": "paddle.cast",
    "std": "paddle.std(x, unbiased=False) (NumPy's std divides by n, Paddle's by n - 1 unless told)",
    "var": "paddle.var(x, unbiased=False) (NumPy's var divides by n, Paddle's by n - 1 unless told)",
    "sum": "paddle.sum(x, axis=..., keepdim=...) (keepdim, not keepdims)",
    "mean": "paddle.mean(x, axis=..., keepdim=...) (keepdim, not keepdims)",
}
NUMPY_MODULES = ("np", "numpy")
RANDOM_MODULES = ("random",)  # also np.random / numpy.random
CONTROL_FLOW_HINT = ("rewrite data-dependent Python control flow (an if/while on tensor values) so that every "
                     "branch returns the same structure of tensors, or use paddle.where / "
                     "paddle.static.nn.cond / paddle.static.nn.while_loop")


@dataclass(frozen=True)
class Site:
    """One construct that leaves the graph: where, what, and what to write instead."""

    file: str    # as shown to the user (relative to the current folder when inside it)
    path: str    # resolved, to match Paddle's tracebacks
    line: int    # the statement's first and last line
    end: int
    kind: str
    code: str    # the construct's source, shortened
    advice: str

    def where(self) -> str:
        return f"{self.file}:{self.line}"

    def text(self) -> str:
        """``file:line `code`: what it does; what to write instead``."""
        return f"{self.where()} `{self.code}`: {KINDS[self.kind][0]}; {self.advice}"


def shown(path: str) -> str:
    """``path`` relative to the current folder when it is inside it, else as it is."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return path


# ---- finding them ---------------------------------------------------------------------------------


def scan(layer) -> list[Site]:
    """Every construct of ``KINDS`` in the forward methods of ``layer`` 's own classes (not Paddle's) and in the
    methods and same-module functions they call, by file and line."""
    files, sites, seen = user_files(layer), [], set()
    queue = [type(sub).forward for sub in [layer, *layer.sublayers()]
             if _source_file(type(sub).forward) in files]
    while queue:
        fn = queue.pop()
        if fn in seen:
            continue
        seen.add(fn)
        tree, first_line, path = _parse(fn)
        if tree is None:
            continue
        owner = _owner(fn)
        queue += [f for f in _callees(tree, fn, owner) if _source_file(f) in files]
        sites += _sites(tree, first_line, path, _parameters(tree))
    return sorted(set(sites), key=lambda s: (s.file, s.line, list(KINDS).index(s.kind)))


def _source_file(fn) -> str | None:
    try:
        return str(Path(inspect.getsourcefile(fn)).resolve())
    except (TypeError, OSError):
        return None


def _parse(fn):
    """(the function's AST, the line its source starts at, its resolved file), or (None, 0, None)."""
    try:
        lines, first = inspect.getsourcelines(fn)
        return ast.parse(textwrap.dedent("".join(lines))), first, _source_file(fn)
    except (OSError, TypeError, SyntaxError):
        return None, 0, None


def _owner(fn):
    """The class a method was defined in, or None for a plain function."""
    module = inspect.getmodule(fn)
    owner_name = fn.__qualname__.rpartition(".")[0]
    return getattr(module, owner_name, None) if owner_name and "<" not in owner_name else None


def _callees(tree, fn, owner) -> list:
    """Functions ``fn`` calls as ``self.name(...)`` (methods of its class) or ``name(...)`` (its module's)."""
    module, found = inspect.getmodule(fn), []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        target = None
        if isinstance(node.func, ast.Attribute) and isinstance(node.func.value, ast.Name) \
                and node.func.value.id == "self" and owner is not None:
            target = getattr(owner, node.func.attr, None)
        elif isinstance(node.func, ast.Name):
            target = getattr(module, node.func.id, None)
        if inspect.isfunction(target):
            found.append(target)
    return found


def _parameters(tree) -> set[str]:
    function = tree.body[0]
    return {a.arg for a in function.args.args if a.arg != "self"} if isinstance(function, ast.FunctionDef) else set()


def _dotted(node) -> str:
    """``np.random.rand`` for an attribute chain of names, "" otherwise."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    return ".".join([node.id, *reversed(parts)]) if isinstance(node, ast.Name) else ""


def _kinds(node, params: set[str]) -> list[tuple[str, str]]:
    """(kind, advice) for the constructs ``node`` itself is (usually none)."""
    if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        if any(isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id == "self" for t in targets):
            return [("state", KINDS["state"][1])]
        return []
    if not isinstance(node, ast.Call):
        return []
    name, func = _dotted(node.func), node.func
    if name.split(".")[0] in RANDOM_MODULES or any(name.startswith(f"{m}.random.") for m in NUMPY_MODULES):
        return [("random", KINDS["random"][1])]
    if isinstance(func, ast.Attribute) and func.attr in ("numpy", "tolist", "item") and not node.args:
        return [(func.attr, KINDS[func.attr][1] if func.attr != "numpy" else "")]
    if isinstance(func, ast.Name) and func.id in ("float", "int", "bool") and len(node.args) == 1:
        arg = node.args[0]
        if any(isinstance(n, ast.Call) for n in ast.walk(arg)) or (isinstance(arg, ast.Name) and arg.id in params):
            return [("number", KINDS["number"][1])]
    if isinstance(func, ast.Name) and func.id == "print" and node.args:
        return [("print", KINDS["print"][1])]
    return []


def _numpy_advice(statement) -> str:
    """What to use instead of the NumPy calls made on ``.numpy()`` values in ``statement``."""
    names = []
    for node in ast.walk(statement):
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        if name.split(".")[0] in NUMPY_MODULES and name.count(".") == 1:
            names.append(name.split(".")[1])
        elif isinstance(node.func, ast.Attribute) and any(
                isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "numpy"
                for n in ast.walk(node.func.value)):
            names.append(node.func.attr)  # a method of the ndarray: h.numpy().sum(axis=1)
    for name in names:
        if name in NUMPY_TO_PADDLE:
            return f"use {NUMPY_TO_PADDLE[name]} on the tensor instead"
        if hasattr(paddle, name):
            return f"use paddle.{name} on the tensor instead of NumPy's {name}"
    return KINDS["numpy"][1]


def _sites(tree, first_line: int, path: str, params: set[str]) -> list[Site]:
    """Every construct in one function's AST, attributed to the statement that holds it."""
    sites = []
    for statement in ast.walk(tree):
        if not isinstance(statement, ast.stmt) or isinstance(statement, (ast.FunctionDef, ast.If, ast.For,
                                                                         ast.While, ast.With, ast.Try)):
            continue
        for node in ast.walk(statement):
            for kind, advice in _kinds(node, params):
                code = ast.unparse(statement)
                sites.append(Site(shown(path), path, statement.lineno + first_line - 1,
                                  (statement.end_lineno or statement.lineno) + first_line - 1, kind,
                                  _short(code), advice or _numpy_advice(statement)))
    return sites


def _short(code: str, limit: int = 80) -> str:
    code = " ".join(code.split())
    return code if len(code) <= limit else code[:limit - 3] + "..."


# ---- explaining failures ------------------------------------------------------------------------------------


def paddle_reason(text: str) -> str:
    """The last ``SomethingError: message`` in Paddle's error text, on one line."""
    reasons = re.findall(r"(?:^|\n)\s*(?:[\w.]+\.)?(\w+(?:Exception|Error)): (.+)", text)
    reason = f"{reasons[-1][0]}: {reasons[-1][1]}" if reasons else (text.strip().splitlines() or ["?"])[-1]
    return " ".join(reason.split()).removesuffix(" Suggestions:")[:300]


def failing_line(text: str, sites: list[Site], files: set[str]) -> tuple[str, int] | None:
    """(resolved file, line) of the innermost frame of the user's code in Paddle's error text."""
    frames = [(str(Path(f).resolve()), int(n)) for f, n in re.findall(r'File "([^"]+)", line (\d+)', text)]
    mine = [fr for fr in frames if fr[0] in files or any(fr[0] == s.path for s in sites)]
    return mine[-1] if mine else None


def at_line(sites: list[Site], where: tuple[str, int] | None, kinds=tuple(KINDS)) -> Site | None:
    """The most telling site of ``kinds`` in the statement at ``where``."""
    if where is None:
        return None
    hits = [s for s in sites if s.path == where[0] and s.line <= where[1] <= s.end and s.kind in kinds]
    return min(hits, key=lambda s: list(KINDS).index(s.kind)) if hits else None


def conversion_error(name: str, exc: BaseException, sites: list[Site], files: set[str]) -> str:
    """One line for a to_static failure: the user's file:line, the construct and its fix, then Paddle's reason."""
    text = str(exc)
    reason, where = paddle_reason(text), failing_line(text, sites, files)
    site = at_line(sites, where)
    if site is not None:
        return (f"{site.where()}: {name} leaves the static graph at `{site.code}`: {KINDS[site.kind][0]}; "
                f"{site.advice} (paddle.jit.to_static, AST mode, said: {reason})")
    at = f" (at {shown(where[0])}:{where[1]})" if where else ""
    return f"paddle.jit.to_static could not convert {name}{at}: {reason}; {CONTROL_FLOW_HINT}"


def suspects(sites: list[Site], kinds: tuple[str, ...]) -> str:
    """``; the likely cause: file:line `code`: ...`` for the sites of ``kinds``, "" when there is none."""
    chosen, lines = [], set()
    for site in sorted((s for s in sites if s.kind in kinds), key=lambda s: list(KINDS).index(s.kind)):
        if (site.path, site.line) not in lines:  # one construct per statement: the most telling
            lines.add((site.path, site.line))
            chosen.append(site)
    return "".join(f"; the likely cause: {s.text()}" for s in sorted(chosen[:2], key=lambda s: (s.file, s.line)))
