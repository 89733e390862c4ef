"""Owns HGMError, the one error type meant for people; at the bottom layer, so every package can raise it.

main.py prints an HGMError's message as one line and exits non-zero.
"""


class HGMError(Exception):
    """A problem with the user's input (config, data, checkpoint, flags)."""
