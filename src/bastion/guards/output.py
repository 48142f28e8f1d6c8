"""Output scanning: model output is untrusted. Secrets and PII are found and redacted, markdown images and
links to hosts that are not allow-listed are neutralised (the classic data-exfiltration channel: an image
URL carrying the conversation in its query string is fetched by the client without a click), and HTML /
script can be stripped where a route renders output.

Pure Python (``re``, ``ipaddress``, ``html.parser``), precompiled, with cheap literal prefilters so that a
rule whose trigger is absent costs nothing.

Streaming: ``StreamScanner`` emits text as it flows and holds back only what could still belong to a
finding. For any split of a text into chunks, the concatenated output equals ``redact(text,
scan_output(text))``. The scanner never cuts inside a regex match (valid or not) found in the text it holds,
keeps at least ``MIN_HOLD`` characters (longer than every bounded pattern), and holds from the start of any
unfinished long construct (markdown link/image, ``-----BEGIN`` key block, JWT, script block, tag) that
could still complete, up to that construct's maximum length.

Decisions: dotted quads preceded by ``v``/``version`` are version strings, not IPs, and loopback /
unspecified addresses are ignored; e-mail addresses at reserved example domains (``example.com``, ``.test``,
``.example``, ``.invalid``, ``.localhost``) are not PII, every other e-mail is redacted even in code samples;
cards need a 2-6 leading digit, 13-19 digits and a Luhn check; IBANs need mod-97; US SSNs need dashes.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from html.parser import HTMLParser
from urllib.parse import urlsplit

__all__ = ["ALL_KINDS", "DEFAULT_KINDS", "MIN_HOLD", "Finding", "StreamScanner", "redact", "scan_output",
           "strip_html"]


@dataclass(frozen=True, slots=True)
class Finding:
    kind: str
    start: int
    end: int
    text: str
    score: float
    replacement: str = ""

    def masked(self) -> str:
        """The matched text with all but its first 4 characters masked, for logs."""
        return self.text[:4] + "*" * max(0, len(self.text) - 4)

    def as_dict(self) -> dict[str, object]:
        return {"kind": self.kind, "span": [self.start, self.end], "text": self.masked(), "score": self.score}


# A validator returns None to reject the match, else the replacement text ("" means "[REDACTED:<kind>]").
Validator = Callable[[re.Match[str], "_Ctx"], "str | None"]


@dataclass(slots=True)
class _Ctx:
    allowed: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _Rule:
    kind: str
    rx: re.Pattern[str]
    score: float
    trigger: tuple[str, ...] | None  # lowercase literals, one of which must occur; None: digits needed
    validate: Validator | None = None
    group: str | None = None  # the finding is this group's span (the raw match span still guards cuts)
    pre: re.Pattern[str] | None = None  # must occur in every raw match: the rule is skipped without it


def _ok(_m: re.Match[str], _c: _Ctx) -> str | None:
    return ""


# --- validators ------------------------------------------------------------------------------------------

def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _v_card(m: re.Match[str], _c: _Ctx) -> str | None:
    digits = re.sub(r"\D", "", m.group(0))
    if not 13 <= len(digits) <= 19 or digits[0] not in "23456" or len(set(digits)) == 1:
        return None
    return "" if _luhn(digits) else None


def _v_iban(m: re.Match[str], _c: _Ctx) -> str | None:
    s = m.group(0).replace(" ", "")
    if not 15 <= len(s) <= 34:
        return None
    moved = s[4:] + s[:4]
    num = "".join(str(int(ch, 36)) for ch in moved)
    return "" if int(num) % 97 == 1 else None


_VERSION_CTX = re.compile(r"(?:\bv|version|ver\.?|release|build)\s*$", re.IGNORECASE)


def _v_ipv4(m: re.Match[str], _c: _Ctx) -> str | None:
    before = m.string[max(0, m.start() - 10):m.start()]
    if _VERSION_CTX.search(before):
        return None
    try:
        ip = ipaddress.IPv4Address(m.group(0))
    except ValueError:
        return None
    if ip.is_loopback or ip.is_unspecified or str(ip) == "255.255.255.255":
        return None
    return ""


def _v_ipv6(m: re.Match[str], _c: _Ctx) -> str | None:
    s = m.group(0)
    if not any(ch.isdigit() for ch in s) or s.count(":") < 2:
        return None
    try:
        ip = ipaddress.IPv6Address(s.split("%", 1)[0])
    except ValueError:
        return None
    if ip.is_loopback or ip.is_unspecified:
        return None
    return ""


_RESERVED_DOMAINS = ("example.com", "example.org", "example.net")
_RESERVED_TLDS = (".test", ".example", ".invalid", ".localhost")


def _v_email(m: re.Match[str], _c: _Ctx) -> str | None:
    domain = m.group(0).rsplit("@", 1)[1].lower()
    if domain in _RESERVED_DOMAINS or any(domain.endswith("." + d) for d in _RESERVED_DOMAINS):
        return None
    if domain.endswith(_RESERVED_TLDS):
        return None
    return ""


def _v_phone(m: re.Match[str], _c: _Ctx) -> str | None:
    n = sum(ch.isdigit() for ch in m.group(0))
    return "" if 10 <= n <= 15 else None


def _v_assignment(m: re.Match[str], _c: _Ctx) -> str | None:
    v = m.group("v")
    return "" if any(ch.isdigit() for ch in v) and any(ch.isalpha() for ch in v) else None


def host_allowed(host: str, allowed: Iterable[str]) -> bool:
    """Exact hosts and ``*.example.com`` (any subdomain of example.com, not example.com itself)."""
    host = host.lower().rstrip(".")
    for pat in allowed:
        pat = pat.lower().rstrip(".")
        if pat.startswith("*."):
            if host.endswith(pat[1:]) and len(host) > len(pat) - 1:
                return True
        elif host == pat:
            return True
    return False


_SAFE_SCHEMES = {"", "http", "https", "ftp", "mailto", "tel"}


def _url_host(url: str) -> tuple[bool, str]:
    """(allowed-needed, host): whether the URL points at a host at all, and which."""
    url = url.strip().strip("<>")
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
    except ValueError:
        return True, "invalid-url"
    scheme = parts.scheme.lower()
    if scheme not in _SAFE_SCHEMES:
        return True, scheme  # javascript:, vbscript:, data: ... are never allowed in links/images
    if scheme in ("mailto", "tel"):
        return False, ""
    if not host:
        return False, ""  # relative link or anchor: stays on the page's own origin
    return True, host


def _blocked_host(url: str, c: _Ctx) -> str | None:
    needs, host = _url_host(url)
    if not needs or host_allowed(host, c.allowed):
        return None
    return host


def _v_md_image(m: re.Match[str], c: _Ctx) -> str | None:
    host = _blocked_host(m.group("url"), c)
    return None if host is None else f"[image removed: {host}]"


def _v_md_link(m: re.Match[str], c: _Ctx) -> str | None:
    host = _blocked_host(m.group("url"), c)
    return None if host is None else m.group("text")


def _v_md_dest(m: re.Match[str], c: _Ctx) -> str | None:
    return None if _blocked_host(m.group("url"), c) is None else "]"


def _v_md_refdef(m: re.Match[str], c: _Ctx) -> str | None:
    host = _blocked_host(m.group("url"), c)
    return None if host is None else f"{m.group('lead')}[{m.group('label')}]: [link removed: {host}]"


def _v_autolink(m: re.Match[str], c: _Ctx) -> str | None:
    host = _blocked_host(m.group("url"), c)
    return None if host is None else f"[link removed: {host}]"


def _v_strip(_m: re.Match[str], _c: _Ctx) -> str | None:
    return "\x00"  # marker: remove the span entirely


# --- rules ---------------------------------------------------------------------------------------------

_I = re.IGNORECASE
_TOK = r"A-Za-z0-9_\-"
_URL = r"(?P<url>[^\s()<>\"]{1,2000})"
_TITLE = r"(?:[ \t]{1,8}\"[^\"\n)]{0,200}\")?"

_RULES: tuple[_Rule, ...] = (
    # secrets
    _Rule("secret.private_key", re.compile(
        r"-----BEGIN[A-Z0-9 ]{0,40}PRIVATE KEY-----(?:[A-Za-z0-9+/=\s:,\-]{0,16000}?"
        r"-----END[A-Z0-9 ]{0,40}PRIVATE KEY-----|[A-Za-z0-9+/=\s:,\-]{0,16000})"), 1.0, ("-----begin",)),
    _Rule("secret.anthropic_key", re.compile(rf"sk-ant-(?<![{_TOK}]sk-ant-)[A-Za-z0-9]{{2,12}}-[{_TOK}]{{20,}}"),
          1.0, ("sk-ant-",)),
    _Rule("secret.openai_key", re.compile(
        rf"sk-(?<![{_TOK}]sk-)(?:proj-|svcacct-|admin-)?[{_TOK}]{{20,}}"), 1.0, ("sk-",)),
    _Rule("secret.aws_access_key", re.compile(r"A(?<![A-Z0-9]A)(?:KIA|SIA|BIA|CCA)[A-Z0-9]{16}(?![A-Z0-9])"),
          0.95, ("akia", "asia", "abia", "acca")),
    _Rule("secret.aws_secret_key", re.compile(
        r"aws_?secret_?(?:access_?)?key[\"']?[ \t]{0,4}[:=][ \t]{0,4}[\"']?(?P<v>[A-Za-z0-9/+]{40})(?![A-Za-z0-9/+])",
        _I), 0.95, ("secret",), group="v"),
    _Rule("secret.github_token", re.compile(
        r"g(?<![A-Za-z0-9_]g)(?:h[pousr]_[A-Za-z0-9]{36,255}|ithub_pat_[A-Za-z0-9_]{22,255})"),
        1.0, ("gh", "github_pat_")),
    _Rule("secret.slack_token", re.compile(r"xox(?<![A-Za-z0-9]xox)[abposr]-[A-Za-z0-9-]{10,}"), 0.95, ("xox",)),
    _Rule("secret.google_api_key", re.compile(rf"AIza(?<![{_TOK}]AIza)[{_TOK}]{{35}}"), 0.9, ("aiza",)),
    _Rule("secret.stripe_key", re.compile(r"[sr]k_(?<![A-Za-z0-9_][sr]k_)(?:live|test)_[A-Za-z0-9]{16,}"),
          0.95, ("_live_", "_test_")),
    _Rule("secret.jwt", re.compile(
        rf"eyJ(?<![{_TOK}]eyJ)[{_TOK}]{{8,}}\.eyJ[{_TOK}]{{8,}}\.[{_TOK}]*"), 0.9, ("eyj",)),
    _Rule("secret.generic_bearer", re.compile(
        r"\bbearer[ \t]{1,4}(?P<v>[A-Za-z0-9._~+/\-]{20,}=*)", _I), 0.8, ("bearer",), group="v"),
    _Rule("secret.assignment", re.compile(
        r"\b(?:api[_-]?key|secret(?:[_-]?key)?|access[_-]?token|auth[_-]?token|token|password|passwd)"
        r"[\"']?[ \t]{0,4}[:=][ \t]{0,4}[\"']?(?P<v>[A-Za-z0-9_\-+/=.]{12,200})", _I), 0.6,
        ("key", "secret", "token", "passw"), _v_assignment, group="v"),
    # exfiltration through markdown
    _Rule("exfil.image", re.compile(
        rf"!\[(?P<text>[^\[\]\n]{{0,500}})\]\([ \t]{{0,8}}<?{_URL}>?{_TITLE}[ \t]{{0,8}}\)"), 0.9, ("![",),
        _v_md_image),
    _Rule("exfil.link", re.compile(
        rf"\[(?P<text>[^\[\]\n]{{0,500}})\]\([ \t]{{0,8}}<?{_URL}>?{_TITLE}[ \t]{{0,8}}\)"), 0.7, ("](",),
        _v_md_link),
    _Rule("exfil.link", re.compile(rf"\]\([ \t]{{0,8}}<?{_URL}>?{_TITLE}[ \t]{{0,8}}\)"), 0.7, ("](",),
          _v_md_dest),
    _Rule("exfil.link", re.compile(
        r"^(?P<lead> {0,3})\[(?P<label>[^\[\]\n]{1,500})\]:[ \t]{0,8}<?(?P<url>[^\s<>]{1,2000})>?", re.M),
        0.8, ("]:",), _v_md_refdef),
    _Rule("exfil.link", re.compile(r"<(?P<url>(?:https?|ftp)://[^\s<>]{1,2000})>", _I), 0.6, ("://",),
          _v_autolink),
    _Rule("exfil.image", re.compile(  # inline HTML images, which many markdown renderers let through
        r"<img\b[^>]{0,1000}?\bsrc[ \t\n]{0,8}=[ \t\n]{0,8}[\"']?(?P<url>[^\"'\s>]{1,2000})[^>]{0,1000}>", _I),
        0.9, ("<img",), _v_md_image),
    # html
    _Rule("html.script", re.compile(
        r"<(script|style)\b[^>]{0,500}>(?:[\s\S]{0,20000}?</\1\s*>|[\s\S]{0,20000})", _I), 1.0,
        ("<script", "<style"), _v_strip),
    _Rule("html.tag", re.compile(r"</?[A-Za-z][A-Za-z0-9-]{0,30}(?:\s[^<>]{0,1000})?/?>"), 0.3, ("<",),
          _v_strip),
    # PII
    _Rule("pii.email", re.compile(
        r"(?<![\w.%+-])[\w.%+-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63}){0,8}\.[A-Za-z]{2,24}(?![\w-])"),
        0.9, ("@",), _v_email),
    _Rule("pii.iban", re.compile(r"[A-Z](?<![A-Za-z0-9][A-Z])[A-Z]\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?(?![A-Za-z0-9])"),
          0.9, None, _v_iban),
    _Rule("pii.card", re.compile(
        r"\d(?<![\d.,-]\d)(?:\d{3}([ -]?)\d{4}\1\d{4}\1\d{4}(?:\1\d{1,3})?|\d{3}[ -]?\d{6}[ -]?\d{5}|\d{12,18})"
        r"(?![\d]|[.,-]\d)"), 0.95, None, _v_card),
    _Rule("pii.ssn_us", re.compile(
        r"\d(?<![\w-]\d)\d\d(?<!000)(?<!666)(?<!9\d\d)-\d\d(?<!00)-\d{4}(?<!0000)(?![\w-])"), 0.8, None),
    _Rule("pii.phone", re.compile(
        r"\+(?<![\w+.-]\+)(?:[1-9]\d{0,3}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{1,4}(?:[ .-]\d{1,4}){1,4}|[1-9]\d{9,14})"
        r"(?![\w]|[.-]\d)"), 0.7, ("+",), _v_phone),
    _Rule("pii.phone", re.compile(r"\((?<![\w+.-]\()\d{3}\)[ ]?\d{3}[.-]\d{4}(?![\w]|[.-]\d)"), 0.7, ("(",),
          _v_phone),
    _Rule("pii.phone", re.compile(r"\d(?<![\w+.(-]\d)\d\d[.-]\d{3}[.-]\d{4}(?![\w]|[.-]\d)"), 0.7, None, _v_phone),
    _Rule("pii.ipv4", re.compile(r"\d(?<![\w.]\d)\d{0,2}\.\d{1,3}\.\d{1,3}\.\d{1,3}(?![\w]|\.\d)"), 0.6, None,
          _v_ipv4),
    _Rule("pii.ipv6", re.compile(
        r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{1,4}|(?:\d{1,3}\.){3}\d{1,3})?(?:%[A-Za-z0-9]{1,16})?"
        r"(?![\w:])"), 0.6, (":",), _v_ipv6, pre=re.compile(r":[0-9A-Fa-f]{0,4}:")),
)

ALL_KINDS: frozenset[str] = frozenset(r.kind for r in _RULES)
# html.tag fires on any tag (<b>, <br>): opt-in, for routes that render HTML.
DEFAULT_KINDS: frozenset[str] = ALL_KINDS - {"html.tag"}
_PRIORITY = {id(r): i for i, r in enumerate(_RULES)}
_DIGIT = re.compile(r"\d")


@dataclass(frozen=True, slots=True)
class _Opener:
    """A long construct's start: while the text from the opener is still a viable prefix (and shorter than
    ``maxlen``) and no match covers it, a stream must not emit past it."""
    kinds: frozenset[str]
    rx: re.Pattern[str]
    prefix: re.Pattern[str]
    maxlen: int


_OPENERS: tuple[_Opener, ...] = (
    _Opener(frozenset({"exfil.image", "exfil.link"}), re.compile(r"^ {0,3}\[|!?\[|\]\(|<", re.M),
            re.compile(r" {0,3}!?\[[^\[\]\n]{0,500}(?:\](?:\([^)\n]{0,2300}|:[^\n]{0,2100})?)?|\]\([^)\n]{0,2300}|"
                       r"<(?:[A-Za-z][A-Za-z0-9+.\-]{0,10}(?::[^\s<>]{0,2010})?)?"), 2900),
    _Opener(frozenset({"exfil.image"}), re.compile(r"<img\b", _I), re.compile(r"<img\b[^>]{0,4100}", _I), 4100),
    _Opener(frozenset({"secret.private_key"}), re.compile(r"-----BEGIN"),
            re.compile(r"-----BEGIN[A-Z0-9 ]{0,60}-{0,5}"), 100),
    _Opener(frozenset({"secret.jwt"}), re.compile(rf"(?<![{_TOK}])eyJ"),
            re.compile(rf"eyJ[{_TOK}]{{0,20000}}(?:\.(?:e(?:y(?:J[{_TOK}]{{0,8}})?)?)?)?"), 20100),
    _Opener(frozenset({"html.script"}), re.compile(r"<(?:script|style)\b", _I),
            re.compile(r"<(?:script|style)\b[^>]{0,500}", _I), 520),
    _Opener(frozenset({"html.tag"}), re.compile(r"</?[A-Za-z]"),
            re.compile(r"</?[A-Za-z][A-Za-z0-9-]{0,30}(?:\s[^<>]{0,1000})?/?"), 1040),
)

# What a rule could start from or contain before its first whitespace (see StreamScanner._fast): digits,
# the punctuation of links, tags, phones and assignments, and the literal prefixes/keywords of secrets.
_SUSPECT = re.compile(  # applied to lowercased text
    r"[0-9@+()\[\]<>\"':=]|-----|key|secret|token|passw|bearer|sk-|sk_|rk_|eyj|akia|asia|abia|acca|aiza|"
    r"gh[pousr]_|github_pat_|xox|begin")
_SUSPECT_OVERLAP = 10  # a keyword may straddle two pieces: re-search this much of the already searched text

# What only a rule longer than SHORT_HOLD could start from (applied to lowercased text; see _hold).
_LONG_SUSPECT = re.compile(r"[@\[\]<]|-----|key|secret|token|passw|bearer|sk-|sk_|rk_|eyj|aiza|gh[pousr]_|"
                           r"github_pat_|xox|begin")
# Longer than every rule _LONG_SUSPECT does not cover: IPv6 with an embedded IPv4 and a zone (67), e-mail
# local part (64), IBAN (43), phone (40), card (23).
SHORT_HOLD = 72

# Longer than every bounded rule without an opener (e-mail: 64 + 1 + 63 before its first dot, AWS secret
# assignment ~70, IBAN 42): a stream holds at least this much, whatever ``hold_back`` says.
MIN_HOLD = 160


def _rules_for(kinds: frozenset[str], min_score: float = 0.0) -> tuple[_Rule, ...]:
    return tuple(r for r in _RULES if r.kind in kinds and r.score >= min_score)


def _scan(text: str, pos: int, rules: Sequence[_Rule], ctx: _Ctx,
          raw: list[tuple[int, int]] | None) -> list[Finding]:
    lower = text.lower() if pos == 0 else text[max(0, pos - 16):].lower()
    has_digit = _DIGIT.search(text, pos) is not None
    cands: list[tuple[int, int, int, Finding]] = []
    for rule in rules:
        if rule.trigger is None:
            if not has_digit:
                continue
        elif not any(t in lower for t in rule.trigger):
            continue
        if rule.pre is not None and rule.pre.search(text, pos) is None:
            continue
        for m in rule.rx.finditer(text, pos):
            if raw is not None:
                raw.append((m.start(), m.end()))
            rep = (rule.validate or _ok)(m, ctx)
            if rep is None:
                continue
            s, e = m.span(rule.group) if rule.group else m.span()
            cands.append((s, -(e - s), _PRIORITY[id(rule)],
                          Finding(rule.kind, s, e, text[s:e], rule.score, rep)))
    cands.sort(key=lambda c: c[:3])
    out: list[Finding] = []
    last_end = -1
    for s, _neg, _p, f in cands:
        if s >= last_end:
            out.append(f)
            last_end = f.end
    return out


def scan_output(text: str, *, allowed_hosts: Sequence[str] = (), kinds: set[str] | frozenset[str] | None = None,
                min_score: float = 0.0) -> list[Finding]:
    """Non-overlapping findings in ``text``, in order (leftmost wins, then longest, then rule order); rules
    scoring below ``min_score`` do not run."""
    ks = DEFAULT_KINDS if kinds is None else frozenset(kinds)
    return _scan(text, 0, _rules_for(ks, min_score), _Ctx(tuple(allowed_hosts)), None)


def redact(text: str, findings: Sequence[Finding]) -> str:
    """Replace each finding's span: secrets/PII by ``[REDACTED:<kind>]``, blocked images by ``[image removed:
    host]``, blocked links by their text, script blocks / tags by nothing. Findings must not overlap."""
    parts: list[str] = []
    last = 0
    for f in sorted(findings, key=lambda f: f.start):
        if f.start < last:
            continue
        parts.append(text[last:f.start])
        if f.replacement == "\x00":
            pass
        elif f.replacement or f.kind.startswith("exfil."):
            parts.append(f.replacement)
        else:
            parts.append(f"[REDACTED:{f.kind}]")
        last = f.end
    parts.append(text[last:])
    return "".join(parts)


class _TextOnly(HTMLParser):
    _SKIP = frozenset({"script", "style", "noscript", "template", "iframe", "object"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._SKIP:
            self.skip += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP and self.skip:
            self.skip -= 1

    def handle_data(self, data: str) -> None:
        if not self.skip:
            self.out.append(data)


def strip_html(text: str) -> str:
    """Text content only: tags, comments and script/style (and similar) blocks removed, entities decoded.
    The result is plain text; escape it again if it is inserted into HTML."""
    p = _TextOnly()
    p.feed(text)
    p.close()
    return "".join(p.out)


class StreamScanner:
    """Scan and redact streamed output. ``feed`` returns what is safe to emit now; ``finish`` flushes.

    ``redact_kinds`` limits which findings are rewritten (the others are only reported in ``findings``).
    The output, for any chunking, equals ``redact(text, scan_output(text, ...))`` of the whole text; see the
    module docstring for how much is held back (at least ``max(hold_back, MIN_HOLD)`` characters; output
    is released in steps of at least ``min_emit`` characters).
    """

    _CTX = 64  # emitted characters kept for look-behinds and ``^``

    def __init__(self, hold_back: int = 64, *, allowed_hosts: Sequence[str] = (),
                 kinds: set[str] | frozenset[str] | None = None, min_emit: int = 32,
                 redact_kinds: set[str] | frozenset[str] | None = None, min_score: float = 0.0) -> None:
        self.hold_back = max(hold_back, MIN_HOLD)
        self.short_hold = max(hold_back, SHORT_HOLD)
        self.min_emit = min_emit  # rescan only once this much is emittable: fewer rescans for tiny chunks
        ks = DEFAULT_KINDS if kinds is None else frozenset(kinds)
        self._rules = _rules_for(ks, min_score)
        self._redact = None if redact_kinds is None else frozenset(redact_kinds)  # None: every finding
        self._openers = tuple(o for o in _OPENERS if o.kinds & ks)
        self._ctx = _Ctx(tuple(allowed_hosts))
        self._prev = ""  # tail of already-emitted original text
        self._buf = ""
        self._offset = 0  # absolute position of _buf[0]
        self._searched = 0  # characters of _buf already searched for a _SUSPECT
        self._susp = -1  # index in _buf of the first _SUSPECT found, or -1
        self._no_space = -1  # a _fast limit known to have no whitespace before it in _buf (until _advance)
        self.findings: list[Finding] = []

    def _fast(self) -> str:
        """Emit prose up to the last whitespace before the first character or word a rule could start
        from (_SUSPECT: a digit, ``@``, ``+``, ``(``, ``[``, ``<``, ``-----``, ``bearer``, ``password``…).

        No match can lie inside that text (every rule needs one of _SUSPECT), and no match can straddle the
        cut: a match that spans whitespace shows a _SUSPECT character or word before its first whitespace.
        A match cannot start before the previous cut either: no match straddles any cut. So plain prose
        reaches the client a word at a time instead of ``hold_back`` characters late. The buffer is searched
        incrementally: each character once (plus a small overlap for keywords split across pieces)."""
        buf = self._buf
        if self._susp < 0:
            lo = max(0, self._searched - _SUSPECT_OVERLAP)
            m = _SUSPECT.search(buf[lo:].lower())
            self._searched = len(buf)
            if m is not None:
                self._susp = lo + m.start()
        limit = self._susp if self._susp >= 0 else len(buf)
        if limit == self._no_space:  # stuck at the same suspect: still no whitespace before it
            return ""
        c = max(buf.rfind(" ", 0, limit), buf.rfind("\n", 0, limit), buf.rfind("\t", 0, limit),
                buf.rfind("\r", 0, limit)) + 1
        if c <= 0:
            self._no_space = limit
            return ""
        emitted = buf[:c]
        self._advance(c)
        return emitted

    def _advance(self, n: int) -> None:
        """``n`` characters of the buffer were emitted."""
        emitted = self._buf[:n]
        self._offset += n
        self._no_space = -1
        self._prev = (self._prev + emitted)[-self._CTX:]
        self._buf = self._buf[n:]
        self._searched = max(0, self._searched - n)
        if self._susp >= 0:
            self._susp -= n
            if self._susp < 0:  # the suspect went out: look for the next one from the start
                self._searched = 0

    def _hold(self) -> int:
        """How much the normal path holds: ``hold_back``, or SHORT_HOLD when nothing in the last MIN_HOLD
        characters could belong to a rule longer than SHORT_HOLD (no ``@``, bracket, tag, key block or
        secret keyword): then only digit-shaped findings (cards, phones, IBANs, IPs) and e-mail local parts
        (at most 64 characters) can be in progress, and all fit in SHORT_HOLD."""
        if self.short_hold < self.hold_back and _LONG_SUSPECT.search(self._buf[-MIN_HOLD:].lower()) is None \
                and _LONG_SUSPECT.search(self._prev[-16:].lower()) is None:
            return self.short_hold
        return self.hold_back

    def _emit(self, final: bool, fast: str = "") -> str:
        """Scan the buffer and release what no match in progress can still reach (everything if final)."""
        hold = self.hold_back if final else self._hold()
        if not final and len(self._buf) <= hold + self.min_emit:
            return fast
        text = self._prev + self._buf
        base = len(self._prev)
        raw: list[tuple[int, int]] = []
        found = _scan(text, base, self._rules, self._ctx, raw)
        if final:
            cut = len(text)
        else:
            cut = len(text) - hold
            if cut <= base:
                return fast
            for op in self._openers:
                for m in op.rx.finditer(text, base):  # no endpos: an opener may straddle the cut
                    o = m.start()
                    if o >= cut:
                        break
                    if len(text) - o > op.maxlen or any(s <= o < e for s, e in raw):
                        continue
                    if op.prefix.fullmatch(text, o):
                        cut = min(cut, o)
                        break
            moved = True
            while moved:
                moved = False
                for s, e in raw:
                    if s < cut < e:
                        cut = s
                        moved = True
            if cut <= base:
                return fast
        kept = [f for f in found if f.end <= cut]
        out = redact(text[:cut], kept if self._redact is None else [f for f in kept if f.kind in self._redact])[base:]
        shift = self._offset - base
        self.findings.extend(Finding(f.kind, f.start + shift, f.end + shift, f.text, f.score, f.replacement)
                             for f in kept)
        self._advance(cut - base)
        return fast + out

    def feed(self, chunk: str) -> str:
        self._buf += chunk
        fast = self._fast()
        if len(self._buf) <= self.short_hold + self.min_emit:  # within even the shorter hold: nothing to scan
            return fast
        return self._emit(False, fast)

    def finish(self) -> str:
        out = self._emit(final=True)
        self._prev = ""
        return out
