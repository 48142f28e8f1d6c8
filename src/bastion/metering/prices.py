"""Prices per million tokens, token usage normalized across dialects, and exact cost in ``Decimal``.

Money never touches a float here. Prices are ``Decimal`` US dollars per million tokens; a cost is
computed per pricing dimension as ``tokens * price / 1_000_000``, each dimension rounded to 1e-9
USD (a nano-dollar) with ROUND_HALF_EVEN, and the total is the exact sum of the rounded
dimensions, so a breakdown always adds up to its total.

The packaged table is ``prices.yaml`` beside this module (``PriceTable.load_default()``); its
format, the lookup rules and how Azure and self-hosted models are priced are in docs/costs.md.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_HALF_EVEN, Decimal, InvalidOperation, localcontext
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

__all__ = [
    "DIMENSIONS",
    "PRICE_KEYS",
    "PROVIDERS",
    "Cost",
    "Price",
    "PriceEntry",
    "PriceError",
    "PriceTable",
    "Usage",
    "UsageError",
    "cost",
    "normalize_model_id",
    "worst_case",
]

MILLION = Decimal(1_000_000)
QUANTUM = Decimal("1E-9")  # 1 nano-dollar: every cost is a whole number of these
PRICE_KEYS = ("input", "output", "cached_input", "cache_write", "reasoning")
DIMENSIONS = ("input", "cached_input", "cache_write", "output", "reasoning")
PROVIDERS = frozenset({"openai", "anthropic", "azure", "google", "open", "sim"})
CURRENCY = "USD"
UNIT = "per_million_tokens"

_ENTRY_META_KEYS = frozenset({"provider", "aliases", "context_window", "max_output", "note"})
_TOP_KEYS = frozenset({"version", "currency", "unit", "providers", "models"})
_DATE_SUFFIX = re.compile(r"[-@](?:\d{4}-\d{2}-\d{2}|\d{8})$")
_VERSION = re.compile(r"^\d{4}-\d{2}-\d{2}(?:[.\-+][0-9A-Za-z.]+)?$")
# Decimal arithmetic on token counts up to ~1e15 times prices up to ~1e6 needs far fewer digits.
_PRECISION = 60


class PriceError(ValueError):
    """A price, or a price table, is malformed. The message starts with where (a key path)."""


class UsageError(ValueError):
    """A provider's usage object has a token count that is not a non-negative integer."""


# --------------------------------------------------------------------------------------- prices


def _to_decimal(value: Any, where: str) -> Decimal:
    """A price as a Decimal: str, int or Decimal as is; a float through its shortest repr.

    A float is accepted (an operator writing ``input: 2.5`` in YAML gets a float) and converted
    via ``repr``, which is the shortest string that round-trips, so it reproduces the literal as
    written for any price with up to 15 significant digits. The packaged table quotes every price
    all the same (a test checks it). Booleans, NaN, infinities and negatives are rejected.
    """
    if isinstance(value, bool):
        raise PriceError(f"{where}: expected a price such as \"2.50\", got {value!r}")
    if isinstance(value, Decimal):
        d = value
    elif isinstance(value, int):
        d = Decimal(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise PriceError(f"{where}: a price must be a finite number, got {value!r}")
        d = Decimal(repr(value))
    elif isinstance(value, str):
        text = value.strip().replace("_", "")
        try:
            d = Decimal(text)
        except InvalidOperation:
            raise PriceError(f"{where}: {value!r} is not a number (write USD per million tokens, e.g. \"2.50\")") from None
    else:
        raise PriceError(f"{where}: expected a price such as \"2.50\", got {type(value).__name__}")
    if not d.is_finite():
        raise PriceError(f"{where}: a price must be a finite number, got {value!r}")
    if d < 0:
        raise PriceError(f"{where}: a price cannot be negative, got {value!r}")
    return d


@dataclass(frozen=True, slots=True)
class Price:
    """USD per million tokens for each pricing dimension.

    ``input``: uncached input. ``cached_input``: input read from the provider's prompt cache.
    ``cache_write``: input written to the cache (Anthropic's 5-minute cache writes).
    ``output``: the visible output. ``reasoning``: reasoning/thinking tokens.
    All five are required here; ``from_mapping`` fills the usual defaults.
    """

    input: Decimal
    output: Decimal
    cached_input: Decimal
    cache_write: Decimal
    reasoning: Decimal

    def __post_init__(self) -> None:
        for key in PRICE_KEYS:
            value = getattr(self, key)
            if not isinstance(value, Decimal):
                raise PriceError(f"price.{key}: expected a Decimal, got {type(value).__name__} (use Price.from_mapping)")
            if not value.is_finite() or value < 0:
                raise PriceError(f"price.{key}: must be a finite, non-negative Decimal, got {value!r}")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, where: str = "price") -> Price:
        """Build a Price from ``{input, output, cached_input?, cache_write?, reasoning?}``.

        Values may be strings ("2.50"), ints, Decimals, or floats (converted through ``repr``).
        ``input`` and ``output`` are required; ``cached_input`` and ``cache_write`` default to
        ``input`` (no discount, no premium) and ``reasoning`` to ``output``. Unknown keys are an
        error, so a typo such as ``cache_read`` is caught instead of silently priced at zero.
        """
        if not isinstance(data, Mapping):
            raise PriceError(f"{where}: expected a mapping of prices, got {type(data).__name__}")
        unknown = sorted(str(k) for k in data if k not in PRICE_KEYS)
        if unknown:
            raise PriceError(f"{where}: unknown price key(s) {', '.join(unknown)}; expected {', '.join(PRICE_KEYS)}")
        for key in ("input", "output"):
            if data.get(key) is None:
                raise PriceError(f"{where}.{key}: required")
        values = {k: _to_decimal(data[k], f"{where}.{k}") for k in PRICE_KEYS if data.get(k) is not None}
        values.setdefault("cached_input", values["input"])
        values.setdefault("cache_write", values["input"])
        values.setdefault("reasoning", values["output"])
        return cls(**values)

    def as_dict(self) -> dict[str, str]:
        """The five prices as strings, e.g. for an API response; ``from_mapping`` reads it back."""
        return {key: str(getattr(self, key)) for key in PRICE_KEYS}


# ---------------------------------------------------------------------------------------- usage


def _count(data: Mapping[str, Any] | None, key: str, where: str) -> int:
    if data is None:
        return 0
    if not isinstance(data, Mapping):
        raise UsageError(f"{where}: expected an object, got {type(data).__name__}")
    value = data.get(key)
    if value is None:
        return 0
    if isinstance(value, bool):
        raise UsageError(f"{where}.{key}: expected a token count, got {value!r}")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int):
        raise UsageError(f"{where}.{key}: expected a token count, got {value!r}")
    if value < 0:
        raise UsageError(f"{where}.{key}: a token count cannot be negative, got {value}")
    return value


def _details(data: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any] | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise UsageError(f"{where}.{key}: expected an object, got {type(value).__name__}")
    return value


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts split into disjoint pricing dimensions; every token is in exactly one.

    ``input_tokens``: input billed at the uncached rate (excludes cache reads and cache writes).
    ``cached_input_tokens``: input read from the prompt cache.
    ``cache_write_tokens``: input written to the prompt cache (Anthropic).
    ``output_tokens``: output billed at the output rate, EXCLUDING ``reasoning_tokens``.
    ``reasoning_tokens``: reasoning tokens a provider reports separately (OpenAI's
    ``completion_tokens_details.reasoning_tokens``), priced at ``Price.reasoning``. Anthropic and
    Gemini thinking tokens are not reported apart from the output, so they stay in
    ``output_tokens``.
    """

    input_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0

    def __post_init__(self) -> None:
        for name in ("input_tokens", "cached_input_tokens", "cache_write_tokens", "output_tokens", "reasoning_tokens"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise UsageError(f"usage.{name}: expected an int, got {value!r}")
            if value < 0:
                raise UsageError(f"usage.{name}: a token count cannot be negative, got {value}")

    @property
    def prompt_tokens(self) -> int:
        """All input tokens, cached or not: what OpenAI calls prompt_tokens."""
        return self.input_tokens + self.cached_input_tokens + self.cache_write_tokens

    @property
    def completion_tokens(self) -> int:
        """All output tokens, reasoning included: what OpenAI calls completion_tokens."""
        return self.output_tokens + self.reasoning_tokens

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        if not isinstance(other, Usage):
            return NotImplemented
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            cached_input_tokens=self.cached_input_tokens + other.cached_input_tokens,
            cache_write_tokens=self.cache_write_tokens + other.cache_write_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            reasoning_tokens=self.reasoning_tokens + other.reasoning_tokens,
        )

    @classmethod
    def from_openai(cls, usage: Mapping[str, Any] | None) -> Usage:
        """Normalize an OpenAI ``usage`` object (Chat Completions, Embeddings, or Responses API).

        OpenAI's ``prompt_tokens`` INCLUDES ``prompt_tokens_details.cached_tokens``, and its
        ``completion_tokens`` INCLUDES ``completion_tokens_details.reasoning_tokens``; both are
        subtracted out here. The Responses API's ``input_tokens``/``output_tokens`` with
        ``input_tokens_details``/``output_tokens_details`` are read the same way. A detail larger
        than its total (never seen, but not trusted) is clamped to the total. Missing or null
        fields count 0; ``None`` gives an empty Usage.
        """
        if usage is None:
            return cls()
        where = "usage"
        if not isinstance(usage, Mapping):
            raise UsageError(f"{where}: expected an object, got {type(usage).__name__}")
        if "prompt_tokens" in usage or "completion_tokens" in usage:
            in_key, out_key = "prompt_tokens", "completion_tokens"
        else:
            in_key, out_key = "input_tokens", "output_tokens"
        prompt = _count(usage, in_key, where)
        completion = _count(usage, out_key, where)
        in_details = _details(usage, f"{in_key}_details", where)
        out_details = _details(usage, f"{out_key}_details", where)
        cached = min(_count(in_details, "cached_tokens", f"{where}.{in_key}_details"), prompt)
        reasoning = min(_count(out_details, "reasoning_tokens", f"{where}.{out_key}_details"), completion)
        return cls(
            input_tokens=prompt - cached,
            cached_input_tokens=cached,
            output_tokens=completion - reasoning,
            reasoning_tokens=reasoning,
        )

    @classmethod
    def from_anthropic(cls, usage: Mapping[str, Any] | None) -> Usage:
        """Normalize an Anthropic Messages ``usage`` object.

        Anthropic's ``input_tokens`` already EXCLUDES cache reads (``cache_read_input_tokens``)
        and cache writes (``cache_creation_input_tokens``), so the three are taken as they are.
        ``output_tokens`` includes any extended-thinking tokens, which Anthropic bills at the
        output rate; ``reasoning_tokens`` stays 0. Cache writes are priced at the 5-minute rate
        (``Price.cache_write``), including any 1-hour writes in ``cache_creation``.
        """
        if usage is None:
            return cls()
        where = "usage"
        if not isinstance(usage, Mapping):
            raise UsageError(f"{where}: expected an object, got {type(usage).__name__}")
        return cls(
            input_tokens=_count(usage, "input_tokens", where),
            cached_input_tokens=_count(usage, "cache_read_input_tokens", where),
            cache_write_tokens=_count(usage, "cache_creation_input_tokens", where),
            output_tokens=_count(usage, "output_tokens", where),
        )


# ----------------------------------------------------------------------------------------- cost


@dataclass(frozen=True, slots=True)
class Cost:
    """A cost in USD: ``total`` and ``breakdown`` (one entry per name in DIMENSIONS).

    Every value is a Decimal with exactly 9 decimal places; ``total == sum(breakdown.values())``
    exactly.
    """

    total: Decimal
    breakdown: Mapping[str, Decimal]

    @classmethod
    def zero(cls) -> Cost:
        zero = Decimal(0).quantize(QUANTUM)
        return cls(total=zero, breakdown=MappingProxyType(dict.fromkeys(DIMENSIONS, zero)))

    def as_str(self) -> str:
        """The total as fixed-point dollars with 9 decimals, e.g. ``"0.003085000"``: never an
        exponent, so it is safe for headers, logs and JSON strings."""
        return f"{self.total:.9f}"

    def __str__(self) -> str:
        return self.as_str()

    def __add__(self, other: Cost) -> Cost:
        if not isinstance(other, Cost):
            return NotImplemented
        with localcontext() as ctx:
            ctx.prec = _PRECISION
            parts = {d: self.breakdown.get(d, Decimal(0)) + other.breakdown.get(d, Decimal(0)) for d in DIMENSIONS}
            return Cost(total=self.total + other.total, breakdown=MappingProxyType(parts))


def _dimension(tokens: int, per_million: Decimal) -> Decimal:
    return (Decimal(tokens) * per_million / MILLION).quantize(QUANTUM, rounding=ROUND_HALF_EVEN)


def cost(usage: Usage, price: Price) -> Cost:
    """The exact cost of ``usage`` at ``price``.

    Each dimension is ``tokens * price_per_million / 1_000_000`` rounded to 1e-9 USD with
    ROUND_HALF_EVEN (banker's rounding: no upward drift over many requests); the total is the
    exact sum of the rounded dimensions. Rounding can only matter for prices with more than three
    decimals ($0.0375/M, say): with at most three, every dimension is already exact at 1e-9.
    """
    with localcontext() as ctx:
        ctx.prec = _PRECISION
        parts = {
            "input": _dimension(usage.input_tokens, price.input),
            "cached_input": _dimension(usage.cached_input_tokens, price.cached_input),
            "cache_write": _dimension(usage.cache_write_tokens, price.cache_write),
            "output": _dimension(usage.output_tokens, price.output),
            "reasoning": _dimension(usage.reasoning_tokens, price.reasoning),
        }
        total = sum(parts.values(), Decimal(0).quantize(QUANTUM))
    return Cost(total=total, breakdown=MappingProxyType(parts))


def worst_case(input_tokens: int, max_output_tokens: int, price: Price) -> Decimal:
    """An upper bound on a request's cost, for budget reservations, in USD (9 decimals).

    Every input token at the most expensive input rate: ``max(input, cached_input, cache_write)``,
    which is the uncached input price except where cache writes cost more (Anthropic's 1.25x), and
    every output token at ``max(output, reasoning)``, since OpenAI's max_completion_tokens covers
    reasoning too. Rounded UP (ROUND_CEILING) to 1e-9, so the reservation is never below what
    ``cost()`` gives for the same token counts split in any way. For that to hold exactly,
    prices with more than three decimals (whose per-dimension rounding in ``cost()`` can add up
    to half a nano-dollar each) add half a nano-dollar per such dimension before rounding up;
    table prices have at most three decimals and get no such slack.
    """
    for name, value in (("input_tokens", input_tokens), ("max_output_tokens", max_output_tokens)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise UsageError(f"{name}: expected a non-negative int, got {value!r}")
    in_rate = max(price.input, price.cached_input, price.cache_write)
    out_rate = max(price.output, price.reasoning)
    rounding_dims = sum(1 for key in PRICE_KEYS if _rounds_below_a_nano(getattr(price, key)))
    with localcontext() as ctx:
        ctx.prec = _PRECISION
        exact = (Decimal(input_tokens) * in_rate + Decimal(max_output_tokens) * out_rate) / MILLION
        exact += rounding_dims * QUANTUM / 2
        return exact.quantize(QUANTUM, rounding=ROUND_CEILING)


def _rounds_below_a_nano(per_million: Decimal) -> bool:
    # tokens * price / 1e6 has more than 9 decimals only if the price has more than 3 (a Price is finite, so
    # the exponent is an int, never the 'n'/'N'/'F' of a NaN or an infinity)
    exponent = per_million.normalize().as_tuple().exponent
    return per_million != 0 and isinstance(exponent, int) and exponent < -3


# ---------------------------------------------------------------------------------- price table


def normalize_model_id(model: str) -> str:
    """The loose form of a model id used by ``PriceTable.lookup``'s fallbacks.

    Lower-cased and stripped; everything up to the last ``/`` dropped (``openai/gpt-4o``,
    ``azure/gpt-4o``, ``models/gemini-2.5-pro``, ``meta-llama/Llama-3.3-70B-Instruct``); then one
    trailing date suffix dropped: ``-YYYY-MM-DD`` (OpenAI snapshots), ``-YYYYMMDD`` (Anthropic) or
    ``@YYYYMMDD`` (Vertex AI).
    """
    return _DATE_SUFFIX.sub("", _strip_prefix(model))


def _strip_prefix(model: str) -> str:
    return model.strip().lower().rsplit("/", 1)[-1]


@dataclass(frozen=True, slots=True)
class PriceEntry:
    """One model of the table: its canonical id, provider, price and informational metadata."""

    model: str
    provider: str
    price: Price
    aliases: tuple[str, ...] = ()
    context_window: int | None = None
    max_output: int | None = None
    note: str | None = None

    @property
    def names(self) -> tuple[str, ...]:
        return (self.model, *self.aliases)


def _positive_int(value: Any, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise PriceError(f"{where}: expected a positive integer number of tokens, got {value!r}")
    return value


def _date_str(value: Any, where: str) -> str:
    # YAML turns an unquoted 2026-11-01 into a datetime.date; accept it as its ISO string.
    if hasattr(value, "isoformat") and not isinstance(value, str):
        value = value.isoformat()
    if not isinstance(value, str) or not value.strip():
        raise PriceError(f"{where}: expected a string, got {value!r}")
    return value.strip()


def _parse_entry(model: Any, data: Any) -> PriceEntry:
    if not isinstance(model, str) or not model.strip() or model != model.strip():
        raise PriceError(f"models: {model!r} is not a model id")
    where = f"models.{model}"
    if not isinstance(data, Mapping):
        raise PriceError(f"{where}: expected a mapping, got {type(data).__name__}")
    unknown = sorted(str(k) for k in data if k not in PRICE_KEYS and k not in _ENTRY_META_KEYS)
    if unknown:
        allowed = ", ".join((*PRICE_KEYS, *sorted(_ENTRY_META_KEYS)))
        raise PriceError(f"{where}: unknown key(s) {', '.join(unknown)}; expected {allowed}")
    provider = data.get("provider")
    if provider not in PROVIDERS:
        raise PriceError(f"{where}.provider: expected one of {', '.join(sorted(PROVIDERS))}, got {provider!r}")
    aliases = data.get("aliases") or []
    if not isinstance(aliases, list) or not all(isinstance(a, str) and a.strip() == a and a for a in aliases):
        raise PriceError(f"{where}.aliases: expected a list of model ids")
    if model in aliases or len(set(aliases)) != len(aliases):
        raise PriceError(f"{where}.aliases: repeats a name")
    note = data.get("note")
    if note is not None and not isinstance(note, str):
        raise PriceError(f"{where}.note: expected a string")
    price = Price.from_mapping({k: v for k, v in data.items() if k in PRICE_KEYS}, where=where)
    return PriceEntry(
        model=model,
        provider=provider,
        price=price,
        aliases=tuple(aliases),
        context_window=_positive_int(data.get("context_window"), f"{where}.context_window"),
        max_output=_positive_int(data.get("max_output"), f"{where}.max_output"),
        note=note,
    )


class PriceTable:
    """A versioned table of model prices, with lookup by model id.

    ``lookup(model)`` tries, in order:

    1. the exact id, or an exact alias;
    2. the id lower-cased with any ``provider/`` or ``org/`` prefix dropped, against the table's
       names treated the same way;
    3. that, with a trailing date suffix also dropped (``normalize_model_id``), against the
       table's names treated the same way. A name that is already undated wins this step, so a
       snapshot listed separately at another price (``gpt-4o-2024-05-13``) is only matched by its
       own id, and an unlisted snapshot (``gpt-4o-2099-01-01``) gets the undated model's price.

    It returns None for an unknown model: callers decide what an unpriced model means.
    """

    def __init__(
        self,
        entries: Iterable[PriceEntry],
        *,
        version: str,
        currency: str = CURRENCY,
        unit: str = UNIT,
        sources: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        if currency != CURRENCY:
            raise PriceError(f"currency: only {CURRENCY} is supported, got {currency!r}")
        if unit != UNIT:
            raise PriceError(f"unit: only {UNIT} is supported, got {unit!r}")
        self._version = version
        self._currency = currency
        self._unit = unit
        self._sources = MappingProxyType({k: MappingProxyType(dict(v)) for k, v in (sources or {}).items()})
        models: dict[str, PriceEntry] = {}
        exact: dict[str, PriceEntry] = {}
        loose: dict[str, PriceEntry] = {}
        for entry in entries:
            if entry.model in models:
                raise PriceError(f"models.{entry.model}: listed twice")
            models[entry.model] = entry
            for name in entry.names:
                other = exact.get(name)
                if other is not None:
                    raise PriceError(f"models.{entry.model}: {name!r} is already a name of {other.model}")
                exact[name] = entry
                key = _strip_prefix(name)
                other = loose.get(key)
                if other is not None and other is not entry:
                    raise PriceError(f"models.{entry.model}: {name!r} is the same id as {other.model}'s name {key!r}")
                loose[key] = entry
        self._models = MappingProxyType(models)
        self._exact = exact
        self._loose = loose
        self._undated = self._build_undated(models.values())

    @staticmethod
    def _build_undated(entries: Iterable[PriceEntry]) -> dict[str, PriceEntry]:
        undated: dict[str, PriceEntry] = {}
        dated: list[tuple[str, PriceEntry]] = []
        for entry in entries:
            for name in entry.names:
                key = normalize_model_id(name)
                if key == _strip_prefix(name):
                    undated[key] = entry  # already unique: the loose index checked it
                else:
                    dated.append((key, entry))
        claimed: dict[str, PriceEntry] = {}
        for key, entry in dated:
            if key in undated:
                continue
            other = claimed.setdefault(key, entry)
            if other is not entry and other.price != entry.price:
                raise PriceError(
                    f"models.{entry.model}: its dated ids and {other.model}'s both fall back to {key!r} at "
                    f"different prices; list {key!r} as an alias of one of them"
                )
        return {**claimed, **undated}

    # -- construction

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "<dict>") -> PriceTable:
        """Build a table from the parsed YAML structure; errors name the key path."""
        if not isinstance(data, Mapping):
            raise PriceError(f"{source}: expected a mapping at the top level")
        unknown = sorted(str(k) for k in data if k not in _TOP_KEYS)
        if unknown:
            raise PriceError(f"{source}: unknown top-level key(s) {', '.join(unknown)}")
        if "version" not in data:
            raise PriceError(f"{source}: version: required")
        version = _date_str(data["version"], "version")
        if not _VERSION.match(version):
            raise PriceError(f"version: expected a date such as \"2026-11-01\", got {version!r}")
        providers = data.get("providers") or {}
        if not isinstance(providers, Mapping):
            raise PriceError("providers: expected a mapping")
        sources: dict[str, dict[str, str]] = {}
        for name, info in providers.items():
            if name not in PROVIDERS:
                raise PriceError(f"providers.{name}: expected one of {', '.join(sorted(PROVIDERS))}")
            if not isinstance(info, Mapping):
                raise PriceError(f"providers.{name}: expected a mapping with source and checked")
            sources[name] = {str(k): _date_str(v, f"providers.{name}.{k}") for k, v in info.items()}
        models = data.get("models")
        if not isinstance(models, Mapping) or not models:
            raise PriceError(f"{source}: models: expected a non-empty mapping of model id to prices")
        entries = [_parse_entry(model, entry) for model, entry in models.items()]
        return cls(
            entries,
            version=version,
            currency=data.get("currency", CURRENCY),
            unit=data.get("unit", UNIT),
            sources=sources,
        )

    @classmethod
    def from_yaml(cls, text: str, *, source: str = "<yaml>") -> PriceTable:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise PriceError(f"{source}: not valid YAML: {exc}") from None
        return cls.from_dict(data, source=source)

    @classmethod
    def from_file(cls, path: str | Path) -> PriceTable:
        path = Path(path)
        return cls.from_yaml(path.read_text(encoding="utf-8"), source=str(path))

    @classmethod
    def load_default(cls) -> PriceTable:
        """The table packaged with Bastion (``bastion/metering/prices.yaml``), parsed once."""
        return _default_table()

    # -- reading

    @property
    def version(self) -> str:
        return self._version

    @property
    def currency(self) -> str:
        return self._currency

    @property
    def unit(self) -> str:
        return self._unit

    @property
    def sources(self) -> Mapping[str, Mapping[str, str]]:
        """Per provider: ``source`` (where the prices come from), ``checked`` (a date), ``note``."""
        return self._sources

    def models(self) -> Mapping[str, PriceEntry]:
        """Every entry, keyed by canonical model id, in table order (read-only)."""
        return self._models

    def entry(self, model: str) -> PriceEntry | None:
        """The entry ``model`` resolves to (see the class docstring), or None."""
        if not isinstance(model, str) or not model.strip():
            return None
        found = self._exact.get(model)
        if found is None:
            found = self._loose.get(_strip_prefix(model))
        if found is None:
            found = self._undated.get(normalize_model_id(model))
        return found

    def lookup(self, model: str) -> Price | None:
        """The price of ``model``, or None when the table does not know it."""
        found = self.entry(model)
        return None if found is None else found.price

    def __len__(self) -> int:
        return len(self._models)

    def __contains__(self, model: object) -> bool:
        return isinstance(model, str) and self.entry(model) is not None

    def __repr__(self) -> str:
        return f"PriceTable(version={self._version!r}, models={len(self._models)})"


@functools.cache
def _default_table() -> PriceTable:
    text = resources.files(__package__).joinpath("prices.yaml").read_text(encoding="utf-8")
    return PriceTable.from_yaml(text, source="bastion/metering/prices.yaml")
