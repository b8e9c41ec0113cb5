"""Errors raised for user mistakes.

Every error names the offending parameter or input, the bad value, and the fix. The
command-line interface prints the message on one line and exits with status 2.
"""


class OcformerError(Exception):
    """Base class of every error ocformer raises for bad input."""


class ConfigError(OcformerError, ValueError):
    """An option or a combination of options makes no sense."""


class DataError(OcformerError, ValueError):
    """A dataset, a data file or a saved model cannot be used as given."""
