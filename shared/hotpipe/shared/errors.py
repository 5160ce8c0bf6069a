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


class Unauthorized(HotpipeError):
    """No valid ``Authorization: Bearer <key>`` on a request that needs one (401)."""

    status_code = 401
    code = "unauthorized"


class TooManyRequests(HotpipeError):
    """A limit was reached (rate, queue length); ``retry_after_s`` says when to try again (429)."""

    status_code = 429
    code = "too_many_requests"

    def __init__(self, message: str, *, retry_after_s: int, code: str | None = None):
        super().__init__(message, code=code)
        self.retry_after_s = max(1, retry_after_s)
