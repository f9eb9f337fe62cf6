"""Errors a user can fix: the command line prints their message as one line and exits non-zero."""


class TrainError(Exception):
    """Base class for problems with the user's data, flags or checkpoints (not bugs)."""


class DataMissingError(TrainError):
    """A dataset file is not where the loader looks for it."""


class CheckpointError(TrainError):
    """A checkpoint is truncated, corrupt, or belongs to another task or model."""


class ConfigError(TrainError):
    """A flag or a combination of flags that cannot work."""
