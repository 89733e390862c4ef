"""Errors meant for people: main.py prints their message as one line and exits non-zero."""


class HGMError(Exception):
    """A problem with the user's input (config, data, checkpoint, flags)."""
