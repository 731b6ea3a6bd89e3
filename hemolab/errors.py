"""The one exception type hemolab raises for problems a user can act on."""

from __future__ import annotations


class HemolabError(ValueError):
    """A problem with the user's input or set-up, explained in words they can act on.

    It subclasses :class:`ValueError` so that code written against the usual Python convention
    (``except ValueError``) still catches it. The command line prints its message without a
    traceback.
    """


class HemolabFileError(HemolabError, FileNotFoundError):
    """A path hemolab was asked to read does not exist or is not what it should be."""


class HemolabExistsError(HemolabError, FileExistsError):
    """hemolab refuses to overwrite something a user made without an explicit ``overwrite=True``."""
