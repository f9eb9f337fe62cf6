"""Step 3: wrap the network so the exported graph ends in what a client wants, and name its input.

Digits: softmax over the logits -> ``probabilities`` (N, 10). Housing: the network predicts the
normalised price; the wrapper multiplies by the training target's std and adds its mean, so the
graph answers in $1000s and no client has to know the statistics.
"""
from __future__ import annotations

import paddle
from paddle import nn
from paddle.static import InputSpec

# task -> (input name, shape after the batch axis, output name, output shape after the batch axis)
SIGNATURES = {
    "mnist": ("image", [1, 28, 28], "probabilities", [10]),
    "housing": ("features", [13], "price", [1]),
}


class DigitProbabilities(nn.Layer):
    """Logits -> class probabilities."""

    def __init__(self, net: nn.Layer):
        super().__init__()
        self.net = net

    def forward(self, image):
        return paddle.nn.functional.softmax(self.net(image), axis=-1)


class HousePrice(nn.Layer):
    """Normalised prediction -> price in $1000s (``pred * target_std + target_mean``)."""

    def __init__(self, net: nn.Layer, target_mean: float, target_std: float):
        super().__init__()
        self.net = net
        # Python floats become constants in the static graph: nothing to load, nothing to forget.
        self.target_mean, self.target_std = float(target_mean), float(target_std)

    def forward(self, features):
        return self.net(features) * self.target_std + self.target_mean


def wrap(net: nn.Layer, task: str, stats: dict) -> nn.Layer:
    """The client-facing model for ``task``, in eval mode."""
    wrapped = DigitProbabilities(net) if task == "mnist" else HousePrice(net, stats["target_mean"], stats["target_std"])
    wrapped.eval()
    return wrapped


def input_spec(task: str, batch: int | None) -> list[InputSpec]:
    """The named input of the exported graph: ``None`` batch (any size) or a fixed one."""
    name, shape, _, _ = SIGNATURES[task]
    return [InputSpec([batch] + shape, "float32", name)]
