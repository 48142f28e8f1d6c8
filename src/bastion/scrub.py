"""Remove credentials from text that leaves the gateway: error messages for clients and the request log.

Upstreams quote what they were sent. OpenAI's 401 names the key ("Incorrect API key provided: sk-proj-****
abcd"), some OpenAI-compatible servers echo the whole key or the ``Authorization`` header, and a connection
error names the URL, password included. Every message built from upstream text or a provider URL passes
through a :class:`Scrubber` before it becomes an error, a log field or a line of output.

A scrubber knows two kinds of secret:

- the configured ones (:func:`config_secrets`): the values of the environment variables named by
  ``providers.*.api_key_env``, provider ``headers`` that carry credentials, and passwords in ``base_url``.
  Each is removed wherever it appears, and so are its masked forms (``****abcd``, ``sk-pro…abcd``);
- the generic shapes of a credential: ``sk-…`` keys and other vendors' key prefixes, bearer tokens,
  ``Authorization:``/``x-api-key:`` header values, AWS access key ids, ``api_key=``/``key=`` parameters,
  JWTs, any token with a run of mask characters, and the userinfo of ``scheme://user:password@host``
  (the host is kept).

Each is replaced by ``[redacted]``. It runs on error paths only; two compiled patterns, built once per
config load (and again only if a provider reads a key it had not seen).

:func:`register` merges a config's secrets into the process's scrubber, which code without the config
(the stream relay, the log record) reaches through :func:`scrub`. A secret, once registered, stays
scrubbed for the life of the process.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

if TYPE_CHECKING:
    from bastion.config.model import BastionConfig

MARK = "[redacted]"

MIN_SECRET = 8  # shorter configured values are not treated as secrets (they would redact ordinary words)
MIN_PASSWORD = 4  # a URL password is a secret whatever its length; shorter than this it is left to the URL rule

_KEY = r"A-Za-z0-9_\-"
_MASK = r"(?:[*•]{2,}|…|\.{3,})"
_CRED_HEADERS = re.compile(r"auth|key|token|secret|passw|cookie|signature|credential", re.I)

# The generic shapes of a credential. ``(?P<keep>…)`` marks a prefix that stays (a scheme, a header name).
_RULES: tuple[str, ...] = (
    # userinfo in a URL: keep the scheme and host
    r"(?P<keep>\b[a-z][a-z0-9+.\-]*://)[^\s/?#@\"'<>]+(?=@)",
    # header-shaped values (raw, JSON or Python-dict echoes); an auth scheme word goes with the value
    r"(?i:(?P<keep>\b(?:(?:proxy-)?authorization|x-api-key|api-key|x-goog-api-key|x-auth-token|set-cookie"
    r"|cookie)[\"']?\s*[:=]\s*[\"']?))(?i:(?:bearer|basic|token|digest)\s+)?[^\s\"',;}\]]+",
    # assignments and query parameters: api_key=…, ?key=…, "password": "…"
    r"(?i:(?P<keep>\b(?:api[_-]?key|apikey|access[_-]?token|auth[_-]?token|refresh[_-]?token|client[_-]?secret"
    r"|secret[_-]?(?:access[_-]?)?key|password|passwd)[\"']?\s*[:=]\s*[\"']?|[?&;](?:key|token|sig|signature|secret)=))"
    r"[^\s\"'&,;}\]#]+",
    # bearer tokens (a word that looks like a token: 8+ characters with a digit, or 20+)
    r"(?i:(?P<keep>\bbearer\s+))(?=[A-Za-z0-9\-._~+/]{8})"
    r"(?:[A-Za-z0-9\-._~+/]*[0-9][A-Za-z0-9\-._~+/]*|[A-Za-z0-9\-._~+/]{20,})=*",
    # vendor keys, whole or masked (sk-…, sk-ant-…, sk-proj-…)
    rf"\bsk-(?:ant-|proj-|svcacct-|admin-|or-v1-)?(?:[{_KEY}]{{16,}}|[{_KEY}]{{0,24}}{_MASK}[{_KEY}]*)",
    rf"\b(?:gsk|ghp|gho|ghu|ghs|ghr|hf|r8|pplx|xai|nvapi|glpat)[_-][{_KEY}]{{20,}}",
    r"\bgithub_pat_[A-Za-z0-9_]{20,}",
    r"\bAIza[0-9A-Za-z_\-]{35}",
    r"\bxox[abposr]-[A-Za-z0-9\-]{10,}",
    r"\b(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}\b",
    # JWTs
    r"\beyJ[A-Za-z0-9_\-]{5,}\.eyJ[A-Za-z0-9_\-]{5,}\.[A-Za-z0-9_\-]*",
    # any token with a run of mask characters and something of a key beside it: sk-proj-****abcd, ****abcd
    rf"(?:[{_KEY}]{{2,}}[*•]{{3,}}[{_KEY}]*|[*•]{{3,}}[{_KEY}]{{2,}})",
)
_GENERIC = re.compile("|".join(f"(?P<r{i}>{rule.replace('(?P<keep>', f'(?P<k{i}>')})" for i, rule in enumerate(_RULES)))


def _generic_sub(m: re.Match[str]) -> str:
    keep = "k" + (m.lastgroup or "r")[1:]
    prefix = m.group(keep) if keep in m.re.groupindex else None
    return (prefix or "") + MARK


def _secret_pattern(secrets: Iterable[str]) -> re.Pattern[str] | None:
    """The configured secrets, whole, URL-quoted, and in masked forms that keep a prefix or the last 4."""
    alts: set[str] = set()
    for s in secrets:
        alts.add(re.escape(s))
        q = quote(s, safe="")
        if q != s:
            alts.add(re.escape(q))
        if len(s) >= 12:
            alts.add(rf"[{_KEY}]*{_MASK}[{_KEY}]*?{re.escape(s[-4:])}(?![{_KEY}])")
            alts.add(rf"{re.escape(s[:8])}[{_KEY}]*{_MASK}[{_KEY}]*")
    if not alts:
        return None
    return re.compile("|".join(sorted(alts, key=len, reverse=True)))


class Scrubber:
    """Removes credentials from text; ``scrubber(text)`` returns the text with each one replaced by MARK."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._secrets: frozenset[str] = frozenset()
        self._pattern: re.Pattern[str] | None = None
        self.add(*secrets)

    @property
    def secrets(self) -> frozenset[str]:
        return self._secrets

    def add(self, *secrets: str | None) -> None:
        """Know more secrets (no-op, and no recompiling, for ones already known or too short)."""
        new = {s for s in secrets if s and s not in self._secrets and len(s) >= MIN_PASSWORD}
        if not new:
            return
        with self._lock:
            merged = self._secrets | new
            self._pattern = _secret_pattern(merged)
            self._secrets = merged

    def __call__(self, text: str) -> str:
        if not text:
            return text
        pattern = self._pattern
        if pattern is not None:
            text = pattern.sub(MARK, text)
        return _GENERIC.sub(_generic_sub, text)

    def value(self, value: Any) -> Any:
        """The strings inside a JSON-like value, scrubbed (an upstream body kept for debugging)."""
        if isinstance(value, str):
            return self(value)
        if isinstance(value, dict):
            return {k: self.value(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.value(v) for v in value]
        if isinstance(value, bytes):
            return self(value.decode("utf-8", "replace"))
        return value


def split_userinfo(url: str) -> tuple[str, str | None, str | None]:
    """``url`` without its userinfo, and the (percent-decoded) user and password it carried."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url, None, None
    userinfo, _, host = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    return urlunsplit(parts._replace(netloc=host)), unquote(user) or None, unquote(password) or None


def safe_url(url: str) -> str:
    """``url`` as it may be shown: its userinfo replaced by MARK, the host kept."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=f"{MARK}@{parts.netloc.rpartition('@')[2]}"))


def _looks_like_credential(name: str, value: str) -> bool:
    return bool(_CRED_HEADERS.search(name)) or _GENERIC.search(value) is not None


def config_secrets(config: BastionConfig, environ: Mapping[str, str] | None = None) -> set[str]:
    """Every secret a config names: provider keys (from the environment), credential headers, URL passwords."""
    env = os.environ if environ is None else environ
    found: set[str] = set()
    for p in config.providers.values():
        if p.api_key_env:
            key = env.get(p.api_key_env)
            if key and len(key) >= MIN_SECRET:
                found.add(key)
        for name, value in p.headers.items():
            if len(value) >= MIN_SECRET and _looks_like_credential(name, value):
                found.add(value)
                scheme, _, token = value.partition(" ")
                if token and scheme.isalpha() and len(token) >= MIN_SECRET:
                    found.add(token)  # "Bearer <token>": the token alone too
        if p.base_url:
            _, _, password = split_userinfo(p.base_url)
            if password and len(password) >= MIN_PASSWORD:
                found.add(password)
    return found


_PROCESS = Scrubber()


def register(config: BastionConfig, environ: Mapping[str, str] | None = None) -> Scrubber:
    """Add a config's secrets to the process's scrubber (once per config load) and return it."""
    _PROCESS.add(*config_secrets(config, environ))
    return _PROCESS


def process_scrubber() -> Scrubber:
    return _PROCESS


def scrub(text: str) -> str:
    """``text`` without credentials: the process's configured secrets and every generic shape."""
    return _PROCESS(text)


__all__ = ["MARK", "Scrubber", "config_secrets", "process_scrubber", "register", "safe_url", "scrub",
           "split_userinfo"]
