"""Model registry: maps each task's ``--model`` names to network classes.

``build_model(task, name, dropout=...)`` is the one way the rest of the toolkit makes a network.
"""
from __future__ import annotations

import functools
import inspect

from paddle import nn

from .digits import CourseCNN, CourseMLP, DigitCNN
from .housing import HousingMLP, LinearRegression

# task -> {model name -> constructor}. Each task's default model is named in its row of common/tasks.py.
REGISTRY: dict[str, dict[str, type | functools.partial]] = {
    "mnist": {
        "cnn": DigitCNN,
        "course_cnn": CourseCNN,
        "course_cnn3": functools.partial(CourseCNN, extra_block=True),
        "mlp": CourseMLP,
    },
    "housing": {
        "linear": LinearRegression,
        "mlp": HousingMLP,
    },
}

def has_dropout(task: str, name: str) -> bool:
    """Whether the model takes a ``dropout`` argument."""
    ctor = REGISTRY[task][name]
    target = ctor.func if isinstance(ctor, functools.partial) else ctor
    return "dropout" in inspect.signature(target.__init__).parameters


def build_model(task: str, name: str, dropout: float | None = None) -> nn.Layer:
    """Instantiate model ``name`` of ``task``; ``dropout`` is passed only when given."""
    if task not in REGISTRY:
        raise ValueError(f"unknown task {task!r}; choose from {', '.join(REGISTRY)}")
    if name not in REGISTRY[task]:
        raise ValueError(f"unknown model {name!r} for {task}; choose from {', '.join(REGISTRY[task])}")
    kwargs = {}
    if dropout is not None:
        if not has_dropout(task, name):
            raise ValueError(f"model {name!r} has no dropout; leave --dropout unset")
        kwargs["dropout"] = dropout
    return REGISTRY[task][name](**kwargs)
