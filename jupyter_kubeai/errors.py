"""Errors a person can act on, and their HTTP status, in one place.

The hub service, the catalog, the spawners and the backends raise these; :func:`http_status` maps them once
(bad input 400, no or invalid credentials 401, not allowed 403, missing
404, conflict 409, a body too large 413, a model server answering what the
hub will not pass on 502, a dependency down 503). Every HTTP server of the
project answers them as JSON ``{"message", "reason"}``. Anything else is a bug: 500 with a generic message, the
traceback going to the log only.
"""

from __future__ import annotations


class KubeAIError(Exception):
    """Base of the errors shown to users; ``message`` says what to do."""

    status = 500
    reason = "error"

    def __init__(self, message: str, *, reason: str | None = None):
        super().__init__(message)
        self.message = message
        if reason:
            self.reason = reason


class InvalidInput(KubeAIError):
    status = 400
    reason = "invalid"


class NotAuthenticated(KubeAIError):
    """No credentials, or ones that are forged or expired (a known caller who may not: :class:`Forbidden`)."""

    status = 401
    reason = "not_authenticated"


class Forbidden(KubeAIError):
    status = 403
    reason = "forbidden"


class NotFound(KubeAIError):
    status = 404
    reason = "not_found"


class Conflict(KubeAIError):
    status = 409
    reason = "conflict"


class TooLarge(KubeAIError):
    status = 413
    reason = "too_large"


class BadGateway(KubeAIError):
    """A model server answered something the hub will not pass on (a redirect)."""

    status = 502
    reason = "model_server"


class Unavailable(KubeAIError):
    status = 503
    reason = "unavailable"


def http_status(error: BaseException) -> int:
    """The HTTP status for ``error``: its own for ours, 500 otherwise."""
    return error.status if isinstance(error, KubeAIError) else 500
