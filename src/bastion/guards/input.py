"""Input scanning of user turns and untrusted content: normalisation, hidden characters, encoded payloads,
and instruction-override heuristics. Pure Python and fast (a 2,000-token input in well under a millisecond
for these rules; the trained classifier is separate, ``classifier.py``).

``scan_input`` returns a score in [0, 1] (the strongest signal) and the reasons: which rule fired, on
which span of the *original* text, so that logs and reviewers can see exactly what was flagged.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import re
import unicodedata
from dataclasses import dataclass, field

# Characters that render as nothing (or reorder text) and are used to hide instructions from humans.
_ZERO_WIDTH = ("\u200b\u200c\u200d\u2060\ufeff\u180e\u2061\u2062\u2063\u2064"
               "\u00ad\u034f\u115f\u1160\u3164\uffa0")  # soft hyphen, grapheme joiner, Hangul fillers
_BIDI = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f"
_HIDDEN = re.compile(f"[{_ZERO_WIDTH}{_BIDI}\U000e0000-\U000e007f]")
_TAGS = re.compile("[\U000e0000-\U000e007f]+")

_OVERRIDE_RULES: tuple[tuple[str, float, str], ...] = (
    ("override.ignore_previous", 0.9,
     r"\b(ignore|disregard|forget|skip|override|bypass)\b[^.\n]{0,40}\b(previous|prior|above|earlier|preceding|"
     r"all|any|your|the|system|initial|original)\b[^.\n]{0,30}\b(instructions?|prompts?|rules?|directions?|"
     r"guidelines?|context|messages?|constraints?)\b"),
    ("override.new_instructions", 0.75,
     r"\b(new|updated|real|actual|true)\s+(instructions?|task|system\s+prompt|rules?)\s*[:\-]"),
    ("override.role_change", 0.6,
     r"\b(you\s+are\s+now|from\s+now\s+on\s*,?\s+you|act\s+as\s+(an?\s+)?(unrestricted|unfiltered|evil|jailbroken)|"
     r"pretend\s+(to\s+be|you\s+are)\s+(an?\s+)?(unrestricted|unfiltered|different))\b"),
    ("override.jailbreak", 0.8,
     r"\b(developer\s+mode|jailbreak|jailbroken|\bDAN\b|do\s+anything\s+now|no\s+restrictions|"
     r"without\s+(any\s+)?(restrictions|filters|limitations))\b"),
    ("exfil.system_prompt", 0.8,
     r"\b(reveal|show|print|repeat|output|tell\s+me|leak|dump|display)\b[^.\n]{0,30}\b(your|the)\s+"
     r"(system\s+prompt|initial\s+prompt|hidden\s+(instructions?|prompt)|instructions\s+above|"
     r"prompt\s+above|developer\s+message)"),
    ("exfil.send_data", 0.7,
     r"\b(send|post|forward|exfiltrate|upload|email)\b[^.\n]{0,40}\b(to|at)\b[^.\n]{0,20}(https?://|www\.|@)"),
    ("delimiter.fake_turn", 0.7,
     r"(^|\n)\s*(#{2,}\s*)?(system|assistant|developer)\s*:|<\|?(im_start|im_end|system|endoftext)\|?>|"
     r"\[/?(INST|SYS)\]|</?(system|instructions?)>"),
)
_COMPILED = tuple((name, score, re.compile(rx, re.IGNORECASE)) for name, score, rx in _OVERRIDE_RULES)
# Words one of which must be present for a rule to be worth running (a cheap prefilter on lowercase text).
_TRIGGERS: dict[str, tuple[str, ...]] = {
    "override.ignore_previous": ("ignore", "disregard", "forget", "skip", "override", "bypass"),
    "override.new_instructions": ("instruction", "task", "prompt", "rule"),
    "override.role_change": ("you are now", "from now on", "act as", "pretend"),
    "override.jailbreak": ("developer mode", "jailbr", "dan", "anything now", "restriction", "filter", "limitation"),
    "exfil.system_prompt": ("prompt", "instruction", "developer message"),
    "exfil.send_data": ("http", "www.", "@"),
    "delimiter.fake_turn": ("system", "assistant", "developer", "<|", "[inst", "[sys", "<instruction"),
}


def _rules_for(lower: str) -> list[tuple[str, float, re.Pattern[str]]]:
    return [r for r in _COMPILED if any(w in lower for w in _TRIGGERS[r[0]])]

_B64 = re.compile(r"(?<![A-Za-z0-9+/=])[A-Za-z0-9+/]{24,}={0,2}(?![A-Za-z0-9+/=])")
_HEX = re.compile(r"\b(?:[0-9a-fA-F]{2}){16,}\b")
_ROT13_HINT = re.compile(r"\b(vtaber|cerivbhf|vafgehpgvbaf|flfgrz|cebzcg|erirny)\b", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Reason:
    rule: str
    score: float
    start: int
    end: int
    excerpt: str

    def as_dict(self) -> dict[str, object]:
        return {"rule": self.rule, "score": self.score, "span": [self.start, self.end], "excerpt": self.excerpt}


@dataclass(slots=True)
class InputVerdict:
    score: float = 0.0
    reasons: list[Reason] = field(default_factory=list)
    normalized: str = ""

    def add(self, reason: Reason) -> None:
        self.reasons.append(reason)
        self.score = max(self.score, reason.score)


def strip_hidden(text: str) -> tuple[str, list[tuple[int, int]]]:
    """The text without invisible characters, and the spans (in ``text``) that were removed."""
    spans = [(m.start(), m.end()) for m in _HIDDEN.finditer(text)]
    return (_HIDDEN.sub("", text) if spans else text), spans


def normalize(text: str) -> str:
    """NFKC (folds full-width and compatibility forms, e.g. 'ｉｇｎｏｒｅ' -> 'ignore') without hidden characters,
    mixed-script words folded to Latin."""
    return fold_mixed_script(unicodedata.normalize("NFKC", strip_hidden(text)[0]))[0]


# Cyrillic and Greek letters that look like Latin ones. A word that mixes them with Latin letters
# ("іgnоrе" with Cyrillic і, о, е) is an evasion, not a language: such words are folded to Latin.
_CONFUSABLE = str.maketrans(
    "аеорсухіјѕԁһӏԛԝАВЕКМНОРСТХІЈЅΑΒΕΖΗΙΚΜΝΟΡΤΥΧαοικνρτυεχ",
    "aeopcyxijsdhlqwABEKMHOPCTXIJSABEZHIKMNOPTYXaoikvptuex")
_CONFUSABLE_CHARS = frozenset(chr(c) for c in _CONFUSABLE)
_MIXED_WORD = re.compile(r"[^\W\d_]{2,}")


def fold_mixed_script(text: str) -> tuple[str, int]:
    """``text`` with mixed Latin/lookalike words folded to Latin, and how many words were folded."""
    if text.isascii():
        return text, 0
    n = 0

    def fold(m: re.Match[str]) -> str:
        nonlocal n
        w = m.group(0)
        if any(c in _CONFUSABLE_CHARS for c in w) and any("a" <= c.lower() <= "z" for c in w):
            n += 1
            return w.translate(_CONFUSABLE)
        return w
    out = _MIXED_WORD.sub(fold, text)
    return out, n


def _excerpt(text: str, start: int, end: int, width: int = 80) -> str:
    s = text[max(0, start): min(len(text), end)]
    return s if len(s) <= width else s[: width - 1] + "…"


def _printable_ratio(s: str) -> float:
    return sum(ch.isprintable() or ch in "\n\t" for ch in s) / max(1, len(s))


def _decoded_payloads(text: str) -> list[tuple[str, int, int, str]]:
    """(encoding, start, end, decoded text) for chunks that decode to readable text."""
    out: list[tuple[str, int, int, str]] = []
    for m in _B64.finditer(text):
        raw = m.group(0)
        try:
            decoded = base64.b64decode(raw + "=" * (-len(raw) % 4), validate=False).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            continue
        if len(decoded) >= 12 and _printable_ratio(decoded) > 0.95 and re.search(r"[a-zA-Z]{3,}\s+[a-zA-Z]{2,}", decoded):
            out.append(("base64", m.start(), m.end(), decoded))
    for m in _HEX.finditer(text):
        try:
            decoded = bytes.fromhex(m.group(0)).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            continue
        if _printable_ratio(decoded) > 0.95 and " " in decoded:
            out.append(("hex", m.start(), m.end(), decoded))
    return out


def scan_input(text: str) -> InputVerdict:
    """Scan one user turn or untrusted document. Rules run on the normalised text and on decoded payloads."""
    v = InputVerdict()
    stripped, hidden = strip_hidden(text)
    if hidden:
        tags = _TAGS.findall(text)
        if tags:  # Unicode tag characters spell invisible ASCII: decode it and scan it too
            smuggled = "".join(chr(ord(c) - 0xE0000) for t in tags for c in t if 0x20 <= ord(c) - 0xE0000 < 0x7F)
            v.add(Reason("hidden.tag_characters", 0.9, hidden[0][0], hidden[-1][1], _excerpt(smuggled, 0, 80)))
            stripped += "\n" + smuggled
        else:
            v.add(Reason("hidden.invisible_characters", 0.5 if len(hidden) > 2 else 0.3, hidden[0][0],
                         hidden[-1][1], f"{len(hidden)} invisible characters"))
    norm = unicodedata.normalize("NFKC", stripped)
    if norm != stripped and re.search(r"[\uff01-\uff5e]", stripped):
        v.add(Reason("hidden.fullwidth_text", 0.3, 0, len(text), "full-width characters folded"))
    norm, folded = fold_mixed_script(norm)
    if folded:
        v.add(Reason("hidden.mixed_script", 0.3, 0, len(text), f"{folded} words mixing Latin and lookalike letters"))
    v.normalized = norm
    for name, score, rx in _rules_for(norm.lower()):
        m = rx.search(norm)
        if m:
            v.add(Reason(name, score, m.start(), m.end(), _excerpt(norm, m.start(), m.end())))
    for enc, start, end, decoded in _decoded_payloads(norm):
        inner = [(name, score) for name, score, rx in _rules_for(decoded.lower()) if rx.search(decoded)]
        if inner:
            v.add(Reason(f"encoded.{enc}.{inner[0][0]}", max(s for _, s in inner), start, end,
                         _excerpt(decoded, 0, 80)))
        else:
            v.add(Reason(f"encoded.{enc}", 0.2, start, end, _excerpt(decoded, 0, 80)))
    if _ROT13_HINT.search(norm):
        decoded = codecs.decode(norm, "rot13")
        for name, score, rx in _rules_for(decoded.lower()):
            m = rx.search(decoded)
            if m:
                v.add(Reason(f"encoded.rot13.{name}", score, m.start(), m.end(), _excerpt(decoded, m.start(), m.end())))
                break
    return v
