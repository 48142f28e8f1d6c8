"""One adapter per upstream protocol, behind one small interface.

A provider knows how to reach its upstream (URL, auth headers) and which dialect it speaks; it knows
nothing of routing, logging or translation. ``post`` returns the open response or raises a
``bastion.errors`` exception that says what went wrong; every such message passes through the provider's
scrubber (``bastion.scrub``), since upstreams quote the key they were sent, and credentials in
``base_url`` are sent as Basic auth but never shown.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Literal

import aiohttp
import orjson

from bastion.config.model import ProviderConfig
from bastion.errors import UnsupportedParameter, UpstreamError, UpstreamTimeout, UpstreamUnavailable
from bastion.scrub import MIN_SECRET, Scrubber, process_scrubber, split_userinfo

log = logging.getLogger("bastion.providers")

Dialect = Literal["openai", "anthropic"]

# Response headers from upstreams worth keeping for the client.
_KEEP_HEADERS = ("retry-after", "retry-after-ms")


# Stable codes for upstream failures, whatever each provider calls them (its own code is in the message).
_STABLE_CODES = {
    400: "upstream_bad_request",
    404: "upstream_not_found",
    408: "upstream_timeout",
    413: "upstream_request_too_large",
    422: "upstream_bad_request",
    429: "upstream_rate_limited",
    500: "upstream_server_error",
    502: "upstream_bad_gateway",
    503: "upstream_overloaded",
    504: "upstream_timeout",
    529: "upstream_overloaded",
}


def _error_message(body: bytes, scrub: Scrubber) -> tuple[str, str | None]:
    """The upstream's own message and code, without the credentials upstreams quote (``Scrubber.excerpt``
    cuts a long text only where no secret can be left in part)."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        # 64 KiB decode to 16,384+ characters: more than excerpt scans, so it makes the cut, at a token edge
        text = scrub.excerpt(body[:65536].decode("utf-8", "replace").strip(), 300)
        return (text or "(empty body)"), None
    err = data.get("error") if isinstance(data, dict) else None
    if isinstance(err, dict):
        code = err.get("code") or err.get("type")
        return scrub.excerpt(str(err.get("message") or err)), (scrub.excerpt(str(code), 100) if code else None)
    if isinstance(err, str):
        return scrub.excerpt(err), None
    return scrub.excerpt(str(data), 300), None


class Provider:
    dialect: Dialect = "openai"
    default_base_url = ""

    def __init__(self, name: str, config: ProviderConfig, scrubber: Scrubber | None = None) -> None:
        self.name = name
        self.config = config
        self.scrub = scrubber if scrubber is not None else process_scrubber()
        # Credentials in the URL never go into a URL we build (messages quote URLs): kept apart, sent as
        # Basic auth when the provider sends no Authorization header of its own.
        base_url, user, password = split_userinfo((config.base_url or self.default_base_url).rstrip("/"))
        self.base_url = base_url
        self.scrub.add(password)
        self._url_auth = aiohttp.encode_basic_auth(user or "", password or "") if user or password else None
        if self._url_auth is not None and self._sends_authorization():
            log.warning("provider %r: base_url carries credentials, but the provider sends its own Authorization "
                        "header (its API key or headers:), so the URL's credentials are not sent", name)
        self._session: aiohttp.ClientSession | None = None

    # ---- per-provider details ----------------------------------------------------------------
    def chat_url(self, model: str) -> str:
        raise NotImplementedError

    def embeddings_url(self, model: str) -> str:
        raise UnsupportedParameter(f"provider {self.name!r} ({self.config.type}) does not serve embeddings")

    def auth_headers(self, key: str | None) -> dict[str, str]:
        raise NotImplementedError

    # ---- shared machinery --------------------------------------------------------------------
    def _sends_authorization(self) -> bool:
        sent = {**self.auth_headers("key" if self.config.api_key_env else None), **self.config.headers}
        return any(h.lower() == "authorization" for h in sent)

    def api_key(self) -> str | None:
        env = self.config.api_key_env
        if env is None:
            return None
        key = os.environ.get(env)
        if not key:
            raise UpstreamError(
                f"provider {self.name!r} needs an API key: set the environment variable {env}",
                status=503,
                code="provider_key_missing",
            )
        if key not in self.scrub.secrets and len(key) >= MIN_SECRET:
            self.scrub.add(key)  # set after the config was loaded: scrubbed from now on all the same
        return key

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self.config.max_connections, limit_per_host=self.config.max_connections, ttl_dns_cache=300
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(
                    total=None, connect=self.config.connect_timeout_s, sock_read=self.config.read_timeout_s
                ),
                read_bufsize=1 << 20,
                max_line_size=1 << 24,
                max_field_size=1 << 16,
                auto_decompress=True,
                skip_auto_headers=("User-Agent",),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def post(
        self, url: str, body: bytes, *, deployment: str, timeout: aiohttp.ClientTimeout | None = None
    ) -> aiohttp.ClientResponse:
        headers = {"content-type": "application/json", "user-agent": "bastion/0.1"}
        headers.update(self.auth_headers(self.api_key()))
        headers.update(self.config.headers)
        if self._url_auth is not None and not any(h.lower() == "authorization" for h in headers):
            headers["authorization"] = self._url_auth
        scrub = self.scrub
        try:
            if timeout is None:
                resp = await self.session().post(url, data=body, headers=headers)
            else:
                resp = await self.session().post(url, data=body, headers=headers, timeout=timeout)
        except TimeoutError:
            raise UpstreamTimeout(scrub(f"deployment {deployment!r} did not answer in time ({url})")) from None
        except aiohttp.ClientConnectorError as e:
            raise UpstreamUnavailable(
                scrub(f"could not connect to deployment {deployment!r} at {url}: {e.os_error}")
            ) from None
        except (aiohttp.ClientError, OSError) as e:
            raise UpstreamUnavailable(
                f"deployment {deployment!r} dropped the connection before answering: {type(e).__name__}"
            ) from None
        if resp.status >= 400:
            try:
                body_bytes = await resp.read()
            except (TimeoutError, aiohttp.ClientError):
                body_bytes = b""
            finally:
                resp.release()
            raise self.map_error(resp.status, resp.headers, body_bytes, deployment)
        return resp

    def map_error(self, status: int, headers: Mapping[str, str], body: bytes, deployment: str) -> UpstreamError:
        message, code = _error_message(body, self.scrub)
        keep = {h: headers[h] for h in _KEEP_HEADERS if h in headers}
        if status in (401, 403):
            env = self.config.api_key_env or "its api_key_env"
            return UpstreamError(
                f"deployment {deployment!r} rejected Bastion's provider credentials ({status}): {message}. "
                f"Check the key in {env}.",
                status=502,
                code="upstream_auth_failed",
                upstream_status=status,
            )
        retryable = status in (408, 409, 429) or status >= 500
        client_status = status if 400 <= status < 600 else 502
        detail = f" (upstream code: {code})" if code else ""
        return UpstreamError(
            f"deployment {deployment!r} answered {status}: {message}{detail}",
            status=client_status,
            code=_STABLE_CODES.get(status, "upstream_server_error" if status >= 500 else "upstream_rejected"),
            headers=keep,
            upstream_status=status,
            retryable=retryable,
        )
