"""Domain errors; ``service.api.errors`` maps each to its HTTP status in one place."""

from __future__ import annotations


class ServiceError(Exception):
    """Base of the errors a client can cause; the message says what to do."""


class NotFound(ServiceError):
    """A study or trial that does not exist (404)."""


class Conflict(ServiceError):
    """A duplicate name, or an action the resource's state does not allow (409)."""


class Forbidden(ServiceError):
    """Someone else's study (403)."""


class TooMany(ServiceError):
    """A per-user limit reached, e.g. studies queued at once (429)."""


class Unauthenticated(ServiceError):
    """No valid token where authentication is required (401)."""


class InvalidRequest(ServiceError):
    """A request that passed the schema but cannot be served, e.g. resources no node has (422).

    ``loc`` is the path of the offending field, as in pydantic's errors.
    """

    def __init__(self, loc: tuple[str, ...], message: str) -> None:
        super().__init__(message)
        self.loc = loc
