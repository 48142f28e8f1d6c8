"""Text helpers shared by assertions and quality figures: normalisation, sentences, content words."""

from __future__ import annotations

import re
import unicodedata

_SPACE = re.compile(r"\s+")
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")
_WORD = re.compile(r"\w+")

STOPWORDS = frozenset("""
a about above after again against all also am an and any are as at be because been before being below
between both but by can could did do does doing down during each few for from further had has have having he
her here hers herself him himself his how i if in into is it its itself just me more most my myself no nor not
now of off on once only or other our ours ourselves out over own same she should so some such than that the
their theirs them themselves then there these they this those through to too under until up very was we were
what when where which while who whom why will with would you your yours yourself yourselves
""".split())


def normalize(text: str) -> str:
    """Unicode NFKC, case-folded, punctuation removed, whitespace collapsed: what ``equals`` compares."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = "".join(ch for ch in text if not unicodedata.category(ch).startswith("P"))
    return _SPACE.sub(" ", text).strip()


def sentences(text: str) -> list[str]:
    """Split prose into sentences (on . ! ? followed by space, and on newlines); empty pieces dropped."""
    return [s.strip() for s in _SENTENCE.split(text) if s and s.strip()]


def content_words(text: str) -> set[str]:
    """Lower-cased words that carry meaning: not stopwords, and at least 3 letters or containing a digit."""
    words = _WORD.findall(unicodedata.normalize("NFKC", text).casefold())
    return {w for w in words if w not in STOPWORDS and (len(w) >= 3 or any(c.isdigit() for c in w))}


def word_count(text: str) -> int:
    return len(_WORD.findall(text))
