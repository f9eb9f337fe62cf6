"""A layer's graph signature as the user declares it: named inputs with dynamic dimensions and value ranges,
and names for what ``forward`` returns.

An input is ``NAME:DTYPE:SHAPE[:LOW..HIGH]`` (``--input``, or a string in ``export_layer`` 's
input list), e.g. ``ids:int64:-1,seq:0..49``:

- SHAPE is comma-separated, the batch first (``-1``: any size, or a fixed N); then each dimension
  is a size N, ``-1`` (any size, its own) or a name (any size, equal to every other dimension of
  that name: ``ids:int64:-1,seq`` and ``mask:float32:-1,seq`` always have the same length);
- LOW..HIGH bounds the values generated for parity: integers from LOW to HIGH inclusive (an
  embedding of 50 rows takes ``0..49``), floats uniform in [LOW, HIGH).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from paddle.static import InputSpec

from common.bundle import DTYPES
from common.tasks import TensorSpec

from . import ExportError

NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
RANGE = re.compile(rf"({NUMBER})\.\.({NUMBER})")
EXAMPLE = "ids:int64:-1,seq:0..49 or image:float32:-1,3,32,32"


@dataclass(frozen=True)
class Feed:
    """One graph input: name, dtype, dimensions after the batch (a size, or a dynamic dimension's name)
    and the value range for generated parity inputs (None: the defaults of export/inputs.py)."""

    name: str
    dtype: str
    dims: tuple[int | str, ...]
    low: float | None = None
    high: float | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape after the batch with -1 for every dynamic dimension (what inference.yml declares)."""
        return tuple(-1 if isinstance(d, str) else d for d in self.dims)

    @property
    def tensor(self) -> TensorSpec:
        return TensorSpec(self.name, self.shape, self.dtype)

    def declared(self, batch: int | None) -> dict:
        """The inference.yml entry: the full shape with -1 (any size) or a fixed batch first."""
        return self.tensor.declared(batch)

    def spec(self, batch: int | None) -> InputSpec:
        """The named ``InputSpec`` to_static gets: None for the batch (unless fixed) and every dynamic dimension."""
        return InputSpec([batch, *[None if isinstance(d, str) else d for d in self.dims]], self.dtype, self.name)

    def text(self, batch: int | None = None) -> str:
        """``NAME:DTYPE:SHAPE[:LOW..HIGH]``, as ``--input`` takes it (the manifest keeps it; verify reads it back)."""
        dims = ["-1" if self.anonymous(d) else str(d) for d in self.dims]
        shape = ",".join(["-1" if batch is None else str(batch), *dims])
        values = "" if self.low is None else f":{self.low:g}..{self.high:g}"
        return f"{self.name}:{self.dtype}:{shape}{values}"

    def anonymous(self, dim) -> bool:
        """Whether ``dim`` is a dynamic dimension declared -1 (named after its input and axis, e.g. "x.2")."""
        return isinstance(dim, str) and dim.startswith(f"{self.name}.")


def parse_input(text: str) -> tuple[Feed, int | None]:
    """``NAME:DTYPE:SHAPE[:LOW..HIGH]`` -> (the Feed, its batch: None for any size); ExportError naming the fault."""
    parts = text.split(":")
    if len(parts) not in (3, 4) or not NAME.fullmatch(parts[0]):
        raise ExportError(f"--input {text!r}: expected NAME:DTYPE:SHAPE[:LOW..HIGH], e.g. {EXAMPLE}")
    name, dtype, shape = parts[:3]
    if dtype not in DTYPES:
        raise ExportError(f"--input {text!r}: dtype must be one of {', '.join(DTYPES)}")
    dims = [d.strip() for d in shape.replace("x", ",").split(",")]
    if not dims[0].lstrip("-").isdigit() or not all(d.lstrip("-").isdigit() or NAME.fullmatch(d) for d in dims):
        raise ExportError(f"--input {text!r}: SHAPE is sizes, -1 or dimension names separated by commas, "
                          "the batch (-1 or a size) first")
    sizes = [int(d) if d.lstrip("-").isdigit() else d for d in dims]
    if any(isinstance(d, int) and (d == 0 or d < -1) for d in sizes):
        raise ExportError(f"--input {text!r}: sizes must be positive (or -1 for any size)")
    low = high = None
    if len(parts) == 4:
        low, high = value_range(text, parts[3], dtype)
    batch = None if sizes[0] == -1 else sizes[0]
    rest = tuple(f"{name}.{axis}" if d == -1 else d for axis, d in enumerate(sizes[1:], start=1))
    return Feed(name, dtype, rest, low, high), batch


def value_range(text: str, spec: str, dtype: str) -> tuple[float, float]:
    """``LOW..HIGH`` -> (low, high), checked against the dtype."""
    match = RANGE.fullmatch(spec.strip())
    if not match or dtype == "bool":
        raise ExportError(f"--input {text!r}: the value range is LOW..HIGH, e.g. 0..49 (none for bool)")
    low, high = float(match.group(1)), float(match.group(2))
    integer = not dtype.startswith("float")
    if low > high or (integer and (low != int(low) or high != int(high))) or (not integer and low == high):
        raise ExportError(f"--input {text!r}: LOW..HIGH needs LOW < HIGH ({'integers' if integer else 'numbers'})")
    return low, high


def feeds_from_specs(input_spec: list) -> tuple[list[Feed], int | None]:
    """Named ``InputSpec`` s or ``NAME:DTYPE:SHAPE[:LOW..HIGH]`` strings -> Feeds and the batch (None: any size)."""
    if not input_spec:
        raise ExportError("a layer export needs at least one input spec")
    feeds, leads = [], set()
    for spec in input_spec:
        if isinstance(spec, str):
            feed, lead = parse_input(spec)
        else:
            feed, lead = from_input_spec(spec)
        feeds.append(feed)
        leads.add(lead)
    if len(leads) > 1:
        raise ExportError(f"inputs disagree on the batch dimension: {sorted(leads, key=str)}")
    if len({f.name for f in feeds}) != len(feeds):
        raise ExportError("two inputs have the same name")
    return feeds, leads.pop()


def from_input_spec(spec) -> tuple[Feed, int | None]:
    """A named ``InputSpec`` -> (Feed with one dynamic dimension per None or -1, its batch)."""
    if not isinstance(spec, InputSpec) or not spec.name:
        raise ExportError(f"every input needs a named paddle.static.InputSpec or a NAME:DTYPE:SHAPE string, got {spec!r}")
    dtype = str(spec.dtype).replace("paddle.", "")
    if dtype not in DTYPES:
        raise ExportError(f"input {spec.name!r}: dtype {dtype} is not one of {', '.join(DTYPES)}")
    shape = [(-1 if d is None else int(d)) for d in spec.shape]
    if not shape or any(d == 0 or d < -1 for d in shape):
        raise ExportError(f"input {spec.name!r}: shape {shape} needs a batch dimension and sizes > 0 (or -1)")
    dims = tuple(f"{spec.name}.{axis}" if d == -1 else d for axis, d in enumerate(shape[1:], start=1))
    return Feed(spec.name, dtype, dims), None if shape[0] == -1 else shape[0]


def feed_from_tensor(spec: TensorSpec) -> Feed:
    """A task's TensorSpec (common/tasks.py) as a Feed: the same fixed shape, no value range."""
    return Feed(spec.name, spec.dtype, tuple(f"{spec.name}.{a}" if d == -1 else d for a, d in enumerate(spec.shape, 1)))


# ---- outputs ----------------------------------------------------------------------------------------


def output_paths(out, prefix: str = "") -> list[str]:
    """Names for what ``forward`` returned, in the order ``paddle.utils.flatten`` (and so jit.save) lists the
    tensors: a dict by its sorted keys ("logits", "parts.0"), a tuple or list by position."""
    if isinstance(out, dict):
        return [p for key in sorted(out) for p in output_paths(out[key], f"{prefix}{key}.")]
    if isinstance(out, (tuple, list)):
        return [p for i, item in enumerate(out) for p in output_paths(item, f"{prefix}{i}.")]
    return [prefix[:-1]]


def default_output_names(out) -> list[str]:
    """Dict outputs are named by their keys; anything else output_0, output_1, ..."""
    paths = output_paths(out)
    return paths if isinstance(out, dict) else [f"output_{i}" for i in range(len(paths))]
