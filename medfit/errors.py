"""User-facing errors.

A `MedfitError` is a mistake the user can fix (a wrong path, an empty class folder, weights that do
not fit). The CLI prints its message as one line and exits with status 2, never a traceback.
Anything else is a bug in medfit and keeps its traceback.
"""

from __future__ import annotations


class MedfitError(Exception):
    """A problem with the user's input, stated as what, where and what to do."""


class DataError(MedfitError):
    """The data directory, a manifest or an image cannot be used as given."""


class WeightsError(MedfitError):
    """Pretrained weights cannot be found or do not fit the architecture."""


class ConfigError(MedfitError):
    """An option has a value medfit does not accept."""
