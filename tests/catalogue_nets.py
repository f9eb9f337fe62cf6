"""The export catalogue: networks of the kinds people bring, small enough for CI (tests/test_export_catalogue.py).

Two zoo CNNs come from ``paddle.vision.models`` as they are (``zoo_weights`` gives them the batch
norm statistics training would); the others are written here, each showing one thing a static graph
must get right: a data-dependent ``if``, a ``while`` over a tensor-valued count, an LSTM over a free
sequence length, a Transformer encoder over int64 ids with two outputs, inputs of four dtypes, a
dict output, and four networks that leave the graph in ``forward`` (two refused at conversion, one
that converts into something else and is refused by parity, one that converts correctly and is
proven), plus one whose Python-side randomness makes it impossible to prove.
"""
from __future__ import annotations

import warnings

import numpy as np
import paddle
import paddle.nn.functional as F
from paddle import nn


def zoo_weights(net: nn.Layer, shape=(16, 3, 32, 32), batches: int = 2, seed: int = 1) -> nn.Layer:
    """Batch-norm statistics measured on random images, as training leaves them (freshly built zoo networks
    have mean 0, variance 1, which make their outputs ~1e-6 and every comparison meaningless); eval mode."""
    rng = np.random.default_rng(seed)
    norms = [m for m in net.sublayers() if isinstance(m, nn.layer.norm._BatchNormBase)]
    for norm in norms:
        norm._momentum = 0.0  # each batch replaces the statistics: the last one is what stays
    net.train()
    with paddle.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="When training, we now always track")  # what this wants
        for _ in range(batches):
            net(paddle.to_tensor(rng.standard_normal(shape).astype("float32")))
    for norm in norms:
        norm._momentum = 0.9
    net.eval()
    return net


class BranchNet(nn.Layer):
    """A data-dependent ``if``: one head when the batch's mean is positive, another otherwise."""

    def __init__(self, width: int = 6):
        super().__init__()
        self.up, self.down = nn.Linear(width, 3), nn.Linear(width, 3)

    def forward(self, x):
        if x.mean() > 0:
            y = self.up(x)
        else:
            y = self.down(x) * 2.0 - 1.0
        return y


class LoopNet(nn.Layer):
    """A ``while`` loop whose trip count is an input tensor: ``steps.max()`` rounds of a tanh cell."""

    def __init__(self, width: int = 4):
        super().__init__()
        self.cell = nn.Linear(width, width)

    def forward(self, x, steps):
        h = x
        i = paddle.zeros([1], "int64")
        while i < steps.max():
            h = paddle.tanh(self.cell(h))
            i = i + 1
        return h


class SequenceNet(nn.Layer):
    """An LSTM over a sequence of any length: (N, T, 6) -> class scores (N, 3) and the last state (N, 8)."""

    def __init__(self, features: int = 6, hidden: int = 8):
        super().__init__()
        self.lstm = nn.LSTM(features, hidden)
        self.head = nn.Linear(hidden, 3)

    def forward(self, x):
        out, (h, _) = self.lstm(x)
        return self.head(out[:, -1]), h[-1]


class TinyEncoder(nn.Layer):
    """A Transformer encoder over int64 token ids (N, T): a sentence label (N, 2) and per-token logits (N, T, vocab)."""

    def __init__(self, vocab: int = 50, width: int = 16, heads: int = 2, layers: int = 2, max_len: int = 32):
        super().__init__()
        self.tokens, self.positions = nn.Embedding(vocab, width), nn.Embedding(max_len, width)
        self.encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(width, heads, 2 * width, dropout=0.0), layers)
        self.sentence, self.token = nn.Linear(width, 2), nn.Linear(width, vocab)

    def forward(self, ids):
        positions = paddle.arange(ids.shape[1]).unsqueeze(0)
        h = self.encoder(self.tokens(ids) + self.positions(positions))
        return self.sentence(h.mean(axis=1)), self.token(h)


class MixedInputs(nn.Layer):
    """Four inputs of four dtypes: an image (float32), a scale (float64), a category (int32) and a mask (bool)."""

    def __init__(self, categories: int = 7, width: int = 4):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2D(1, width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2D(1))
        self.category = nn.Embedding(categories, width)
        self.head = nn.Linear(width, 3)

    def forward(self, image, scale, category, mask):
        h = paddle.flatten(self.conv(image), 1) * paddle.cast(scale, "float32") + self.category(category)
        h = paddle.where(mask, h, paddle.zeros_like(h))
        return self.head(h), scale * 2.0


class DictHeads(nn.Layer):
    """A dict output: ``{"probabilities", "logits", "embedding"}`` (served under those names)."""

    def __init__(self, width: int = 5):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(width, 8), nn.GELU())
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        embedding = self.body(x)
        logits = self.head(embedding)
        return {"probabilities": F.softmax(logits, axis=-1), "logits": logits, "embedding": embedding}


# ---- networks that leave the graph in forward --------------------------------------------------------


class NumpyReduction(nn.Layer):
    """Centres the features with NumPy on the tensor's values: to_static cannot convert it (refused)."""

    def __init__(self, width: int = 4):
        super().__init__()
        self.fc = nn.Linear(width, width)

    def forward(self, x):
        h = self.fc(x)
        return h - paddle.to_tensor(h.numpy().sum(axis=1, keepdims=True))


class ListScale(nn.Layer):
    """Scales by the first row's sum, read with ``.tolist()``: to_static cannot convert it (refused)."""

    def __init__(self, width: int = 4):
        super().__init__()
        self.fc = nn.Linear(width, width)

    def forward(self, x):
        h = self.fc(x)
        first = h.sum(axis=1).tolist()[0]
        return h * first


class NumpyArgmax(nn.Layer):
    """Picks the feature of the largest input with ``int(x.numpy().argmax())``: to_static maps it to graph ops,
    and parity proves the graph right."""

    def __init__(self, width: int = 4):
        super().__init__()
        self.fc = nn.Linear(width, width)

    def forward(self, x):
        k = int(x.numpy().argmax())
        return self.fc(x) * (k + 1)


class NumpyStd(nn.Layer):
    """Normalises by ``float(x.numpy().std())``: to_static maps it to Paddle's std, which divides by n - 1
    where NumPy divides by n; a graph that really differs, refused by parity."""

    def __init__(self, width: int = 4):
        super().__init__()
        self.fc = nn.Linear(width, width)

    def forward(self, x):
        return self.fc(x) / float(x.numpy().std())


class PythonRandom(nn.Layer):
    """Python-side noise: a new NumPy draw on every call (the graph would keep one draw forever); refused."""

    def __init__(self, width: int = 4):
        super().__init__()
        self.fc = nn.Linear(width, width)

    def forward(self, x):
        return self.fc(x) * float(1.0 + np.random.rand())
