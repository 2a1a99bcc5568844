"""Errors nnfin raises for bad user input.

Every error here is a one-line message that names the field and shows the bad value.
The CLI prints it as ``error: <message>`` and exits with code 2, without a traceback.

>>> raise ConfigError("[train] batch_size = 0 must be >= 1")
Traceback (most recent call last):
...
nnfin.errors.ConfigError: [train] batch_size = 0 must be >= 1
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class NNFinError(ValueError):
    """Base class of all user-facing errors (bad config, data, files)."""


class ConfigError(NNFinError):
    """A config value, key or section is invalid."""


class DataError(NNFinError):
    """Data cannot be read or is unusable (missing columns, NaN, empty...)."""


class FileFormatError(NNFinError):
    """A model, checkpoint or run file is missing, corrupt, tampered or unsafe."""


def did_you_mean(value: str, choices: Iterable[str]) -> str:
    """Return ``"; did you mean 'x'?"`` for the closest choice, or ``""``.

    >>> did_you_mean("sigmod", ["sigmoid", "tanh"])
    "; did you mean 'sigmoid'?"
    """
    close = difflib.get_close_matches(str(value), list(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def one_of(value: object, choices: Iterable[str]) -> str:
    """Format ``"choose one of a, b, c; did you mean ...?"`` for an unknown name."""
    choices = list(choices)
    return f"choose one of {', '.join(choices)}{did_you_mean(str(value), choices)}"


class WriteError(NNFinError):
    """A file cannot be written: it exists (no ``--force``), the disk is full, access is denied..."""


class RunFolderBusy(NNFinError):
    """Another process holds the run folder's lock (it is training or writing there)."""


class ExportError(NNFinError):
    """A model cannot be exported (a network torch.export cannot trace, an operation without an
    ONNX translation, a missing package) or the exported file does not match nnfin's prediction."""
