"""Exception kinds of the server side; the API maps each to one HTTP status."""


class PincusError(Exception):
    """Base of every error a user can act on."""

    status = 500


class InvalidError(PincusError):
    """The request or a config value is wrong."""

    status = 400


class UnsupportedError(InvalidError):
    """The host kernel or machine lacks a feature the request needs."""


class NotFoundError(PincusError):
    status = 404


class ConflictError(PincusError):
    """The object exists already, is in use, or is in the wrong state."""

    status = 409


class HostError(PincusError):
    """A kernel or program operation failed; the message names the object and operation."""

    status = 500


class ForbiddenError(PincusError):
    """The caller may not do this (a wrong websocket secret)."""

    status = 403


class PreconditionFailedError(PincusError):
    """The object changed since the caller read it (a stale ETag in If-Match)."""

    status = 412
