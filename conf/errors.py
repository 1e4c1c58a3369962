"""User-facing errors: each carries one clear line for the CLI (and later an HTTP API).

Anything raised as a :class:`UserError` is the caller's to fix; anything else is a bug.
"""


class UserError(Exception):
    """A request the system refuses, with a message fit to show as is."""

    exit_code = 1


class NotFound(UserError):
    exit_code = 3


class InvalidRequest(UserError):
    exit_code = 2


class Conflict(UserError):
    exit_code = 4


class BudgetSpent(UserError):
    """A tenant's budget is spent for its period: the request is refused (HTTP 429)."""

    exit_code = 6
