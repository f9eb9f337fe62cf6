"""Errors a user can fix: the command line prints their message as one line and exits non-zero.

Checkpoint and dataset errors are defined with the formats they belong to, in ``common/``, and
re-exported here so that ``train.CheckpointError`` and ``train.DataMissingError`` keep working.
"""
from common.checkpoint import CheckpointError
from common.datasets import DataMissingError


class TrainError(Exception):
    """Base class for problems with the user's flags (not bugs)."""


class ConfigError(TrainError):
    """A flag or a combination of flags that cannot work."""


# What ``python -m train`` reports as one ``error:`` line instead of a traceback.
USER_ERRORS = (TrainError, CheckpointError, DataMissingError)

__all__ = ["TrainError", "ConfigError", "CheckpointError", "DataMissingError", "USER_ERRORS"]
