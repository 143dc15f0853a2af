"""jetfm's exception types.

Every error raised on bad input names the file, the field and what was expected versus found, so a
physicist can fix the input without reading a traceback. The CLI turns a :class:`JetfmError` into a
one-line message and exit code 2.
"""

from __future__ import annotations

from os import PathLike


class JetfmError(Exception):
    """Base class of all errors that jetfm raises on purpose."""


class InputError(JetfmError, ValueError):
    """Bad input data or options.

    Built from its parts so the message always has the same shape:
    ``<file>: field '<field>': expected <expected>, found <found>``.
    """

    def __init__(
        self,
        expected: str,
        *,
        file: str | PathLike[str] | None = None,
        field: str | None = None,
        found: object = None,
    ) -> None:
        self.file = None if file is None else str(file)
        self.field = field
        self.expected = expected
        self.found = found
        parts = []
        if self.file is not None:
            parts.append(f"{self.file}:")
        if field is not None:
            parts.append(f"field '{field}':")
        msg = f"expected {expected}"
        if found is not None:
            msg += f", found {found}"
        parts.append(msg)
        super().__init__(" ".join(parts))


class ConfigError(InputError):
    """A configuration value or key is invalid (unknown key, wrong type, out of range)."""


class CheckpointError(JetfmError):
    """A checkpoint folder is incomplete, corrupt, or does not match what depends on it."""
