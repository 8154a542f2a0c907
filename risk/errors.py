"""Errors of the risk package.

RiskError
 ├── ModelError      a model artifact is missing, damaged, untrusted or does not fit the schema
 └── PublishError    a decision event could not be written to Redis
"""


class RiskError(Exception):
    """Base class of every error raised by the risk package."""


class ModelError(RiskError):
    """A model artifact cannot be used; the message says which and what to do."""


class PublishError(RiskError):
    """A decision event could not be published."""
