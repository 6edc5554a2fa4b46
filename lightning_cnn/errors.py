"""Errors a user can cause and fix; the CLI prints their message alone and exits non-zero."""


class UserError(Exception):
    """A problem with the user's input (config, data, files): the message says what and how to fix it."""


class DataError(UserError):
    """The dataset is missing, unreadable or does not match what was asked for."""
