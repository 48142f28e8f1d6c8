"""What a failed attempt means for the rest of the request: give up, retry, move on, or re-route."""

from __future__ import annotations

import email.utils
import random
import time
from enum import Enum

from bastion.errors import BastionError, UpstreamError


class Failure(Enum):
    RETRYABLE = "retryable"  # transient: another attempt (here or elsewhere) may succeed
    DEPLOYMENT = "deployment"  # this deployment cannot serve it (auth, unknown model): try the others
    CONTEXT_OVERFLOW = "context_overflow"  # the prompt is too long for this model
    CONTENT_FILTER = "content_filter"  # the upstream's content policy refused it
    FATAL = "fatal"  # the request itself is wrong (a 400): no other attempt will do better


_OVERFLOW_MARKERS = ("context_length_exceeded", "maximum context length", "prompt is too long",
                     "context window", "too many tokens")
_FILTER_MARKERS = ("content_filter", "content_policy_violation", "content management policy",
                   "content filtering policy")
_RETRYABLE_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504, 529})


def classify(err: BastionError) -> Failure:
    if not isinstance(err, UpstreamError):
        return Failure.RETRYABLE if err.status in (502, 503, 504) else Failure.FATAL
    status = err.upstream_status
    if status is None:  # no HTTP answer: connect error, timeout, dropped or malformed response
        return Failure.DEPLOYMENT if err.code == "provider_key_missing" else Failure.RETRYABLE
    text = err.message.lower()
    if status in (400, 413, 422):
        if any(m in text for m in _OVERFLOW_MARKERS):
            return Failure.CONTEXT_OVERFLOW
        if any(m in text for m in _FILTER_MARKERS):
            return Failure.CONTENT_FILTER
        return Failure.FATAL
    if status in _RETRYABLE_STATUS or status >= 500:
        return Failure.RETRYABLE
    if status in (401, 403, 404):
        return Failure.DEPLOYMENT
    return Failure.FATAL


def counts_against_breaker(err: BastionError, kind: Failure, *, caller_limited: bool = False) -> bool:
    """Whether a failed attempt says the deployment is unhealthy (its breaker counts it).

    Only the deployment's own failures count: a connect error, a 5xx, a dropped or malformed answer, a
    timeout under the operator's configured limits, a missing model or key. Not counted:

    - ``caller_limited``: the attempt ran out of a time limit the client's ``x-bastion-timeout-*`` header
      made shorter than the alias's (or of the request's own total deadline). A slow-but-healthy
      deployment is not broken because one caller asked for less than the operator allows; counting it
      would let any tenant open a breaker that every tenant shares.
    - an upstream 429: the provider's rate limit is the deployment's, but it says "later", not "broken".
      Retry-After, the retry budget and the ``rpm``/``tpm`` limits already keep traffic off it; an open
      breaker would only hold it out for ``open_s`` after the limit has reset, and a burst from one
      tenant would take it from every tenant for that long.
    - a bad request (400), a context overflow or a content-filter refusal: the request's fault.
    """
    if caller_limited or kind not in (Failure.RETRYABLE, Failure.DEPLOYMENT):
        return False
    return not (isinstance(err, UpstreamError) and err.upstream_status == 429)


def retry_after_s(headers: dict[str, str]) -> float | None:
    """The upstream's Retry-After (``retry-after-ms`` preferred), in seconds, or None."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        parsed = email.utils.parsedate_to_datetime(value)  # the HTTP-date form
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, parsed.timestamp() - time.time())


def backoff_s(retry_number: int, base_ms: float, cap_ms: float, rng: random.Random) -> float:
    """Exponential backoff with full jitter: uniform(0, min(cap, base × 2^(n-1)))."""
    ceiling = min(cap_ms, base_ms * (2 ** max(0, retry_number - 1)))
    return rng.uniform(0, ceiling) / 1000
