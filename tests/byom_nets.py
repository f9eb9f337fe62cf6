"""A model that has nothing to do with digits or houses, for the bring-your-own-model tests.

Three inputs of two dtypes (an image, tabular features, a category id) and two outputs.
"""
import paddle
from paddle import nn


class TabularImageNet(nn.Layer):
    """image (N, 1, 16, 16) + features (N, 5) + category (N,) int64 -> scores (N, 3), embedding (N, 4)."""

    def __init__(self, categories: int = 10, width: int = 8):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2D(1, width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2D(1))
        self.table = nn.Sequential(nn.Linear(5, width), nn.Tanh())
        self.category = nn.Embedding(categories, width)
        self.head = nn.Linear(3 * width, 4)
        self.scores = nn.Linear(4, 3)

    def forward(self, image, features, category):
        joint = paddle.concat([paddle.flatten(self.conv(image), 1), self.table(features), self.category(category)], 1)
        embedding = self.head(joint)
        return nn.functional.softmax(self.scores(embedding), axis=-1), embedding
