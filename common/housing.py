"""The UCI/Boston housing schema and its normalisation: one implementation for training and serving.

Training fits the statistics on its training rows (``fit_stats``) and saves them in the checkpoint;
export writes them into the bundle's PreProcess; the server normalises requests with
``normalize`` and the bundle's numbers.
"""
from __future__ import annotations

import numpy as np

# The 13 input columns of housing.data, in file order; the 14th is MEDV, the price in $1000s.
FEATURE_NAMES = ("CRIM", "ZN", "INDUS", "CHAS", "NOX", "RM", "AGE", "DIS", "RAD", "TAX", "PTRATIO", "B", "LSTAT")
TARGET_NAME = "MEDV"
STATS_KEYS = ("feature_names", "feature_mean", "feature_std", "target_mean", "target_std")


def fit_stats(rows: np.ndarray) -> dict:
    """Mean and std of the 13 features and of the price over ``rows`` (N x 14), as plain floats."""
    rows = np.asarray(rows, dtype=np.float64)
    return {
        "feature_names": list(FEATURE_NAMES),
        "feature_mean": rows[:, :13].mean(0).tolist(), "feature_std": rows[:, :13].std(0).tolist(),
        "target_mean": float(rows[:, 13].mean()), "target_std": float(rows[:, 13].std()),
    }


def normalize(features, mean, std) -> np.ndarray:
    """``(features - mean) / std`` computed in float64, returned as float32.

    Values that overflow float32 come back as infinity: callers that take user input check for that.
    """
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        z = (np.asarray(features, dtype=np.float64) - np.asarray(mean, np.float64)) / np.asarray(std, np.float64)
        return z.astype(np.float32)


def standardize_target(prices, stats: dict) -> np.ndarray:
    """Prices in $1000s -> the normalised target the networks learn (float32, column)."""
    y = (np.asarray(prices, dtype=np.float64) - stats["target_mean"]) / stats["target_std"]
    return y.reshape(-1, 1).astype(np.float32)
