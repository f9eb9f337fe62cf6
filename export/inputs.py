"""The inputs parity runs on: cases (a batch size and a size for each dynamic dimension), each a few calls.

Real rows (a task's test samples, the user's ``--samples``) are cut into calls of each batch size.
Generated inputs sweep the shapes: each batch size with every dynamic dimension at its middle size,
then each dynamic dimension at its other sizes. A generated case is one call per value family
(``FAMILIES``: centred, low, high), so that a branch on the data (``if x.mean() > 0``, a loop that
runs ``steps`` times) sees inputs on both sides of it. Everything is seeded: the same export
generates the same inputs.
"""
from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import ExportError
from .signature import Feed

BATCH_SIZES = (1, 3, 8)      # generated cases of a dynamic-batch graph
DIM_SIZES = (2, 5, 11)       # sizes of a dynamic non-batch dimension, unless --dim says otherwise
ROW_BATCH = 64               # real rows are also run in calls of this many (or of all of them, if fewer)
INT_RANGE = (0, 9)           # generated integers when the input states no LOW..HIGH
FLOAT_SHIFT = 2.0            # the low and high float families are normal with mean -2 and +2
SEED = 0
SAMPLE_ROWS = 8              # rows kept in samples.npz: enough for a server's check, a few KB


def _floats(rng, shape, feed: Feed, family: str) -> np.ndarray:
    if feed.low is None:  # no stated range: standard normal, shifted for the low and high families
        shift = {"centred": 0.0, "low": -FLOAT_SHIFT, "high": FLOAT_SHIFT}[family]
        return rng.standard_normal(shape) + shift
    span = feed.high - feed.low
    low, high = {"centred": (feed.low, feed.high), "low": (feed.low, feed.low + span / 4),
                 "high": (feed.high - span / 4, feed.high)}[family]
    return rng.uniform(low, high, shape)


def _integers(rng, shape, feed: Feed, family: str) -> np.ndarray:
    lo, hi = (int(feed.low), int(feed.high)) if feed.low is not None else INT_RANGE
    quarter = (hi - lo) // 4
    low, high = {"centred": (lo, hi), "low": (lo, lo + quarter), "high": (hi - quarter, hi)}[family]
    return rng.integers(low, high, shape, endpoint=True)


def _bools(rng, shape, feed: Feed, family: str) -> np.ndarray:
    return rng.random(shape) < {"centred": 0.5, "low": 0.1, "high": 0.9}[family]


FAMILIES = ("centred", "low", "high")


def generate(rng, feed: Feed, shape: tuple[int, ...], family: str) -> np.ndarray:
    """One array for ``feed`` of ``shape``, values of ``family``, in the feed's dtype."""
    kind = "bool" if feed.dtype == "bool" else "float" if feed.dtype.startswith("float") else "int"
    make = {"float": _floats, "int": _integers, "bool": _bools}[kind]
    return np.ascontiguousarray(make(rng, shape, feed, family).astype(feed.dtype))


@dataclass
class Call:
    """One call's inputs (one array per feed) and how many rows of its outputs count (padding does not)."""

    arrays: list[np.ndarray]
    keep: int


@dataclass
class Case:
    """Calls of one shape: a batch size and a size for each dynamic dimension."""

    label: str               # "batch 3", "batch 3, seq 11", "samples, batch 64"
    batch: int
    dims: dict[str, int]
    calls: list[Call] = field(default_factory=list)


@dataclass
class ParityInputs:
    """Every case parity runs, where the values come from, and the rows samples.npz keeps."""

    cases: list[Case]
    origin: str
    kept: list[np.ndarray]

    @property
    def calls(self) -> int:
        return sum(len(c.calls) for c in self.cases)

    def describe(self) -> dict:
        """The manifest's summary: origin, and each case's label, batch, dimension sizes and number of calls."""
        return {"origin": self.origin, "calls": self.calls,
                "cases": [{"label": c.label, "batch": c.batch, "dims": c.dims, "calls": len(c.calls)}
                          for c in self.cases]}


def dim_names(feeds: list[Feed]) -> list[str]:
    """The dynamic non-batch dimensions, in order of first appearance."""
    return list(dict.fromkeys(d for f in feeds for d in f.dims if isinstance(d, str)))


def shape_of(feed: Feed, batch: int, sizes: dict[str, int]) -> tuple[int, ...]:
    return (batch, *[sizes[d] if isinstance(d, str) else d for d in feed.dims])


def sweep(feeds: list[Feed], batch: int | None, dim_sizes: dict[str, tuple[int, ...]]) -> list[tuple[int, dict]]:
    """(batch, sizes) of every generated case: each batch size at the middle sizes, then each dimension's others."""
    names = dim_names(feeds)
    sizes = {n: tuple(sorted(set(dim_sizes.get(n, DIM_SIZES)))) for n in names}
    middle = {n: s[len(s) // 2] for n, s in sizes.items()}
    batches = BATCH_SIZES if batch is None else (batch,)
    mid_batch = batches[len(batches) // 2]
    shapes = [(b, dict(middle)) for b in batches]
    shapes += [(mid_batch, {**middle, n: size}) for n in names for size in sizes[n] if size != middle[n]]
    return shapes


def label(batch: int, sizes: dict[str, int]) -> str:
    """``batch 3, seq 11``: the batch size and the size of each dynamic dimension."""
    return ", ".join([f"batch {batch}", *[f"{name} {size}" for name, size in sizes.items()]])


def generated_cases(feeds: list[Feed], batch: int | None, dim_sizes: dict | None, seed: int = SEED) -> list[Case]:
    """The generated sweep (``sweep``), one call per value family in each case."""
    rng = np.random.default_rng(seed)
    cases = []
    for size, sizes in sweep(feeds, batch, dim_sizes or {}):
        calls = [Call([generate(rng, f, shape_of(f, size, sizes), family) for f in feeds], size) for family in FAMILIES]
        cases.append(Case(label(size, sizes), size, sizes, calls))
    return cases


def row_cases(x: list[np.ndarray], batch: int | None, tag: str) -> list[Case]:
    """Real rows cut into calls of batch 1 and of ``ROW_BATCH`` (or of a fixed batch, the last one zero-padded)."""
    rows = len(x[0])
    sizes = [batch] if batch is not None else sorted({1, min(ROW_BATCH, rows)})
    cases = []
    for size in sizes:
        calls = []
        for start in range(0, rows, size):
            parts = [np.ascontiguousarray(a[start:start + size]) for a in x]
            keep = len(parts[0])
            if batch is not None and keep < size:
                parts = [np.concatenate([p, np.zeros((size - keep,) + p.shape[1:], p.dtype)]) for p in parts]
            calls.append(Call(parts, keep))
        cases.append(Case(f"{tag}, batch {size}", size, {}, calls))
    return cases


def build(feeds: list[Feed], batch: int | None, *, rows: list[np.ndarray] | None = None, rows_origin: str = "",
          generated: bool = True, dim_sizes: dict | None = None) -> ParityInputs:
    """Cases from real ``rows`` (if any), then generated ones (if ``generated``); samples.npz keeps the first rows."""
    cases, origins, real = [], [], rows is not None and len(rows[0]) > 0
    if real:
        cases += row_cases(rows, batch, "samples")
        origins.append(rows_origin)
    if generated:
        made = generated_cases(feeds, batch, dim_sizes)
        cases += made
        values = ", ".join(f"{f.name} {f.low:g}..{f.high:g}" for f in feeds if f.low is not None)
        origins.append(f"generated: {len(made)} shapes x {len(FAMILIES)} value families ({', '.join(FAMILIES)}; "
                       f"floats normal, mean 0, -{FLOAT_SHIFT:g}, +{FLOAT_SHIFT:g}; integers "
                       f"{INT_RANGE[0]}..{INT_RANGE[1]}{'; ' + values if values else ''}; seed {SEED})")
    if not cases:
        raise ExportError("no parity inputs: give samples, or let the export generate them")
    first = rows if real else widest(cases).calls[0].arrays
    return ParityInputs(cases, "; ".join(origins), [np.ascontiguousarray(a[:SAMPLE_ROWS]) for a in first])


def widest(cases: list[Case]) -> Case:
    """The generated case with the largest batch at the middle sizes (the first of that batch size)."""
    return max(cases, key=lambda c: c.batch)


# ---- samples the user gives ---------------------------------------------------------------------------


def read_samples(source, feeds: list[Feed]) -> tuple[list[np.ndarray], str]:
    """``{input name: array}`` or an .npz file of them -> one array per feed (checked and cast), and where from."""
    origin = "samples given by the caller"
    if isinstance(source, (str, Path)):
        path, origin = source, f"samples from {source}"
        try:
            with np.load(path, allow_pickle=False) as data:
                source = {k: data[k] for k in data.files}
        except (OSError, ValueError, zipfile.BadZipFile) as exc:
            raise ExportError(f"--samples {path}: not a readable .npz of arrays ({exc})") from exc
    missing = [f.name for f in feeds if f.name not in source]
    if missing:
        raise ExportError(f"samples lack the inputs {missing} (they have {sorted(source)})")
    x, sizes = [], {}
    for feed in feeds:
        array = np.asarray(source[feed.name])
        if array.ndim != len(feed.dims) + 1 or len(array) == 0:
            raise ExportError(f"samples: {feed.name!r} has shape {list(array.shape)}, the input is "
                              f"[rows, {', '.join(map(str, feed.dims))}]")
        for dim, size in zip(feed.dims, array.shape[1:]):
            expected = dim if isinstance(dim, int) else sizes.setdefault(dim, size)  # a named one: as first seen
            if size != expected:
                raise ExportError(f"samples: {feed.name!r} has shape {list(array.shape)}, which does not fit "
                                  f"dimension {dim} of the input (or of the other inputs)")
        x.append(np.ascontiguousarray(array.astype(feed.dtype, copy=False)))
    if len({len(a) for a in x}) != 1:
        raise ExportError("sample inputs have different numbers of rows")
    return x, f"{origin}, {len(x[0])} rows"
