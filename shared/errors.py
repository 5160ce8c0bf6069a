"""Errors a caller can cause, each with a stable code, the field at fault and an HTTP status."""

from __future__ import annotations


class HotpipeError(Exception):
    """A failure with a stable machine-readable ``code`` and a message that says what to do."""

    status_code = 400
    code = "bad_request"

    def __init__(self, message: str, *, field: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field
        if code:
            self.code = code

    def to_json(self) -> dict[str, dict[str, str]]:
        body = {"code": self.code, "message": self.message}
        if self.field:
            body["field"] = self.field
        return {"error": body}


class InvalidRequest(HotpipeError):
    """The request is well-formed JSON but asks for something we won't do (422)."""

    status_code = 422
    code = "invalid_request"


class NotFound(HotpipeError):
    status_code = 404
    code = "not_found"


class Conflict(HotpipeError):
    status_code = 409
    code = "conflict"


class Unavailable(HotpipeError):
    """A dependency of ours (Redis, the Hub, the broker) is down; try again later (503)."""

    status_code = 503
    code = "unavailable"


class TooLarge(HotpipeError):
    """The body is over a size limit (413)."""

    status_code = 413
    code = "body_too_large"
