"""Errors that service functions raise for requests they cannot carry out. Callers map them
in one place each: the REST API (api/errors.py) to 403 / 404 / 409 / 422 / 503 by the `code`
below, the CLI (cli/common.py) to a one-line message and a non-zero exit."""

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


class MirrorNotFound(NotFoundError):
    """No mirror runs under this name (the one answer to "does this mirror exist")."""

    def __init__(self, name: str):
        super().__init__(f"no mirror named {name!r}")
        self.name = name


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


class Forbidden(RequestError):
    """The caller's role may not do this (e.g. an operator naming a new event feed)."""

    code = "forbidden"


class Unavailable(RequestError):
    """The request is fine but the server cannot serve it now (e.g. no usable report key):
    the operator must fix something."""

    code = "unavailable"
