"""Dynamic-graph Paddle training for digits (MNIST) and house prices (UCI housing).

From Python (a notebook on AI Studio, say)::

    import train
    metrics = train.run(train.TrainConfig("mnist", epochs=2))
"""
from .config import TrainConfig
from .errors import CheckpointError, ConfigError, DataMissingError, TrainError
from .loop import run

__all__ = ["run", "TrainConfig", "TrainError", "CheckpointError", "ConfigError", "DataMissingError"]
