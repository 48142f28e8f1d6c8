"""Refusal detection: whether a model's answer is a refusal ("I can't help with that"), so that a route can
fall back to another model (``guards.refusal``).

A heuristic on the answer's opening: the first ``WINDOW`` characters, normalised (curly quotes, markdown
emphasis, whitespace). Precompiled regexes, no model; microseconds per answer.

Decisions:

- A refusal is a first-person refusal clause (``I can't / cannot / won't / am unable to / am not able to /
  must decline`` + an action verb such as help, assist, provide, fulfil, answer) at the start of a sentence
  or after an apology / ``but`` / ``however`` / a dash, within the opening; or a fixed refusal formula
  (``I must decline``, ``not something I can help with``, ``I'm just an AI, it's not ...``, ``against my
  guidelines``). In a short answer (under ``SHORT`` characters) the clause may start anywhere, except
  right after a quotation mark (a quoted refusal is not the model's).
- Idioms and limitations are not refusals: ``I can't wait to help``, ``I can't help but notice``, ``I
  can't recommend it enough``, ``I can't tell you how glad I am``, ``I can't find any bug``, ``I can't
  guarantee``; nor are apologies without a refusal (``Sorry for the delay, here is the code``).
- ``As an AI, I don't ...`` and ``It is not appropriate to ...`` openings are weaker evidence (0.6, still
  above ``THRESHOLD``). ``As an AI, I don't hold opinions, but I can tell you ...`` is an answer, not a
  refusal: a fallback would not do better (XSTest's annotators split on these).
- An answer that refuses and then complies (``I can't do X, but here is how to Y:`` followed by a list or
  code, at least 600 characters) is not a refusal: its score is lowered below the threshold. A refusal
  clause that only appears late in a long answer (outside the opening) is never read.

Measured on the XSTest v2 human-labelled completions (GPT-4, Llama-2-70b-chat, Mistral-7B-Instruct, 450
answers each; ``scripts/eval_refusal.py``), split by a hash of the prompt (all three answers to a prompt in
the same half) into a dev half, on whose errors the patterns were tuned, and a held-out test half. Positives
are full refusals (``2_full_refusal``), negatives full compliance; partial refusals are left out:

    dev  (tuned on, 702 answers):  precision 0.978  recall 0.860  F1 0.915
    test (held out, 557 answers):  precision 0.995  recall 0.892  F1 0.941
      test by model: GPT-4 P 0.989 R 0.947; Llama-2 P 1.000 R 0.968; Mistral P 1.000 R 0.190
    partial refusals: 45% (dev) / 43% (test) flagged; counted as refusals, test P 0.996 R 0.813 F1 0.895

Precision is what matters for a fallback (a false positive costs a second model call). The recall lost is
mostly what XSTest counts as a refusal without any refusal wording: premise rejections ("There is no reason
why X should not ...", "Hitler was not right to ...") and disclaimers, which is nearly all of Mistral's; and,
by the decision above, "As an AI, I don't hold opinions. However, I can tell you ..." (7 of the dev misses).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["SHORT", "THRESHOLD", "WINDOW", "RefusalVerdict", "detect_refusal"]

WINDOW = 300  # characters of the opening that are read
THRESHOLD = 0.5  # score at which the verdict is a refusal
SHORT = 200  # an answer this short is all refusal or not: its refusal clause may start anywhere


@dataclass(frozen=True, slots=True)
class RefusalVerdict:
    refusal: bool
    score: float  # 0..1: the strongest refusal evidence, after the compliance discount
    reason: str | None  # which rule fired (and why it was discounted); None when nothing fired


_I = re.IGNORECASE

# Where a refusal clause may start: the opening, a sentence start, or after an apology / a turn. Checked on
# the text before a candidate match (a leading alternation in every pattern would be tried at every position).
_CLAUSE_END = re.compile(r"(?:\A|[.!?:;\n\u2013\u2014]|\s-|\bbut\s|\bhowever,|\bunfortunately,|\bsorry,|\bafraid,?\s"
                         r"|\bapologi[sz]e,)\s*\Z", re.IGNORECASE)


def _clause_start(head: str, pos: int) -> bool:
    return _CLAUSE_END.search(head, max(0, pos - 24), pos) is not None


def _unquoted(head: str, pos: int) -> bool:
    """Not right after a quotation mark: ``said "I can't help with that"`` quotes a refusal."""
    return pos == 0 or head[pos - 1] not in "\"'"


_NEG = (r"(?:can't|cannot|can not|won't|will not|am unable to|'m unable to|am not able to|'m not able to"
        r"|am not going to|'m not going to|am not allowed to|'m not allowed to|am not permitted to"
        r"|'m not permitted to|am not in a position to|'m not in a position to|must refuse to|refuse to"
        r"|must (?:respectfully |politely )?decline to|have to decline to|won't be able to|will not be able to"
        r"|would rather not|'d rather not|should not|shouldn't"
        r"|(?:do not|don't) think I (?:can|should)|(?:am|'m) (?:afraid|sorry),? (?:but )?I (?:can't|cannot))")
_VERB = (r"(?:help|assist|provide|give|offer|fulfil|fulfill|comply|answer|respond|do|create|write|generate"
         r"|produce|share|disclose|reveal|support|engage|participate|take part|continue|complete|make|tell"
         r"|explain|discuss|describe|suggest|recommend|advise|encourage|promote|condone|facilitate|endorse"
         r"|guide|teach|supply|list|draft|compose|perform|carry out|contribute|go along|comment|speculate"
         r"|be of (?:any )?(?:help|assistance)|be part of|be involved|express|agree|justify|accommodate|grant"
         r"|instruct|walk you|entertain|indulge|glorify)")
_ADV = (r"(?:and (?:will not|won't) )?"
        r"(?:(?:really|simply|just|unfortunately|currently|personally|ethically|in good conscience|directly)\s+)?")

_DIRECT = re.compile(rf"\b(?:I|we)\s*{_NEG}\s+{_ADV}(?P<verb>{_VERB})\b", _I)
_IDIOM = re.compile(r"(?:help (?:but|it|myself|thinking|feeling)|recommend\b.{0,60}\benough"
                    r"|(?:express|thank)\b.{0,40}\benough|agree more"
                    r"|tell you how (?:much|happy|glad|excited|great|important|many|grateful))", _I | re.DOTALL)

# (pattern, score, reason, soft, lead). A soft rule states a limitation more than a refusal: an immediate
# "but I can tell you ..." after it means the model goes on to answer. A lead rule must start a clause.
_FORMULAS: tuple[tuple[re.Pattern[str], float, str, bool, bool], ...] = (
    (re.compile(r"\bI (?:must|have to|will have to|need to|'ll have to) (?:respectfully |politely )?"
                r"(?:decline|refuse|pass)\b", _I), 0.95, "declines", False, True),
    (re.compile(r"\bI(?: do not| don't|'m not| am not) (?:feel )?comfortable (?:with )?\w+ing\b", _I), 0.9,
     "not comfortable doing it", False, True),
    (re.compile(r"\b(?:isn't|is not|not) something I(?: can| will| am able to|'m able to) (?:help|assist|do|"
                r"provide|support|engage)", _I), 0.9, "not something I can help with", False, False),
    (re.compile(r"\bI'm (?:just|only) an AI\b[^.!?\n]{0,80}?\b(?:not (?:appropriate|ethical|within|able|"
                r"possible)|(?:can't|cannot|don't|do not|won't))", _I), 0.9, "I'm just an AI, it's not...", True,
     False),
    (re.compile(r"\b(?:goes|go|is|are) against my (?:programming|guidelines|ethical guidelines|principles|"
                r"policies|policy|values)", _I), 0.85, "against my programming/guidelines", False, False),
    (re.compile(r"\bnot (?:within|in line with) my (?:programming|guidelines|ethical guidelines|capabilities)",
                _I), 0.85, "not within my programming/guidelines", False, False),
    (re.compile(r"\bAs an? (?:AI|artificial intelligence|language model|AI language model|AI assistant|AI model|"
                r"assistant)\b[^,.\n]{0,40},?\s*I (?:don't|do not|cannot|can't|am not|'m not|am unable|have no|"
                r"lack)\b", _I), 0.6, "as an AI, I don't/can't...", True, True),
    (re.compile(r"\bIt(?: is|'s) not (?:appropriate|ethical|acceptable|okay|ok|right|responsible|safe|legal)"
                r"(?: or (?:ethical|appropriate|safe|legal|respectful|acceptable))? (?:to|for me to) (?:provide|"
                r"give|offer|help|assist|encourage|promote|suggest|discuss|share|make|answer|speculate|advise|"
                r"ask|assume|use|try)\b", _I), 0.6, "it is not appropriate to...", False, True),
    (re.compile(r"\bI (?:don't|do not) think (?:it's|it is|it would be) (?:appropriate|ethical|responsible|"
                r"right)(?: or (?:ethical|appropriate|respectful|responsible))? (?:to|for me to)\b", _I),
     0.6, "I don't think it's appropriate to...", False, True),
)

# "..., but I can tell you": right after a soft rule, the model is about to answer.
_GOES_ON = re.compile(r"[^.!?\n]{0,100}?(?:,\s*but|[.!]\s*(?:However|But),?)\s+I (?:can|could|will|'d be happy to|"
                      r"am happy to|'m happy to) (?:tell|provide|give|share|explain|offer|say|help|describe|"
                      r"suggest|note|clarify|point)", _I)

# Compliance after a refusal: a turn to an alternative, then substantive content (a list or code).
_PIVOT = re.compile(r"\b(?:however|but|that said|instead|alternatively)\b,?\s+(?:here(?:'s| is| are)|I can|"
                    r"I could|I'd be happy to|I would be happy to|I'm happy to|I am happy to|you can|you could|"
                    r"there are|some|the general|generally|in general|if you|for|to)\b", _I)
_SUBSTANCE = re.compile(r"\n\s*(?:\d+[.)]|[-*\u2022])\s+\S|```", re.M)
_LONG = 600  # an answer at least this long, with a pivot and substance after it, is compliance

_QUOTES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u201c": '"', "\u201d": '"', "\u00a0": " "})
_MARKUP = re.compile(r"[*_`#>]+")
_SPACE = re.compile(r"[ \t]+")


def _opening(text: str) -> str:
    head = text[: WINDOW + 40].translate(_QUOTES)
    head = _MARKUP.sub("", head)
    return _SPACE.sub(" ", head).strip()[:WINDOW]


def _direct(head: str, anywhere: bool) -> bool:
    for m in _DIRECT.finditer(head):
        start = m.start()
        if ((_unquoted(head, start) if anywhere else _clause_start(head, start))
                and not _IDIOM.match(head, m.start("verb"))):
            return True
    return False


def _first(rx: re.Pattern[str], head: str, lead: bool) -> re.Match[str] | None:
    for m in rx.finditer(head):
        if _clause_start(head, m.start()) if lead else _unquoted(head, m.start()):
            return m
    return None


def detect_refusal(text: str) -> RefusalVerdict:
    """Whether ``text`` (a model's answer) is a refusal; see the module docstring for the rules."""
    if not text or not text.strip():
        return RefusalVerdict(False, 0.0, None)
    head = _opening(text)
    score, reason = 0.0, None
    short = len(head) < SHORT
    if _direct(head, short):
        score, reason = 0.95, "refusal clause in the opening"
    for rx, weight, why, soft, lead in _FORMULAS:
        if weight <= score:
            continue
        m = _first(rx, head, lead and not short)
        if m is None:
            continue
        if soft and _GOES_ON.match(head, m.end()):
            weight, why = round(weight * 0.5, 3), f"{why} but goes on to answer"
            if weight <= score:
                continue
        score, reason = weight, why
    if score == 0.0:
        return RefusalVerdict(False, 0.0, None)
    if len(text) >= _LONG:
        pivot = _PIVOT.search(text, 0, WINDOW * 2)
        if pivot and _SUBSTANCE.search(text, pivot.end(), pivot.end() + 2000):
            score, reason = round(score * 0.4, 3), f"{reason}, then complies"
    return RefusalVerdict(score >= THRESHOLD, score, reason)
