"""The price table, usage normalization and exact Decimal cost (bastion.metering.prices)."""

from __future__ import annotations

import datetime
import re
import tomllib
from decimal import Decimal
from fnmatch import fnmatch
from importlib import resources
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from bastion.metering.prices import (
    DIMENSIONS,
    PRICE_KEYS,
    PROVIDERS,
    Cost,
    Price,
    PriceError,
    PriceTable,
    Usage,
    UsageError,
    cost,
    normalize_model_id,
    worst_case,
)

D = Decimal
REPO = Path(__file__).resolve().parents[1]


def price(**kw: str) -> Price:
    return Price.from_mapping(kw)


@pytest.fixture(scope="module")
def table() -> PriceTable:
    return PriceTable.load_default()


# ------------------------------------------------------------------ hand-worked, one dimension each


def test_input_dimension() -> None:
    # 1,234 input tokens at $2.50/M = 1234 * 2.50 / 1e6 = 3085 / 1e6 = $0.003085
    c = cost(Usage(input_tokens=1234), price(input="2.50", output="10.00"))
    assert c.total == D("0.003085")
    assert c.breakdown["input"] == D("0.003085")
    assert c.as_str() == "0.003085000"


def test_cached_input_dimension() -> None:
    # 10,000 cached tokens at $1.25/M = 12,500 / 1e6 = $0.0125 (the uncached rate would be $0.025)
    c = cost(Usage(cached_input_tokens=10_000), price(input="2.50", cached_input="1.25", output="10.00"))
    assert c.total == D("0.0125")
    assert c.breakdown["cached_input"] == D("0.0125")
    assert c.breakdown["input"] == 0


def test_cache_write_dimension() -> None:
    # 2,048 cache-write tokens at $3.75/M = 7,680 / 1e6 = $0.00768
    p = price(input="3.00", cached_input="0.30", cache_write="3.75", output="15.00")
    c = cost(Usage(cache_write_tokens=2048), p)
    assert c.total == D("0.00768")
    assert c.breakdown["cache_write"] == D("0.00768")


def test_output_dimension() -> None:
    # 777 output tokens at $10.00/M = 7,770 / 1e6 = $0.00777
    c = cost(Usage(output_tokens=777), price(input="2.50", output="10.00"))
    assert c.total == D("0.00777")
    assert c.breakdown["output"] == D("0.00777")


def test_reasoning_dimension() -> None:
    # 4,321 reasoning tokens at $12.00/M (a price whose reasoning rate differs from its output rate)
    # = 51,852 / 1e6 = $0.051852; at the output rate ($8.00/M) it would have been $0.034568
    c = cost(Usage(reasoning_tokens=4321), price(input="2.00", output="8.00", reasoning="12.00"))
    assert c.total == D("0.051852")
    assert c.breakdown["reasoning"] == D("0.051852")
    assert c.breakdown["output"] == 0


def test_reasoning_defaults_to_output_price() -> None:
    # 4,321 reasoning tokens at o3's $8.00/M output rate = 34,568 / 1e6 = $0.034568
    c = cost(Usage(reasoning_tokens=4321), price(input="2.00", output="8.00"))
    assert c.total == D("0.034568")


def test_all_dimensions_combined() -> None:
    p = price(input="2.50", cached_input="1.25", cache_write="3.125", output="10.00", reasoning="12.00")
    u = Usage(input_tokens=1234, cached_input_tokens=10_000, cache_write_tokens=800, output_tokens=777,
              reasoning_tokens=4321)
    c = cost(u, p)
    # input        1,234 * 2.50  =  3,085 -> $0.003085
    # cached      10,000 * 1.25  = 12,500 -> $0.0125
    # cache_write    800 * 3.125 =  2,500 -> $0.0025
    # output         777 * 10.00 =  7,770 -> $0.00777
    # reasoning    4,321 * 12.00 = 51,852 -> $0.051852
    # total                         77,707 -> $0.077707
    assert dict(c.breakdown) == {
        "input": D("0.003085"),
        "cached_input": D("0.0125"),
        "cache_write": D("0.0025"),
        "output": D("0.00777"),
        "reasoning": D("0.051852"),
    }
    assert c.total == D("0.077707")
    assert c.as_str() == "0.077707000"


# ---------------------------------------------------------------------- provider usage objects


def test_openai_usage_with_cached_and_reasoning_details(table: PriceTable) -> None:
    usage = {
        "prompt_tokens": 5000,  # INCLUDES the 3,072 cached tokens
        "completion_tokens": 1200,  # INCLUDES the 1,024 reasoning tokens
        "total_tokens": 6200,
        "prompt_tokens_details": {"cached_tokens": 3072, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 1024, "audio_tokens": 0,
                                      "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
    }
    u = Usage.from_openai(usage)
    assert u == Usage(input_tokens=1928, cached_input_tokens=3072, output_tokens=176, reasoning_tokens=1024)
    assert (u.prompt_tokens, u.completion_tokens, u.total_tokens) == (5000, 1200, 6200)
    c = cost(u, table.lookup("o4-mini"))  # $1.10 in, $0.275 cached, $4.40 out (reasoning = out)
    # input      1,928 * 1.10  = 2,120.8 -> $0.0021208
    # cached     3,072 * 0.275 =   844.8 -> $0.0008448
    # output       176 * 4.40  =   774.4 -> $0.0007744
    # reasoning  1,024 * 4.40  = 4,505.6 -> $0.0045056
    # total                      8,245.6 -> $0.0082456
    assert c.breakdown["input"] == D("0.0021208")
    assert c.breakdown["cached_input"] == D("0.0008448")
    assert c.breakdown["output"] == D("0.0007744")
    assert c.breakdown["reasoning"] == D("0.0045056")
    assert c.total == D("0.0082456")
    # and all 1,200 completion tokens at $4.40/M = $0.00528, as OpenAI bills them
    assert c.breakdown["output"] + c.breakdown["reasoning"] == D("0.00528")


def test_openai_usage_without_details_and_with_null_details() -> None:
    assert Usage.from_openai({"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}) == Usage(
        input_tokens=10, output_tokens=5
    )
    nulls = {"prompt_tokens": 10, "completion_tokens": 5, "prompt_tokens_details": None,
             "completion_tokens_details": {"reasoning_tokens": None}}
    assert Usage.from_openai(nulls) == Usage(input_tokens=10, output_tokens=5)
    assert Usage.from_openai(None) == Usage()
    assert Usage.from_openai({}) == Usage()


def test_openai_embeddings_usage() -> None:
    # the simulator's (and OpenAI's) embeddings usage has no completion_tokens
    assert Usage.from_openai({"prompt_tokens": 42, "total_tokens": 42}) == Usage(input_tokens=42)


def test_openai_responses_api_usage() -> None:
    usage = {"input_tokens": 900, "input_tokens_details": {"cached_tokens": 400},
             "output_tokens": 300, "output_tokens_details": {"reasoning_tokens": 120}, "total_tokens": 1200}
    assert Usage.from_openai(usage) == Usage(input_tokens=500, cached_input_tokens=400, output_tokens=180,
                                             reasoning_tokens=120)


def test_openai_usage_details_larger_than_totals_are_clamped() -> None:
    usage = {"prompt_tokens": 10, "completion_tokens": 5, "prompt_tokens_details": {"cached_tokens": 99},
             "completion_tokens_details": {"reasoning_tokens": 99}}
    assert Usage.from_openai(usage) == Usage(cached_input_tokens=10, reasoning_tokens=5)


@pytest.mark.parametrize(
    "bad",
    [
        {"prompt_tokens": -1},
        {"prompt_tokens": "12"},
        {"prompt_tokens": True},
        {"prompt_tokens": 1.5},
        {"prompt_tokens": 1, "prompt_tokens_details": [3]},
        [1, 2],
    ],
)
def test_openai_usage_rejects_malformed_counts(bad: object) -> None:
    with pytest.raises(UsageError):
        Usage.from_openai(bad)  # type: ignore[arg-type]


def test_integral_float_counts_are_accepted() -> None:
    assert Usage.from_openai({"prompt_tokens": 12.0}) == Usage(input_tokens=12)


def test_anthropic_usage_with_cache_read_and_write(table: PriceTable) -> None:
    usage = {"input_tokens": 1500,  # EXCLUDES cache reads and writes
             "cache_read_input_tokens": 20_000, "cache_creation_input_tokens": 3000, "output_tokens": 850}
    u = Usage.from_anthropic(usage)
    assert u == Usage(input_tokens=1500, cached_input_tokens=20_000, cache_write_tokens=3000, output_tokens=850)
    assert u.prompt_tokens == 24_500
    c = cost(u, table.lookup("claude-sonnet-4-5-20250929"))  # $3 in, $0.30 hit, $3.75 write, $15 out
    # input        1,500 * 3.00  =  4,500 -> $0.0045
    # cache read  20,000 * 0.30  =  6,000 -> $0.006
    # cache write  3,000 * 3.75  = 11,250 -> $0.01125
    # output         850 * 15.00 = 12,750 -> $0.01275
    # total                        34,500 -> $0.0345
    assert c.breakdown["input"] == D("0.0045")
    assert c.breakdown["cached_input"] == D("0.006")
    assert c.breakdown["cache_write"] == D("0.01125")
    assert c.breakdown["output"] == D("0.01275")
    assert c.total == D("0.0345")


def test_anthropic_usage_without_cache_fields() -> None:
    assert Usage.from_anthropic({"input_tokens": 12, "output_tokens": 7}) == Usage(input_tokens=12, output_tokens=7)
    # the simulator's Anthropic dialect sends explicit zeros; a message_delta may carry nulls
    sim = {"input_tokens": 12, "cache_creation_input_tokens": 0, "cache_read_input_tokens": None, "output_tokens": 7}
    assert Usage.from_anthropic(sim) == Usage(input_tokens=12, output_tokens=7)
    assert Usage.from_anthropic(None) == Usage()
    with pytest.raises(UsageError):
        Usage.from_anthropic({"input_tokens": -3})


def test_usage_validates_and_adds() -> None:
    with pytest.raises(UsageError):
        Usage(input_tokens=-1)
    with pytest.raises(UsageError):
        Usage(output_tokens=1.0)  # type: ignore[arg-type]
    assert Usage(input_tokens=1, reasoning_tokens=2) + Usage(input_tokens=3, cache_write_tokens=4) == Usage(
        input_tokens=4, cache_write_tokens=4, reasoning_tokens=2
    )


# ----------------------------------------------------------------------- rounding and formatting


def test_round_half_even_at_nine_decimals() -> None:
    p = price(input="0.0375", output="0.0375")
    # 1 token  * $0.0375/M = $0.0000000375 =  37.5 nano-dollars -> 38 (half to even)
    assert cost(Usage(input_tokens=1), p).total == D("0.000000038")
    # 3 tokens * $0.0375/M = $0.0000001125 = 112.5 nano-dollars -> 112 (half to even)
    assert cost(Usage(input_tokens=3), p).total == D("0.000000112")
    tiny = price(input="0.0001", output="0")
    # 5 tokens * $0.0001/M = 0.5 nano -> 0; 15 tokens = 1.5 nano -> 2; 25 tokens = 2.5 nano -> 2
    assert cost(Usage(input_tokens=5), tiny).total == 0
    assert cost(Usage(input_tokens=15), tiny).total == D("0.000000002")
    assert cost(Usage(input_tokens=25), tiny).total == D("0.000000002")


def test_each_dimension_rounds_and_total_is_their_exact_sum() -> None:
    p = price(input="0.0375", output="0.0375")
    # input 37.5 nano -> 38, output 37.5 nano -> 38: total 76 nano (rounding the exact 75 would give 76 too,
    # but the point is the total is the sum of the breakdown, never re-rounded on its own)
    c = cost(Usage(input_tokens=1, output_tokens=1), p)
    assert c.breakdown["input"] == c.breakdown["output"] == D("0.000000038")
    assert c.total == D("0.000000076") == sum(c.breakdown.values())


def test_cost_values_are_decimals_at_nine_places() -> None:
    c = cost(Usage(input_tokens=1_000_000, output_tokens=2), price(input="2.50", output="10.00"))
    for value in (c.total, *c.breakdown.values()):
        assert isinstance(value, Decimal)
        assert value.as_tuple().exponent == -9
    assert tuple(c.breakdown) == DIMENSIONS
    assert c.as_str() == "2.500020000"


def test_cost_as_str_never_uses_an_exponent() -> None:
    assert Cost.zero().as_str() == "0.000000000"
    assert str(cost(Usage(input_tokens=1), price(input="0.001", output="0"))) == "0.000000001"
    big = cost(Usage(input_tokens=10**12), price(input="75.00", output="0"))
    assert big.as_str() == "75000000.000000000"


def test_cost_addition() -> None:
    p = price(input="2.50", output="10.00")
    a, b = cost(Usage(input_tokens=1234), p), cost(Usage(output_tokens=777), p)
    s = a + b
    assert s.total == D("0.010855")  # $0.003085 + $0.00777
    assert s.breakdown["input"] == D("0.003085") and s.breakdown["output"] == D("0.00777")
    assert Cost.zero() + a == a


# --------------------------------------------------------------------------------- worst case


def test_worst_case_openai() -> None:
    # gpt-4o-like: 1,000 input at $2.50/M + 500 max output at $10.00/M = (2,500 + 5,000) / 1e6 = $0.0075
    assert worst_case(1000, 500, price(input="2.50", cached_input="1.25", output="10.00")) == D("0.0075")


def test_worst_case_uses_the_dearer_of_output_and_reasoning() -> None:
    # 100 output at max($8, $12)/M = $0.0012
    assert worst_case(0, 100, price(input="2.00", output="8.00", reasoning="12.00")) == D("0.0012")


def test_worst_case_covers_anthropic_cache_writes() -> None:
    # every input token could be a cache write: 1,000 * $3.75/M + 100 * $15/M = (3,750 + 1,500) / 1e6 = $0.00525
    p = price(input="3.00", cached_input="0.30", cache_write="3.75", output="15.00")
    assert worst_case(1000, 100, p) == D("0.00525")
    assert worst_case(1000, 100, p) >= cost(Usage(cache_write_tokens=1000, output_tokens=100), p).total


def test_worst_case_rounds_up_and_covers_per_dimension_rounding() -> None:
    # With prices of at most 3 decimals nothing rounds: 1 token at $0.001/M is exactly 1 nano-dollar.
    assert worst_case(1, 0, price(input="0.001", output="0")) == D("0.000000001")
    # cost() rounds each dimension half-even, so with $0.0006/M, 3 input tokens split over input,
    # cached_input and cache_write cost 3 * (0.6 -> 1) = 3 nano although 3 * 0.6 = 1.8 nano exactly.
    p = price(input="0.0006", output="0")
    split = cost(Usage(input_tokens=1, cached_input_tokens=1, cache_write_tokens=1), p)
    assert split.total == D("0.000000003")
    # worst_case adds half a nano per dimension whose price has more than 3 decimals (input, and
    # cached_input and cache_write, which default to it): 1.8 + 3 * 0.5 = 3.3 -> rounded up to 4 nano
    assert worst_case(3, 0, p) == D("0.000000004") >= split.total
    with pytest.raises(UsageError):
        worst_case(-1, 0, price(input="1", output="1"))


# ------------------------------------------------------------------------------------- Price


def test_price_defaults() -> None:
    p = Price.from_mapping({"input": "2.50", "output": "10.00"})
    assert p == Price(input=D("2.50"), output=D("10.00"), cached_input=D("2.50"), cache_write=D("2.50"),
                      reasoning=D("10.00"))
    assert Price.from_mapping(p.as_dict()) == p


def test_price_accepts_ints_and_converts_floats_through_repr() -> None:
    p = Price.from_mapping({"input": 3, "output": 0.1, "cached_input": 0.075})
    assert p.input == D(3)
    assert p.output == D("0.1")  # not Decimal(0.1) == 0.1000000000000000055511151231257827...
    assert p.cached_input == D("0.075")


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"input": "2.50"}, "price.output: required"),
        ({"output": "1"}, "price.input: required"),
        ({"input": "abc", "output": "1"}, "price.input: 'abc' is not a number"),
        ({"input": "-1", "output": "1"}, "cannot be negative"),
        ({"input": True, "output": "1"}, "price.input"),
        ({"input": "NaN", "output": "1"}, "finite"),
        ({"input": float("inf"), "output": "1"}, "finite"),
        ({"input": [1], "output": "1"}, "got list"),
        ({"input": "1", "output": "1", "cache_read": "0.1"}, "unknown price key(s) cache_read"),
    ],
)
def test_price_validation_errors(data: dict, fragment: str) -> None:
    with pytest.raises(PriceError) as err:
        Price.from_mapping(data)
    assert fragment in str(err.value)


def test_price_constructor_takes_decimals_only() -> None:
    with pytest.raises(PriceError):
        Price(input=2.5, output=D(1), cached_input=D(1), cache_write=D(1), reasoning=D(1))  # type: ignore[arg-type]
    with pytest.raises(PriceError):
        Price.from_mapping(["input"])  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------ lookup


def test_lookup_exact_id(table: PriceTable) -> None:
    assert table.lookup("gpt-4o").input == D("2.50")
    assert table.lookup("claude-sonnet-4-5-20250929").cache_write == D("3.75")
    assert table.lookup("claude-haiku-4-5-20251001").output == D("5.00")
    assert table.lookup("claude-opus-4-1-20250805").input == D("15.00")


def test_lookup_alias(table: PriceTable) -> None:
    assert table.entry("gpt-4o-2024-08-06").model == "gpt-4o"
    assert table.entry("claude-sonnet-4-5").model == "claude-sonnet-4-5-20250929"
    assert table.entry("claude-3-5-haiku-latest").model == "claude-3-5-haiku-20241022"
    assert table.entry("meta-llama/Llama-3.3-70B-Instruct-Turbo").model == "llama-3.3-70b-instruct"


def test_lookup_dated_snapshot_normalization(table: PriceTable) -> None:
    # unlisted snapshots fall back to the undated model
    assert table.entry("gpt-4o-2099-01-01").model == "gpt-4o"
    assert table.entry("gpt-4o-mini-2099-01-01").model == "gpt-4o-mini"
    assert table.entry("o3-mini-2099-01-01").model == "o3-mini"
    assert table.entry("claude-sonnet-4-5-20991231").model == "claude-sonnet-4-5-20250929"
    assert table.entry("claude-3-5-sonnet-20991231").model == "claude-3-5-sonnet-20241022"
    # Vertex AI spells Anthropic snapshots with @
    assert table.entry("claude-haiku-4-5@20251001").model == "claude-haiku-4-5-20251001"
    # a snapshot listed at its own price is never folded into the undated model
    assert table.lookup("gpt-4o-2024-05-13").input == D("5.00")
    assert table.lookup("openai/gpt-4o-2024-05-13").input == D("5.00")


def test_lookup_prefixes_and_case(table: PriceTable) -> None:
    assert table.entry("openai/gpt-4o").model == "gpt-4o"
    assert table.entry("azure/gpt-4.1-mini").model == "gpt-4.1-mini"
    assert table.entry("models/gemini-2.5-pro").model == "gemini-2.5-pro"
    assert table.entry("GPT-4o").model == "gpt-4o"
    assert table.entry("anthropic/claude-opus-4-1-20250805").model == "claude-opus-4-1-20250805"


def test_lookup_unknown_is_none(table: PriceTable) -> None:
    for model in ("no-such-model", "", "   ", "gpt-4o-turbo-max", "my-azure-deployment", "llama3.3:70b"):
        assert table.lookup(model) is None
        assert model not in table
    assert table.lookup(None) is None  # type: ignore[arg-type]


def test_normalize_model_id() -> None:
    assert normalize_model_id("gpt-4o-2024-08-06") == "gpt-4o"
    assert normalize_model_id("claude-sonnet-4-5-20250929") == "claude-sonnet-4-5"
    assert normalize_model_id(" Azure/GPT-4o ") == "gpt-4o"
    assert normalize_model_id("claude-opus-4-1@20250805") == "claude-opus-4-1"
    assert normalize_model_id("gpt-3.5-turbo-0125") == "gpt-3.5-turbo-0125"  # MMDD is not a date suffix
    assert normalize_model_id("o3") == "o3"


# ---------------------------------------------------------------------------- the packaged file


def _packaged_yaml() -> str:
    return resources.files("bastion.metering").joinpath("prices.yaml").read_text(encoding="utf-8")


def test_packaged_table_loads_with_a_dated_version(table: PriceTable) -> None:
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", table.version)
    datetime.date.fromisoformat(table.version)
    assert table.currency == "USD" and table.unit == "per_million_tokens"
    assert len(table) >= 60
    assert PriceTable.load_default() is table  # cached


def test_packaged_table_names_a_source_and_check_date_per_provider(table: PriceTable) -> None:
    used = {e.provider for e in table.models().values()}
    assert used <= PROVIDERS
    for provider in used:
        info = table.sources[provider]
        assert info["source"]
        datetime.date.fromisoformat(info["checked"])


def test_packaged_prices_are_quoted_strings_never_floats() -> None:
    text = _packaged_yaml()
    raw = yaml.safe_load(text)
    assert isinstance(raw["version"], str)
    for model, entry in raw["models"].items():
        for key in PRICE_KEYS:
            if key in entry:
                assert isinstance(entry[key], str), f"{model}.{key} is {type(entry[key]).__name__}, quote it"
    unquoted = re.compile(rf"^\s+({'|'.join(PRICE_KEYS)}):\s*[-+.\d]", re.M)
    assert not unquoted.findall(text)


def test_every_packaged_entry_is_valid_and_positive(table: PriceTable) -> None:
    for model, e in table.models().items():
        p = e.price
        assert e.provider in PROVIDERS
        assert p.input > 0, model
        assert all(getattr(p, k) >= 0 for k in PRICE_KEYS), model
        if "embed" in model or "ada" in model:
            assert p.output == 0, model
        else:
            assert p.output > 0, model
            assert p.output >= p.input, model  # output never costs less than input on any price list
        assert p.cached_input <= p.input, model
        assert p.cache_write >= p.input, model
        assert p.reasoning == p.output, model  # no provider prices reasoning apart from output today
        assert all(getattr(p, k) < 1000 for k in PRICE_KEYS), model
        for size in (e.context_window, e.max_output):
            assert size is None or size > 0
        if e.context_window and e.max_output:
            assert e.max_output <= e.context_window, model


def test_anthropic_cache_prices_follow_the_published_multipliers(table: PriceTable) -> None:
    for model, e in table.models().items():
        # Claude 3 Haiku is the one exception: its published $0.30 write / $0.03 hit are rounded
        if e.provider == "anthropic" and model != "claude-3-haiku-20240307":
            assert e.price.cache_write == e.price.input * D("1.25"), model
            assert e.price.cached_input == e.price.input * D("0.1"), model


def test_packaged_table_covers_the_required_models(table: PriceTable) -> None:
    required = [
        "gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini", "gpt-4.1-nano", "o1", "o3", "o3-mini", "o4-mini",
        "gpt-5", "gpt-5-mini", "gpt-5-nano", "text-embedding-3-small", "text-embedding-3-large",
        "text-embedding-ada-002", "claude-sonnet-4-5-20250929", "claude-haiku-4-5-20251001",
        "claude-opus-4-1-20250805", "claude-3-7-sonnet-20250219", "claude-3-5-sonnet-20241022",
        "claude-3-5-haiku-20241022", "gemini-2.5-pro", "gemini-2.5-flash", "gemini-2.5-flash-lite",
        "gemini-2.0-flash", "llama-3.1-8b-instruct", "llama-3.1-70b-instruct", "llama-3.1-405b-instruct",
        "llama-3.3-70b-instruct", "mistral-7b-instruct", "mixtral-8x7b-instruct", "qwen-2.5-72b-instruct",
        "deepseek-v3", "deepseek-r1", "sim-small", "sim-large", "sim-claude", "sim-embed", "azure/gpt-4o",
        "gpt-35-turbo",
    ]
    missing = [m for m in required if table.lookup(m) is None]
    assert not missing


def test_simulator_prices_are_marked(table: PriceTable) -> None:
    sims = {m: e for m, e in table.models().items() if m.startswith("sim-")}
    assert set(sims) == {"sim-small", "sim-large", "sim-claude", "sim-embed"}
    for e in sims.values():
        assert e.provider == "sim"
        assert "SIMULATOR" in (e.note or "")


def test_every_model_of_the_default_config_has_a_price(table: PriceTable) -> None:
    from bastion.config.defaults import default_config_dict

    config = default_config_dict({"OPENAI_API_KEY": "x", "ANTHROPIC_API_KEY": "y"})
    upstream = {d["model"] for m in config["models"].values() for d in m["deployments"]}
    assert upstream and not [m for m in upstream if table.lookup(m) is None]


def test_prices_yaml_is_package_data() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["bastion"]
    assert any(fnmatch("metering/prices.yaml", p) for p in patterns)


# ------------------------------------------------------------------------------ table parsing


def _table_yaml(models: str, **top: str) -> str:
    head = {"version": '"2026-11-01"', "currency": "USD", "unit": "per_million_tokens", **top}
    return "".join(f"{k}: {v}\n" for k, v in head.items()) + "models:\n" + models


def test_from_yaml_minimal_table() -> None:
    t = PriceTable.from_yaml(_table_yaml('  m-1:\n    provider: open\n    input: "1"\n    output: "2"\n'))
    assert t.version == "2026-11-01"
    assert t.lookup("m-1") == price(input="1", output="2")
    assert list(t.models()) == ["m-1"]


def test_from_yaml_accepts_an_unquoted_date_version() -> None:
    text = _table_yaml('  m:\n    provider: open\n    input: "1"\n    output: "2"\n', version="2026-11-01")
    assert PriceTable.from_yaml(text).version == "2026-11-01"


@pytest.mark.parametrize(
    ("models", "top", "fragment"),
    [
        ('  m:\n    provider: nowhere\n    input: "1"\n    output: "1"\n', {}, "models.m.provider"),
        ('  m:\n    provider: open\n    input: "1"\n    output: "1"\n    colour: red\n', {}, "unknown key(s) colour"),
        ('  m:\n    provider: open\n    input: "x"\n    output: "1"\n', {}, "models.m.input"),
        ('  m:\n    provider: open\n    input: "1"\n    output: "1"\n    context_window: 0\n', {}, "context_window"),
        ('  a:\n    provider: open\n    input: "1"\n    output: "1"\n    aliases: [b]\n'
         '  b:\n    provider: open\n    input: "1"\n    output: "1"\n', {}, "already a name of a"),
        ('  a:\n    provider: open\n    input: "1"\n    output: "1"\n'
         '  A:\n    provider: open\n    input: "1"\n    output: "1"\n', {}, "same id"),
        ('  a:\n    provider: open\n    input: "1"\n    output: "1"\n    aliases: [x-2025-01-01]\n'
         '  b:\n    provider: open\n    input: "2"\n    output: "2"\n    aliases: [x-2025-02-02]\n', {},
         "fall back to 'x'"),
        ('  m:\n    provider: open\n    input: "1"\n    output: "1"\n', {"currency": "EUR"}, "only USD"),
        ('  m:\n    provider: open\n    input: "1"\n    output: "1"\n', {"version": '"latest"'}, "version"),
        ('  m:\n    provider: open\n    input: "1"\n    output: "1"\n', {"extra": "1"}, "unknown top-level"),
        ("  {}\n", {}, "non-empty"),
    ],
)
def test_from_yaml_errors_name_the_key(models: str, top: dict, fragment: str) -> None:
    with pytest.raises(PriceError) as err:
        PriceTable.from_yaml(_table_yaml(models, **top))
    assert fragment in str(err.value)


def test_from_yaml_rejects_invalid_yaml() -> None:
    with pytest.raises(PriceError):
        PriceTable.from_yaml("models: [unclosed")


def test_dated_ids_sharing_a_price_may_share_a_fallback() -> None:
    models = ('  a:\n    provider: open\n    input: "1"\n    output: "1"\n    aliases: [x-2025-01-01]\n'
              '  b:\n    provider: open\n    input: "1"\n    output: "1"\n    aliases: [x-2025-02-02]\n')
    t = PriceTable.from_yaml(_table_yaml(models))
    assert t.lookup("x-2026-01-01") == price(input="1", output="1")


def test_from_file(tmp_path: Path) -> None:
    path = tmp_path / "prices.yaml"
    path.write_text(_packaged_yaml())
    assert len(PriceTable.from_file(path)) == len(PriceTable.load_default())


# -------------------------------------------------------------------------------- properties

prices_st = st.builds(
    Price,
    input=st.decimals(min_value=0, max_value=1000, places=4),
    output=st.decimals(min_value=0, max_value=1000, places=4),
    cached_input=st.decimals(min_value=0, max_value=1000, places=4),
    cache_write=st.decimals(min_value=0, max_value=1000, places=4),
    reasoning=st.decimals(min_value=0, max_value=1000, places=4),
)
three_place_prices_st = st.builds(
    Price,
    input=st.decimals(min_value=0, max_value=1000, places=3),
    output=st.decimals(min_value=0, max_value=1000, places=3),
    cached_input=st.decimals(min_value=0, max_value=1000, places=3),
    cache_write=st.decimals(min_value=0, max_value=1000, places=3),
    reasoning=st.decimals(min_value=0, max_value=1000, places=3),
)
tokens_st = st.integers(min_value=0, max_value=10**10)
usages_st = st.builds(Usage, tokens_st, tokens_st, tokens_st, tokens_st, tokens_st)
FIELDS = ("input_tokens", "cached_input_tokens", "cache_write_tokens", "output_tokens", "reasoning_tokens")


@given(usages_st, prices_st)
def test_cost_is_additive_over_dimensions(u: Usage, p: Price) -> None:
    c = cost(u, p)
    assert c.total == sum(c.breakdown.values())
    singles = [cost(Usage(**{f: getattr(u, f)}), p) for f in FIELDS]
    assert c.total == sum(s.total for s in singles)
    for dim, single in zip(DIMENSIONS, singles, strict=True):
        assert c.breakdown[dim] == single.total


@given(usages_st, prices_st, st.sampled_from(FIELDS), st.integers(min_value=1, max_value=10**9))
def test_cost_is_monotonic_in_tokens(u: Usage, p: Price, field: str, extra: int) -> None:
    more = Usage(**{f: getattr(u, f) + (extra if f == field else 0) for f in FIELDS})
    assert cost(more, p).total >= cost(u, p).total


@given(usages_st, usages_st, three_place_prices_st)
def test_cost_is_additive_over_requests_for_prices_with_three_decimals(a: Usage, b: Usage, p: Price) -> None:
    # at most 3 decimals per million = at most 9 decimals per token: no rounding, so costs add exactly
    assert cost(a + b, p).total == cost(a, p).total + cost(b, p).total


@given(usages_st, prices_st)
def test_worst_case_bounds_the_cost_of_any_split(u: Usage, p: Price) -> None:
    assert worst_case(u.prompt_tokens, u.completion_tokens, p) >= cost(u, p).total


@given(usages_st, prices_st)
def test_costs_are_never_floats_and_always_nine_places(u: Usage, p: Price) -> None:
    c = cost(u, p)
    assert all(type(v) is Decimal and v.as_tuple().exponent == -9 for v in (c.total, *c.breakdown.values()))
    assert re.fullmatch(r"\d+\.\d{9}", c.as_str())
