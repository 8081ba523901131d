"""The error optimize() raises for what it cannot do."""


class OptimizeError(ValueError):
    """optimize() cannot do what was asked; the message says why."""
