"""The error hierarchy: one class per failure a user can act on.

Each error carries an HTTP status, a stable machine-readable ``code`` and a message that says what to fix.
``to_openai`` / ``to_anthropic`` render it in each dialect's own error body, with the request id.
"""

from __future__ import annotations

from typing import Any

# OpenAI error "type" and Anthropic error "type" for each HTTP status we emit.
_OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "insufficient_quota",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    409: "conflict_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    499: "client_closed_request",
}
_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    413: "request_too_large",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    529: "overloaded_error",
}


class BastionError(Exception):
    """Base of every error Bastion reports to a client."""

    status: int = 500
    code: str = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code
        self.param = param
        self.headers: dict[str, str] = dict(headers or {})

    def openai_type(self) -> str:
        if self.status >= 500:
            return "server_error"
        return _OPENAI_TYPES.get(self.status, "invalid_request_error")

    def anthropic_type(self) -> str:
        if self.status >= 500:
            return "overloaded_error" if self.status in (503, 529) else "api_error"
        return _ANTHROPIC_TYPES.get(self.status, "invalid_request_error")

    def to_openai(self, request_id: str | None) -> dict[str, Any]:
        err: dict[str, Any] = {
            "message": self.message,
            "type": self.openai_type(),
            "param": self.param,
            "code": self.code,
        }
        if request_id:
            err["request_id"] = request_id
        return {"error": err}

    def to_anthropic(self, request_id: str | None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": "error",
            "error": {"type": self.anthropic_type(), "message": self.message, "code": self.code},
        }
        if request_id:
            body["request_id"] = request_id
        return body


class InvalidRequest(BastionError):
    """The request body is malformed or a field has the wrong type or value."""

    status = 400
    code = "invalid_request"


class InvalidJSON(InvalidRequest):
    code = "invalid_json"


class UnsupportedParameter(InvalidRequest):
    code = "unsupported_parameter"


class AuthenticationFailed(BastionError):
    status = 401
    code = "invalid_api_key"


class PermissionDenied(BastionError):
    status = 403
    code = "permission_denied"


class ModelNotFound(BastionError):
    status = 404
    code = "model_not_found"


class NotFound(BastionError):
    status = 404
    code = "not_found"


class PayloadTooLarge(BastionError):
    status = 413
    code = "request_too_large"


class UnsupportedMediaType(BastionError):
    status = 415
    code = "unsupported_media_type"


class RequestTimeout(BastionError):
    status = 408
    code = "request_timeout"


class ClientClosed(BastionError):
    """The client hung up before the request was whole: nobody reads the answer (nginx's 499)."""

    status = 499
    code = "client_closed"


class LogUnavailable(BastionError):
    """The request log cannot be written and ``store.on_write_failure`` is ``refuse``: fail closed."""

    status = 503
    code = "log_unavailable"


class RateLimited(BastionError):
    status = 429
    code = "rate_limited"


class UpstreamError(BastionError):
    """An upstream answered with an error; its status and meaning are kept (429 keeps Retry-After)."""

    status = 502
    code = "upstream_error"

    def __init__(
        self,
        message: str,
        *,
        status: int = 502,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        upstream_status: int | None = None,
        upstream_body: Any = None,
        retryable: bool = False,
    ) -> None:
        super().__init__(message, status=status, code=code or "upstream_error", headers=headers)
        self.upstream_status = upstream_status
        self.upstream_body = upstream_body
        self.retryable = retryable


class UpstreamUnavailable(UpstreamError):
    """The upstream could not be reached, dropped the connection, or sent something unreadable."""

    def __init__(self, message: str, *, code: str = "upstream_unavailable", status: int = 502) -> None:
        super().__init__(message, status=status, code=code, retryable=True)


class UpstreamTimeout(UpstreamError):
    def __init__(self, message: str, *, code: str = "upstream_timeout") -> None:
        super().__init__(message, status=504, code=code, retryable=True)


class ConfigError(Exception):
    """A configuration problem, with the key path and the line it came from."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems
