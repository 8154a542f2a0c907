"""Errors of the local stack.

StackError    a component could not be prepared, started or reached; the message says which
"""


class StackError(Exception):
    """A part of the local stack failed; the message includes what to look at."""
