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

Each is replaced by ``[redacted]``. It runs on error paths only, and costs what the text could match:
configured secrets are plain substring searches, and each generic rule (compiled once, at import) runs
only on a text that holds one of its trigger words. The secrets are collected once per config load (and
again only when a provider reads a key it had not seen).

:func:`register` merges a config's secrets into the process's scrubber, which code without the config
(the stream relay, the log record) reaches through :func:`scrub`. A secret, once registered, stays
scrubbed for the life of the process.
"""

from __future__ import annotations

import base64
import os
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

if TYPE_CHECKING:
    from bastion.config.model import BastionConfig

MARK = "[redacted]"

MIN_SECRET = 8  # shorter configured values are not treated as secrets (they would redact ordinary words)
MIN_PASSWORD = 4  # a URL password is a secret from this length (shorter ones are left to the URL rule)
_SCAN = 8192  # characters of a message scanned by ``excerpt`` (a longer one is cut first, at a token edge)

_KEY = r"A-Za-z0-9_\-"
_CRED_HEADERS = re.compile(r"auth|key|token|secret|passw|cookie|signature|credential", re.I)
_MASK_CHARS = ("**", "•", "…", "...")
# A token with a run of mask characters in it: "****abcd", "sk-proj-abc…wxyz" (tried once per token).
_MASKED = re.compile(rf"(?<![{_KEY}])[{_KEY}]*(?:[*•]{{2,}}|…|\.{{3,}})[{_KEY}]*")


@dataclass(frozen=True, slots=True)
class _Rule:
    """One generic shape of a credential. It only runs when its text holds one of ``triggers`` (lower
    case), so a message pays for the rules it could match; group 1, when ``keep``, stays (a header name)."""

    triggers: tuple[str, ...]
    pattern: re.Pattern[str]
    keep: bool = False

    def apply(self, text: str) -> str:
        return self.pattern.sub((lambda m: m.group(1) + MARK) if self.keep else MARK, text)


_TOKEN = r"[A-Za-z0-9\-._~+/]"
_RULES: tuple[_Rule, ...] = (
    # userinfo in a URL: the scheme and host stay
    _Rule(("://",), re.compile(r"\b([a-z][a-z0-9+.\-]{0,15}://)[^\s/?#@\"'<>]+(?=@)", re.I), keep=True),
    # header-shaped values (raw, JSON or Python-dict echoes); an auth scheme word goes with the value
    _Rule(("authorization", "api-key", "x-auth-token", "cookie"), re.compile(
        r"\b((?:(?:proxy-)?authorization|x-api-key|api-key|x-goog-api-key|x-auth-token|set-cookie|cookie)"
        r"[\"']?\s*[:=]\s*[\"']?)(?:(?:bearer|basic|token|digest)\s+)?[^\s\"',;}\]]+", re.I), keep=True),
    # assignments and query parameters: api_key=…, "password": "…", ?key=…
    _Rule(("key", "token", "secret", "passw", "sig"), re.compile(
        r"(\b(?:api[_-]?key|apikey|access[_-]?token|auth[_-]?token|refresh[_-]?token|client[_-]?secret"
        r"|secret[_-]?(?:access[_-]?)?key|password|passwd)[\"']?\s*[:=]\s*[\"']?"
        r"|[?&;](?:key|token|sig|signature|secret)=)[^\s\"'&,;}\]#]+", re.I), keep=True),
    # bearer tokens: a word that looks like one (8+ characters with a digit, or 20+)
    _Rule(("bearer",), re.compile(
        rf"\b(bearer\s+)(?={_TOKEN}{{8}})(?:{_TOKEN}*[0-9]{_TOKEN}*|{_TOKEN}{{20,}})=*", re.I), keep=True),
    # vendor keys, whole or masked: sk-…, sk-ant-…, sk-proj-…, and other providers' prefixes
    _Rule(("sk-",), re.compile(
        rf"\bsk-(?:ant-|proj-|svcacct-|admin-|or-v1-)?(?:[{_KEY}]{{16,}}|[{_KEY}]{{0,24}}(?:[*•]+|…|\.{{3}})[{_KEY}]*)")),
    _Rule(("gsk_", "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "hf_", "r8_", "pplx-", "xai-", "nvapi-", "glpat-"),
          re.compile(rf"\b(?:gsk|ghp|gho|ghu|ghs|ghr|hf|r8|pplx|xai|nvapi|glpat)[_-][{_KEY}]{{20,}}")),
    _Rule(("github_pat_",), re.compile(r"\bgithub_pat_[A-Za-z0-9_]{20,}")),
    _Rule(("aiza",), re.compile(r"\bAIza[0-9A-Za-z_\-]{35}")),
    _Rule(("xox",), re.compile(r"\bxox[abposr]-[A-Za-z0-9\-]{10,}")),
    _Rule(("akia", "asia", "abia", "acca"), re.compile(r"\b(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}\b")),
    # JWTs
    _Rule(("eyj",), re.compile(r"\beyJ[A-Za-z0-9_\-]{5,}\.eyJ[A-Za-z0-9_\-]{5,}\.[A-Za-z0-9_\-]*")),
    # any token with a run of 3+ mask characters and something of a key beside it: ab****, ****abcd
    _Rule(("***", "•••"), re.compile(
        rf"(?<![{_KEY}])[{_KEY}]{{2,}}[*•]{{3,}}[{_KEY}]*|(?<![{_KEY}*•])[*•]{{3,}}[{_KEY}]{{2,}}")),
)


def _variants(secret: str) -> set[str]:
    """How a secret may be written: as is, and URL-quoted."""
    return {secret, quote(secret, safe="")}


class Scrubber:
    """Removes credentials from text; ``scrubber(text)`` returns the text with each one replaced by MARK."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._secrets: frozenset[str] = frozenset()
        self._literals: tuple[str, ...] = ()  # every written form, longest first
        self._suffixes: frozenset[str] = frozenset()  # last 4 characters, as masked forms keep them
        self._prefixes: tuple[str, ...] = ()  # first 8 characters
        self.add(*secrets)

    @property
    def secrets(self) -> frozenset[str]:
        return self._secrets

    def add(self, *secrets: str | None) -> None:
        """Know more secrets (no-op for ones already known, or shorter than MIN_PASSWORD)."""
        new = {s for s in secrets if s and s not in self._secrets and len(s) >= MIN_PASSWORD}
        if not new:
            return
        with self._lock:
            merged = self._secrets | new
            long = [s for s in merged if len(s) >= 12]  # only these have masked forms worth matching
            self._literals = tuple(sorted({v for s in merged for v in _variants(s)}, key=len, reverse=True))
            self._suffixes = frozenset(s[-4:] for s in long)
            self._prefixes = tuple({s[:8] for s in long})
            self._secrets = merged

    def __call__(self, text: str) -> str:
        if not text:
            return text
        for secret in self._literals:
            if secret in text:
                text = text.replace(secret, MARK)
        if self._suffixes and any(m in text for m in _MASK_CHARS):
            text = _MASKED.sub(self._masked, text)
        low = text.lower()
        for rule in _RULES:
            if any(t in low for t in rule.triggers):
                text = rule.apply(text)
        return text

    def _masked(self, m: re.Match[str]) -> str:
        token = m.group()
        return MARK if token[-4:] in self._suffixes or token.startswith(self._prefixes) else token

    def excerpt(self, text: str, limit: int = 1000) -> str:
        """At most ``limit`` characters of ``text``, scrubbed. A long text is cut before scanning, at the
        last whitespace, so that no part of a secret is left that its whole form would have caught."""
        if len(text) > _SCAN:
            text = text[:_SCAN]
            edge = max(text.rfind(" "), text.rfind("\n"), text.rfind("\t"))
            text = text[: edge + 1] if edge >= 0 else ""
        out = self(text)
        return out if len(out) <= limit else out[:limit] + "…"

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
    return bool(_CRED_HEADERS.search(name)) or Scrubber()(value) != value


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
            _, user, password = split_userinfo(p.base_url)
            if password and len(password) >= MIN_PASSWORD:
                found.add(password)
                found.add(base64.b64encode(f"{user or ''}:{password}".encode()).decode())  # as Basic auth
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


def excerpt(text: str, limit: int = 1000) -> str:
    """An upstream's words for a message: scrubbed, at most ``limit`` characters (see Scrubber.excerpt)."""
    return _PROCESS.excerpt(text, limit)


__all__ = ["MARK", "Scrubber", "config_secrets", "excerpt", "process_scrubber", "register", "safe_url", "scrub",
           "split_userinfo"]
