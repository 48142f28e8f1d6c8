"""Deterministic content generation for the simulator, independent of the wire dialect.

Everything here is a pure function of its inputs: the same seed material gives the same answer.
Tokens are real ``o200k_base`` tokens (gpt-4o's encoding, see :func:`count_tokens`). Generated prose is
made of pieces (a word with its leading space, or one punctuation character) that are each exactly one
o200k token, so ``count_tokens(text) == len(pieces)`` for generated prose: one stream delta per token.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import math
import random
import re
import sys
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from bastion.metering import tokens as _tokens

_PIECE_RE = re.compile(r"\s*(?:\w+|[^\w\s])|\s+")
_DIRECTIVE_RE = re.compile(r"\[\[sim:([a-z_]+)(?:=([^\]]*))?\]\]")

FAULT_KINDS = ("429", "500", "503", "timeout", "drop", "truncate", "malformed", "content_filter", "context_length")

VOCAB: tuple[str, ...] = tuple(
    """the a of to and in that is for it with as on be at by this from or an are was not but all
    can will one more about which when there their time so up out if into just also some like new
    system model request answer gateway token stream latency cache budget cost route policy prompt
    version signal value result record table server client upstream fallback retry circuit breaker
    vector window metric trace alert quota tenant user session review score judge sample batch queue
    river mountain forest ocean garden harbor meadow valley island desert canyon lantern compass
    bridge castle tower village market orchard candle mirror window ladder anchor feather thunder
    quickly slowly gently clearly simply rarely often always never softly boldly calmly brightly
    bright quiet rapid steady silent golden hidden gentle ancient modern careful curious simple
    clever humble patient eager honest vivid subtle robust fragile
    build measure check compare follow carry gather shape guide offer keep hold bring choose learn
    explain consider observe improve protect balance deliver prepare discover remember imagine
    first second third small large many few every each other same different early late better
    best good great long short high low open clear""".split()
)

SIM_TOKENIZER_MODEL = "gpt-4o"  # every simulated model counts like gpt-4o: o200k_base, exactly

_request_counter = itertools.count()


def count_tokens(text: str) -> int:
    """Real ``o200k_base`` tokens in ``text`` (special-token markers count as plain text)."""
    return len(_tokens.get_encoding("o200k_base").encode_ordinary(text)) if text else 0


def warm_tokenizer() -> None:
    """Load the o200k encoding now (about 0.4 s, once per process) rather than on the first request."""
    _tokens.warm("o200k_base")


def split_pieces(text: str) -> list[str]:
    """Split ``text`` into stream pieces (a token with its leading whitespace); they join back to ``text``."""
    return _PIECE_RE.findall(text)


def reset_counter() -> None:
    global _request_counter
    _request_counter = itertools.count()


# --- directives ----------------------------------------------------------------------------------


@dataclass(slots=True)
class Directives:
    """Per-request steering, from ``[[sim:...]]`` in the last user message or ``x-sim-*`` headers."""

    fault: str | None = None
    tokens: int | None = None
    latency_ms: float | None = None
    tps: float | None = None
    echo: bool = False
    echo_system: bool = False  # echo the system prompt: a model that leaks its instructions
    seed: int | None = None

    def set(self, key: str, value: str | None) -> None:
        try:
            if key == "fault" and value in FAULT_KINDS:
                self.fault = value
            elif key == "tokens" and value is not None:
                self.tokens = max(0, int(value))
            elif key in ("latency_ms", "latency-ms") and value is not None:
                self.latency_ms = max(0.0, float(value))
            elif key == "tps" and value is not None:
                self.tps = max(0.0, float(value))
            elif key == "seed" and value is not None:
                self.seed = int(value)
            elif key == "echo":
                self.echo = value is None or value.lower() not in ("0", "false", "no")
                self.echo_system = value is not None and value.lower() == "system"
        except ValueError:
            pass  # a malformed directive is ignored, like any other text


def parse_directives(text: str, into: Directives | None = None) -> tuple[str, Directives]:
    """Extract ``[[sim:key=value]]`` directives from ``text``; returns the text without them."""
    d = into if into is not None else Directives()
    if "[[sim:" not in text:
        return text, d
    for m in _DIRECTIVE_RE.finditer(text):
        d.set(m.group(1), m.group(2))
    return _DIRECTIVE_RE.sub("", text), d


_HEADERS = (("x-sim-fault", "fault"), ("x-sim-tokens", "tokens"), ("x-sim-latency-ms", "latency_ms"),
            ("x-sim-tps", "tps"), ("x-sim-echo", "echo"), ("x-sim-seed", "seed"))


def apply_headers(d: Directives, headers: Any) -> Directives:
    """Apply ``x-sim-*`` request headers (they win over directives in the message text)."""
    for header, key in _HEADERS:
        value = headers.get(header)
        if value is not None:
            d.set(key, value.strip().lower() if key == "fault" else value.strip())
    return d


# --- seeding -------------------------------------------------------------------------------------


def seed_for(
    sim_seed: int,
    profile: str,
    model: str,
    model_version: str,
    material: Any,
    request_seed: Any,
    temperature: Any,
) -> int:
    """The RNG seed of one request: a hash of everything that defines the answer.

    Without a request ``seed`` and with a temperature other than 0 a per-process counter is mixed in,
    so repeated identical requests get different answers, like a real sampled model.
    """
    counter = None
    if request_seed is None and temperature != 0:
        counter = next(_request_counter)
    blob = orjson.dumps(
        [sim_seed, profile, model, model_version, material, request_seed, counter],
        option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS,
        default=str,
    )
    return int.from_bytes(hashlib.blake2b(blob, digest_size=8).digest(), "little")


# --- generation ----------------------------------------------------------------------------------


@dataclass(slots=True)
class GenSpec:
    """What to generate, already extracted from the request by a wire module."""

    seed: int
    n: int = 1
    min_tokens: int = 8
    max_tokens_range: int = 48
    forced_tokens: int | None = None
    max_tokens: int | None = None
    echo_text: str | None = None
    stop: list[str] = field(default_factory=list)
    tool: tuple[str, dict[str, Any]] | None = None  # (name, JSON schema of its arguments)
    json_schema: dict[str, Any] | None = None  # response_format json_schema
    json_object: bool = False
    logprobs: bool = False
    top_logprobs: int = 0


@dataclass(slots=True)
class Choice:
    """One generated answer. ``finish`` is dialect-neutral: stop | length | stop_sequence | tool."""

    text: str  # the content, or the tool call's JSON arguments
    pieces: list[str]  # ``text`` split for streaming
    tokens: int
    finish: str
    stop_sequence: str | None = None
    tool_name: str | None = None
    tool_id_suffix: str = ""
    logprobs: list[dict[str, Any]] | None = None


def generate(spec: GenSpec) -> list[Choice]:
    return [_one(spec, i) for i in range(max(1, spec.n))]


def _one(spec: GenSpec, index: int) -> Choice:
    rng = random.Random(spec.seed + index)
    if spec.tool is not None:
        name, schema = spec.tool
        args = orjson.dumps(gen_value(schema or {"type": "object"}, rng, schema)).decode()
        suffix = "".join(rng.choice(_ALNUM) for _ in range(24))
        return Choice(args, split_pieces(args), count_tokens(args) + count_tokens(name), "tool",
                      tool_name=name, tool_id_suffix=suffix)
    if spec.echo_text is not None:
        pieces = split_pieces(spec.echo_text.strip())
    elif spec.json_schema is not None:
        pieces = split_pieces(orjson.dumps(gen_value(spec.json_schema, rng, spec.json_schema)).decode())
    elif spec.json_object:
        pieces = split_pieces(orjson.dumps(_json_object(rng)).decode())
    else:
        n = spec.forced_tokens
        if n is None:
            n = rng.randint(spec.min_tokens, max(spec.min_tokens, spec.max_tokens_range))
        pieces = prose(rng, n)
    finish, stop_seq = "stop", None
    text = "".join(pieces)
    if spec.max_tokens is not None and count_tokens(text) > spec.max_tokens:
        pieces = _cap(pieces, spec.max_tokens)
        text = "".join(pieces)
        finish = "length"
    if spec.stop:
        hit = _first_stop(text, spec.stop)
        if hit is not None:
            idx, stop_seq = hit
            text = text[:idx]
            pieces = split_pieces(text)
            finish = "stop_sequence"
    choice = Choice(text, pieces, count_tokens(text), finish, stop_seq)
    if spec.logprobs:
        choice.logprobs = logprob_entries(pieces, random.Random(spec.seed + index + 7_919), spec.top_logprobs)
    return choice


def prose(rng: random.Random, n: int) -> list[str]:
    """``n`` tokens of sentence-like text from :data:`VOCAB`, as stream pieces of one o200k token each."""
    out: list[str] = []
    nv = len(VOCAB)
    caps = _capital_vocab()
    nc = len(caps)
    rand = rng.random
    since, target, capital = 0, 6 + int(rand() * 9), True
    for i in range(n):
        if i == n - 1 and n > 1 and since > 0:
            out.append(".")
        elif since >= target:
            out.append("." if rand() < 0.7 else ",")
            capital = out[-1] == "."
            since, target = 0, 6 + int(rand() * 9)
        else:
            if capital:
                word = caps[int(rand() * nc)]
                capital = False
            else:
                word = VOCAB[int(rand() * nv)]
            out.append(word if i == 0 else " " + word)
            since += 1
    return out


@functools.cache
def _capital_vocab() -> Sequence[str]:
    """Capitalized :data:`VOCAB` words that are one o200k token both as ``Word`` and as `` Word``.

    Sentences start with one of these (``Meadow`` is two tokens, ``River`` one), so every prose piece is
    exactly one token. Lower-case `` word`` pieces are all single tokens (checked by the tests).
    """
    enc = _tokens.get_encoding("o200k_base")
    return tuple(w for w in (v.capitalize() for v in VOCAB)
                 if len(enc.encode_ordinary(w)) == 1 and len(enc.encode_ordinary(" " + w)) == 1)


def _cap(pieces: list[str], max_tokens: int) -> list[str]:
    """The longest prefix of ``pieces`` whose text has at most ``max_tokens`` tokens."""
    out: list[str] = []
    seen = 0
    for p in pieces:
        k = count_tokens(p)
        if seen + k > max_tokens:
            break
        out.append(p)
        seen += k
    while out and count_tokens("".join(out)) > max_tokens:  # pieces tokenized alone vs. joined may differ
        out.pop()
    return out


def _first_stop(text: str, stops: list[str]) -> tuple[int, str] | None:
    best: tuple[int, str] | None = None
    for s in stops:
        if not s:
            continue
        i = text.find(s)
        if i >= 0 and (best is None or i < best[0]):
            best = (i, s)
    return best


def logprob_entries(pieces: list[str], rng: random.Random, top: int) -> list[dict[str, Any]]:
    """OpenAI ``logprobs.content`` entries, one per piece, with ``top`` alternatives each."""
    out = []
    for p in pieces:
        lp = -round((rng.random() ** 3) * 4, 6)
        alts = []
        if top > 0:
            alts.append({"token": p, "logprob": lp, "bytes": list(p.encode())})
            prev = lp
            for _ in range(top - 1):
                prev = round(prev - 0.1 - rng.random() * 3, 6)
                alt = " " + VOCAB[int(rng.random() * len(VOCAB))]
                alts.append({"token": alt, "logprob": prev, "bytes": list(alt.encode())})
        out.append({"token": p, "logprob": lp, "bytes": list(p.encode()), "top_logprobs": alts})
    return out


# --- JSON values from a schema -------------------------------------------------------------------

_ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


def _words(rng: random.Random, lo: int, hi: int) -> str:
    return " ".join(VOCAB[int(rng.random() * len(VOCAB))] for _ in range(rng.randint(lo, hi)))


def _json_object(rng: random.Random) -> dict[str, Any]:
    return {
        "answer": _words(rng, 3, 10),
        "topic": VOCAB[int(rng.random() * len(VOCAB))],
        "confidence": round(rng.random(), 2),
        "tags": [VOCAB[int(rng.random() * len(VOCAB))] for _ in range(rng.randint(1, 3))],
    }


def _resolve_ref(ref: Any, root: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(ref, str) or not ref.startswith("#/"):
        return {}
    node: Any = root
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, dict) or part not in node:
            return {}
        node = node[part]
    return node if isinstance(node, dict) else {}


# A schema is the caller's input: a keyword of the wrong type is read as absent, and sizes are capped, so a
# hostile schema (minItems: 10**9, minLength: 10**12) costs no more than an ordinary one.
MAX_ITEMS = 50
MAX_STRING = 10_000


def _num(schema: dict[str, Any], key: str) -> float | None:
    v = schema.get(key)
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) else None


def _list(schema: dict[str, Any], key: str) -> list[Any]:
    v = schema.get(key)
    return v if isinstance(v, list) else []


def _int_range(v: int) -> int:
    return min(max(v, -(2**63)), 2**64 - 1)


def gen_value(schema: Any, rng: random.Random, root: dict[str, Any] | None = None, depth: int = 0) -> Any:
    """A JSON value satisfying ``schema`` (the common subset: types, properties, required, enum,
    const, items, anyOf/oneOf/allOf, local $ref, string formats, numeric and length bounds)."""
    if not isinstance(schema, dict):
        return _words(rng, 1, 3)
    root = root if root is not None else schema
    if "$ref" in schema and depth < 12:
        return gen_value(_resolve_ref(schema["$ref"], root), rng, root, depth + 1)
    if "const" in schema:
        return schema["const"]
    if _list(schema, "enum"):
        return rng.choice(schema["enum"])
    for key in ("anyOf", "oneOf"):
        options = _list(schema, key)
        if options:
            non_null = [o for o in options if not (isinstance(o, dict) and o.get("type") == "null")]
            return gen_value((non_null or options)[0], rng, root, depth + 1)
    if _list(schema, "allOf") and depth < 12:
        merged: dict[str, Any] = {}
        for part in schema["allOf"]:
            if isinstance(part, dict):
                part = _resolve_ref(part["$ref"], root) if "$ref" in part else part
                for k, v in part.items():
                    if k in ("properties",) and isinstance(v, dict):
                        merged.setdefault(k, {}).update(v)
                    elif k == "required" and isinstance(v, list):
                        merged.setdefault(k, []).extend(v)
                    elif k not in ("properties", "required"):
                        merged[k] = v
        return gen_value(merged, rng, root, depth + 1)
    t = schema.get("type")
    if isinstance(t, list):
        t = next((x for x in t if x != "null"), "null")
    if t is None:
        t = "object" if "properties" in schema else "array" if "items" in schema else "string"
    if t == "object":
        props = schema.get("properties")
        required = {r for r in _list(schema, "required") if isinstance(r, str)}
        out: dict[str, Any] = {}
        for name, sub in (props.items() if isinstance(props, dict) else ()):
            if name in required or (depth < 3 and rng.random() < 0.5):
                out[name] = gen_value(sub, rng, root, depth + 1)
        return out
    if t == "array":
        least, most = _num(schema, "minItems"), _num(schema, "maxItems")
        n_min = 1 if least is None else min(max(int(least), 0), MAX_ITEMS)
        n_max = n_min + 2 if most is None else min(int(most), n_min + MAX_ITEMS)
        count = rng.randint(n_min, max(n_min, n_max)) if depth < 6 else n_min
        return [gen_value(schema.get("items", {}), rng, root, depth + 1) for _ in range(count)]
    if t == "integer":
        lo = _num(schema, "minimum")
        if lo is None:
            ex = _num(schema, "exclusiveMinimum")
            lo = math.floor(ex) + 1 if ex is not None else 0
        hi = _num(schema, "maximum")
        if hi is None:
            ex = _num(schema, "exclusiveMaximum")
            hi = math.ceil(ex) - 1 if ex is not None else lo + 100
        lo, hi = _int_range(math.ceil(lo)), _int_range(math.floor(hi))  # JSON writers stop at 64 bits
        return rng.randint(lo, max(lo, hi))
    if t == "number":
        lo = _num(schema, "minimum")
        lo = _num(schema, "exclusiveMinimum") if lo is None else lo
        lo = 0.0 if lo is None else lo
        hi = _num(schema, "maximum")
        hi = _num(schema, "exclusiveMaximum") if hi is None else hi
        hi = lo + 100.0 if hi is None else hi
        value = round(lo + rng.random() * (hi - lo), 2)
        return min(max(value, lo), hi) if math.isfinite(value) else lo
    if t == "boolean":
        return rng.random() < 0.5
    if t == "null":
        return None
    return _gen_string(schema, rng)


def _gen_string(schema: dict[str, Any], rng: random.Random) -> str:
    fmt = schema.get("format")
    if fmt == "date-time":
        return f"2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:00:00Z"
    if fmt == "date":
        return f"2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    if fmt == "time":
        return f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:00"
    if fmt == "email":
        return f"{VOCAB[int(rng.random() * len(VOCAB))]}@example.com"
    if fmt in ("uri", "url"):
        return f"https://example.com/{VOCAB[int(rng.random() * len(VOCAB))]}"
    if fmt == "uuid":
        h = f"{rng.getrandbits(128):032x}"
        return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:]}"
    s = _words(rng, 1, 4)
    lo, hi = min(int(_num(schema, "minLength") or 0), MAX_STRING), _num(schema, "maxLength")
    while len(s) < lo:
        s += " " + VOCAB[int(rng.random() * len(VOCAB))]
    if hi is not None:
        s = s[: max(int(hi), 0)]
    return s


# --- embeddings ----------------------------------------------------------------------------------


def embedding(text: str, dims: int) -> array:
    """A deterministic unit vector (float32) from a hash of ``text``; a prefix of a longer one, renormalised."""
    raw = hashlib.shake_256(text.encode()).digest(2 * dims)
    ints = array("h")
    ints.frombytes(raw)
    if sys.byteorder != "little":
        ints.byteswap()
    norm = math.sqrt(sum(x * x for x in ints)) or 1.0
    return array("f", [x / norm for x in ints])


def embedding_bytes_le(vec: array) -> bytes:
    """Little-endian float32 bytes of ``vec`` (the payload of ``encoding_format: base64``)."""
    if sys.byteorder != "little":
        vec = array("f", vec)
        vec.byteswap()
    return vec.tobytes()
