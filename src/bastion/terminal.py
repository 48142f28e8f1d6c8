"""Printing data Bastion did not write (tenant, user and session names, model names, answers, error
messages) on an operator's terminal without letting it drive the terminal.

A tenant picks its ``user`` string; printed raw, ``"alice\\x1b[2K\\rFAKE LINE\\n"`` erases the row it sits
in, forges a log line and moves the cursor, and a bidi override (U+202E) reorders what the operator reads.
Every such character is shown as an escape instead (``\\x1b``, ``\\r``, ``\\u202e``): C0 and C1 controls,
ESC, DEL, Unicode format characters (bidi embeddings, overrides and isolates, zero-width spaces and
joiners, the BOM, tag characters), line and paragraph separators, invisible filler letters and lone
surrogates.

- ``visible(s)``: one cell or value; newlines and tabs are escaped too (a row stays one line).
- ``visible_text(s)``: a block of text (a diff, a prompt); newlines and tabs are kept.
- ``json_text(s)``: serialised JSON; the characters a JSON encoder may leave raw (DEL, C1, format
  characters, U+2028/9) become ``\\uXXXX`` escapes, so the decoded value is unchanged.
- ``table(rows, columns)``: the CLI's aligned table, every cell through ``visible``.
- ``SafeStdout``: the safety net ``bastion.cli.main`` puts on stdout, ``visible_text`` on every write.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from typing import Any, TextIO

# Format (bidi, zero-width, tags), controls, surrogates, line/paragraph separators.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
# Letters that draw nothing (Hangul fillers, Khmer inherent vowels) and the combining grapheme joiner.
_INVISIBLE = frozenset("\u034f\u115f\u1160\u17b4\u17b5\u3164\uffa0")
_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_CANDIDATE = re.compile(r"[^\x20-\x7e]")  # printable ASCII is always safe: only the rest is looked at
_CANDIDATE_TEXT = re.compile(r"[^\x20-\x7e\n\t]")


def _unsafe(ch: str) -> bool:
    return ch in _INVISIBLE or unicodedata.category(ch) in _UNSAFE_CATEGORIES


def _escape(ch: str) -> str:
    if ch in _SHORT:
        return _SHORT[ch]
    cp = ord(ch)
    return f"\\x{cp:02x}" if cp < 0x100 else f"\\u{cp:04x}" if cp < 0x10000 else f"\\U{cp:08x}"


def _sub(m: re.Match[str]) -> str:
    ch = m.group()
    return _escape(ch) if _unsafe(ch) else ch


def visible(value: object) -> str:
    """``str(value)`` with every control, format and invisible character (newlines too) shown escaped."""
    return _CANDIDATE.sub(_sub, value if isinstance(value, str) else str(value))


def visible_text(text: str) -> str:
    """Like ``visible`` but keeps newlines and tabs: for blocks of text (diffs, prompts, messages)."""
    return _CANDIDATE_TEXT.sub(_sub, text)


def _json_sub(m: re.Match[str]) -> str:
    ch = m.group()
    if not _unsafe(ch):
        return ch
    cp = ord(ch)
    if cp < 0x10000:
        return f"\\u{cp:04x}"
    cp -= 0x10000
    return f"\\u{0xD800 + (cp >> 10):04x}\\u{0xDC00 + (cp & 0x3FF):04x}"


def json_text(serialised: str) -> str:
    """Serialised JSON with the unsafe characters an encoder leaves raw written as ``\\uXXXX`` escapes.

    Outside strings JSON has no such characters, so the result decodes to exactly the same value.
    """
    return _CANDIDATE_TEXT.sub(_json_sub, serialised)


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """Rows as an aligned table under a header; every cell escaped with ``visible`` (one row, one line)."""
    cells = [[("" if r.get(c) is None else visible(r.get(c))) for c in columns] for r in rows]
    header = [visible(c) for c in columns]
    widths = [max([len(h)] + [len(row[i]) for row in cells]) for i, h in enumerate(header)]

    def line(vals: list[str]) -> str:
        return "  ".join(v.ljust(w) for v, w in zip(vals, widths, strict=True)).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in cells])


class SafeStdout:
    """A text stream that writes ``visible_text`` of what it is given (JSON already safe passes unchanged)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, s: str) -> int:
        self.stream.write(visible_text(s))
        return len(s)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)
