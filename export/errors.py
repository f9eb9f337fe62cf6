"""The one error type of the export step: something the user can fix, said in one line."""


class ExportError(Exception):
    """A checkpoint, output path, option or parity result that stops the export; the message says why."""
