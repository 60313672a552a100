"""Errors that service functions raise for bad requests. Callers map them: the REST API to
404 / 409 / 422 with the `code` below, the CLI to a one-line message and a non-zero exit."""

from __future__ import annotations


class RequestError(Exception):
    """A request the service cannot carry out as asked; `message` says why."""

    code = "bad_request"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class NotFoundError(RequestError):
    """The named thing (mirror, job, replication, key) does not exist."""

    code = "not_found"


class ConflictError(RequestError):
    """The thing exists but is not in a state that allows the request."""

    code = "conflict"


class InvalidInput(RequestError):
    """A field of the request is well-formed but not acceptable (e.g. not a target of the mirror)."""

    code = "validation_error"

    def __init__(self, field: str, reason: str):
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason
