"""The SDK's errors: one ``APIError`` subclass per kind of answer, decoded from the API's JSON error.

Every error the API answers is ``{"error": {"code", "message", "field"}}``; ``api_error`` turns a
response into the exception for its status, carrying those three.
"""

from __future__ import annotations

import httpx


class APIError(Exception):
    """An error answer from the API, carrying its status, code, message and field."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None):
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message, self.field = status, code, message, field


class InvalidRequestError(APIError):
    """400/422: the request was refused; ``field`` names what to fix.  Nothing was enqueued."""


class AuthError(APIError):
    """401/403: no valid API key, or not allowed."""


class NotFoundError(APIError):
    """404: no such job (or its record expired)."""


class ConflictError(APIError):
    """409: the job is already finished, or an Idempotency-Key / job id names another request."""


class TooLargeError(APIError):
    """413: the body (or an upload) is over the server's limit."""


class RateLimitedError(APIError):
    """429: too many requests; retry later."""


class UnavailableError(APIError):
    """5xx: the service or one of its dependencies is down; retry later."""


#: HTTP status -> the exception raised for it (5xx: UnavailableError, other 4xx: APIError)
ERRORS: dict[int, type[APIError]] = {400: InvalidRequestError, 422: InvalidRequestError, 401: AuthError,
                                     403: AuthError, 404: NotFoundError, 409: ConflictError, 413: TooLargeError,
                                     429: RateLimitedError}


def api_error(response: httpx.Response) -> APIError:
    """The exception for an error answer (its body read); a body that isn't our JSON error keeps its text."""
    try:
        err = response.json()["error"]
    except (ValueError, KeyError, TypeError):
        err = {"code": "http_error", "message": response.text[:500]}
    kind = ERRORS.get(response.status_code, UnavailableError if response.status_code >= 500 else APIError)
    # our routes name the field in "field", the OpenAI-compatible ones (GET /v1/models, /v1/images) in "param"
    return kind(response.status_code, err.get("code") or "error", err.get("message", ""),
                err.get("field") or err.get("param"))
