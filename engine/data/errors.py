"""The data room's one error: a data source that cannot be used."""


class DataError(Exception):
    """A data source that cannot be used; ``str(e)`` is one line."""
