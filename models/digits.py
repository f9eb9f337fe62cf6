"""Networks for handwritten digits (MNIST, 1x28x28 inputs, 10 classes).

Every network returns raw logits: the loss (cross-entropy) applies softmax itself, and the
export step appends softmax for clients. All of them accept any batch size.
"""
from __future__ import annotations

import paddle
from paddle import nn


class CourseMLP(nn.Layer):
    """The course's multilayer perceptron: two hidden layers of 10 sigmoid units."""

    def __init__(self, hidden: int = 10):
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(28 * 28, hidden), nn.Sigmoid(),
            nn.Linear(hidden, hidden), nn.Sigmoid(),
            nn.Linear(hidden, 10),
        )

    def forward(self, x):
        return self.net(x)


class CourseCNN(nn.Layer):
    """The course's CNN: two blocks of 5x5 conv (20 channels) + 2x2 max-pool, one linear layer.

    ``extra_block`` adds a third conv + pool block (the course's "one more layer" experiment);
    ``dropout`` > 0 puts dropout before the classifier (an experiment, 0 in the course).
    """

    def __init__(self, dropout: float = 0.0, extra_block: bool = False):
        super().__init__()
        blocks = [self._block(1), self._block(20)]
        side = 7
        if extra_block:
            blocks.append(self._block(20))
            side = 3  # 7 -> 3 with floor pooling
        self.features = nn.Sequential(*blocks)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(20 * side * side, 10)

    @staticmethod
    def _block(in_channels: int) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2D(in_channels, 20, kernel_size=5, padding=2), nn.ReLU(),
            nn.MaxPool2D(kernel_size=2, stride=2),
        )

    def forward(self, x):
        x = paddle.flatten(self.features(x), start_axis=1)
        return self.fc(self.dropout(x))


class DigitCNN(nn.Layer):
    """The toolkit's default digit classifier: three conv + batch-norm blocks, dropout, two linear layers.

    Sized for CPUs (about as many multiply-adds as the course CNN) yet >= 99.3% on the MNIST test set.
    """

    def __init__(self, dropout: float = 0.3):
        super().__init__()
        self.features = nn.Sequential(
            self._block(1, 16, 5),   # 28 -> 14
            self._block(16, 32, 3),  # 14 -> 7
            self._block(32, 64, 3),  # 7 -> 3
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(64 * 3 * 3, 128), nn.BatchNorm1D(128), nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(128, 10),
        )

    @staticmethod
    def _block(cin: int, cout: int, k: int) -> nn.Sequential:
        # No conv bias: the batch norm right after it has its own shift.
        return nn.Sequential(
            nn.Conv2D(cin, cout, k, padding=k // 2, bias_attr=False), nn.BatchNorm2D(cout), nn.ReLU(),
            nn.MaxPool2D(2, 2),
        )

    def forward(self, x):
        return self.classifier(self.features(x))
