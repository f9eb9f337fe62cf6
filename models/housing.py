"""Networks for house prices (UCI/Boston housing: 13 normalised features -> 1 normalised price)."""
from __future__ import annotations

from paddle import nn


class LinearRegression(nn.Layer):
    """The course's model: a single ``nn.Linear(13, 1)``."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(13, 1)

    def forward(self, x):
        return self.fc(x)


class HousingMLP(nn.Layer):
    """A small multilayer perceptron: 13 -> hidden -> hidden -> 1, ReLU, optional dropout."""

    def __init__(self, hidden: int = 32, dropout: float = 0.0):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(13, hidden), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(hidden, 1),
        )

    def forward(self, x):
        return self.net(x)
