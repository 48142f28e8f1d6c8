"""Unit tests of the simulator's pure parts: tokens, directives, generation, config, faults."""

from __future__ import annotations

import random

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.sim import generate as gen
from bastion.sim.config import Faults, Latency, SimConfig, load_config
from bastion.sim.faults import FaultDecider

gen.warm_tokenizer()  # load o200k once, before hypothesis times the first example


@given(st.integers(min_value=0, max_value=300), st.integers())
def test_prose_has_exactly_n_tokens(n: int, seed: int) -> None:
    pieces = gen.prose(random.Random(seed), n)
    assert len(pieces) == n
    assert gen.count_tokens("".join(pieces)) == n


@given(st.text())
def test_pieces_join_back(text: str) -> None:
    assert "".join(gen.split_pieces(text)) == text


def test_count_tokens() -> None:
    assert gen.count_tokens("Hello, world!") == 4
    assert gen.count_tokens("") == 0


def test_directives() -> None:
    text, d = gen.parse_directives("hi [[sim:fault=503]] there [[sim:tokens=5]][[sim:echo]] [[sim:tps=x]]")
    assert text == "hi  there  "
    assert (d.fault, d.tokens, d.echo, d.tps) == ("503", 5, True, None)
    gen.apply_headers(d, {"x-sim-fault": "DROP", "x-sim-latency-ms": "20", "x-sim-seed": "3"})
    assert (d.fault, d.latency_ms, d.seed) == ("drop", 20.0, 3)
    _, bad = gen.parse_directives("[[sim:fault=teapot]]")
    assert bad.fault is None
    for kind in ("content_filter", "context_length"):
        assert gen.parse_directives(f"[[sim:fault={kind}]]")[1].fault == kind
        assert gen.apply_headers(gen.Directives(), {"x-sim-fault": kind.upper()}).fault == kind


def test_stop_and_cap() -> None:
    spec = gen.GenSpec(seed=1, forced_tokens=20)
    full = gen.generate(spec)[0]
    word = full.text.split()[3]
    cut = gen.generate(gen.GenSpec(seed=1, forced_tokens=20, stop=[word]))[0]
    assert cut.finish == "stop_sequence" and cut.stop_sequence == word
    assert cut.text == full.text[: full.text.index(word)]
    capped = gen.generate(gen.GenSpec(seed=1, forced_tokens=20, max_tokens=5))[0]
    assert capped.finish == "length" and capped.tokens == 5 and full.text.startswith(capped.text)


SCHEMA = {
    "type": "object",
    "$defs": {"Point": {"type": "object", "properties": {"x": {"type": "number", "minimum": -1, "maximum": 1}},
                        "required": ["x"]}},
    "properties": {
        "id": {"type": "string", "format": "uuid"},
        "when": {"type": "string", "format": "date-time"},
        "n": {"type": "integer", "exclusiveMinimum": 3, "exclusiveMaximum": 6},
        "kind": {"enum": ["a", "b"]},
        "fixed": {"const": 42},
        "maybe": {"anyOf": [{"type": "null"}, {"type": "boolean"}]},
        "pts": {"type": "array", "items": {"$ref": "#/$defs/Point"}, "minItems": 2, "maxItems": 3},
        "name": {"type": "string", "minLength": 30, "maxLength": 40},
    },
    "required": ["id", "when", "n", "kind", "fixed", "maybe", "pts", "name"],
}


@given(st.integers())
def test_gen_value_satisfies_schema(seed: int) -> None:
    v = gen.gen_value(SCHEMA, random.Random(seed))
    assert set(v) == set(SCHEMA["required"])
    assert len(v["id"]) == 36 and v["when"].endswith("Z")
    assert v["n"] in (4, 5) and v["kind"] in ("a", "b") and v["fixed"] == 42
    assert isinstance(v["maybe"], bool)
    assert 2 <= len(v["pts"]) <= 3 and all(-1 <= p["x"] <= 1 for p in v["pts"])
    assert 30 <= len(v["name"]) <= 40


HOSTILE_SCHEMAS = [
    {"type": "object", "properties": ["a", 1], "required": ["q"]}, {"type": "object", "required": "a"},
    {"type": "array", "minItems": 10**9}, {"type": "string", "minLength": 10**12}, {"type": "array", "maxItems": "x"},
    {"type": "integer", "minimum": "x"}, {"type": "number", "maximum": [1]}, {"enum": {"a": 1}}, {"anyOf": {"a": 1}},
    {"allOf": 5}, {"allOf": [{"$ref": 5}, {"required": 7}]}, {"$ref": 7}, {"allOf": [{"$ref": "#"}]},
    {"type": "number", "minimum": -1.7e308, "maximum": 1.7e308}, {"type": "string", "maxLength": -3},
    {"type": "integer", "minimum": 2.0**64}, {"type": "integer", "maximum": -1e300},  # beyond what JSON writers take
]


@pytest.mark.parametrize("schema", HOSTILE_SCHEMAS, ids=[str(i) for i in range(len(HOSTILE_SCHEMAS))])
def test_gen_value_survives_hostile_schemas(schema: dict) -> None:
    """A schema is caller input: wrong-typed keywords are ignored and sizes capped (the endpoint fuzz found a
    list of properties crashing the simulator: a 500; minItems 10**9 would have hung it)."""
    v = gen.gen_value(schema, random.Random(1))
    assert len(orjson.dumps(v)) < 2 * gen.MAX_STRING * gen.MAX_ITEMS


def test_gen_value_keeps_zero_bounds() -> None:
    assert gen.gen_value({"type": "array", "minItems": 0, "maxItems": 0}, random.Random(1)) == []


def test_embedding_prefix_and_norm() -> None:
    a = gen.embedding("hello", 384)
    b = gen.embedding("hello", 384)
    assert a == b and abs(sum(x * x for x in a) - 1) < 1e-5
    assert gen.embedding("hello", 8) != gen.embedding("world", 8)


def test_seed_rules() -> None:
    args = (1, "default", "m", "v1", [{"role": "user", "content": "x"}])
    assert gen.seed_for(*args, 5, 1) == gen.seed_for(*args, 5, 1)
    assert gen.seed_for(*args, None, 0) == gen.seed_for(*args, None, 0)
    assert gen.seed_for(*args, None, 1) != gen.seed_for(*args, None, 1)
    assert gen.seed_for(*args, 5, 1) != gen.seed_for(1, "default", "m", "v2", args[4], 5, 1)


def test_config_profiles_and_merge(tmp_path) -> None:
    path = tmp_path / "sim.yaml"
    path.write_text("seed: 3\nfaults: {rate_429: 0.1}\nprofiles:\n  flaky: {faults: {rate_500: 0.3}}\n")
    cfg = load_config(path, model_version="x")
    flaky = cfg.deployment("flaky")
    assert flaky.faults.rate_500 == 0.3 and flaky.faults.rate_429 == 0.1 and flaky.model_version == "x"
    assert cfg.deployment("unknown").faults == cfg.faults
    merged = cfg.merged({"profile": "flaky", "model_version": "y", "latency": {"median_ms": 5}})
    assert merged.deployment("flaky").model_version == "y" and merged.model_version == "x"
    assert merged.deployment("flaky").latency.median_ms == 5
    with pytest.raises(ValueError):
        cfg.merged({"faults": {"rate_500": 0.8, "rate_503": 0.8}})
    with pytest.raises(ValueError):
        SimConfig.model_validate({"profiles": {"p": {"faults": {"rate_nope": 1}}}})


def test_latency_distributions() -> None:
    rng = random.Random(0)
    assert Latency(median_ms=10).sample_ms(rng) == 10
    for dist in ("uniform", "lognormal"):
        lat = Latency(distribution=dist, median_ms=10, p99_ms=100)
        samples = sorted(lat.sample_ms(rng) for _ in range(4000))
        assert 7 < samples[2000] < 13 and 70 < samples[3960] < 130


def test_fault_decider_pattern() -> None:
    faults = Faults(rate_429=0.3, rate_500=0.3)
    a = FaultDecider(1, "p")
    pattern = [a.decide(faults) for _ in range(50)]
    a.reset()
    assert [a.decide(faults) for _ in range(50)] == pattern
    assert {None, "429", "500"} == set(pattern)
    assert FaultDecider(1, "p").decide(faults, "drop") == "drop"


def test_tail_context_and_filter_config() -> None:
    cfg = SimConfig.model_validate({
        "context_window": 100, "latency": {"median_ms": 5, "slow_rate": 0.1},
        "profiles": {"big": {"context_window": 0, "latency": {"slow_factor": 3}}, "same": {},
                     "small": {"context_window": 10}}})
    assert cfg.deployment().context_window == 100 and cfg.deployment("same").context_window == 100
    assert cfg.deployment("big").context_window is None and cfg.deployment("small").context_window == 10
    big = cfg.deployment("big").latency
    assert (big.median_ms, big.slow_rate, big.slow_factor) == (5, 0.1, 3)
    assert SimConfig().deployment().context_window is None and SimConfig().latency.slow_factor == 10
    for bad in ({"latency": {"slow_factor": 0.9}}, {"latency": {"slow_rate": 2}}, {"context_window": -5},
                {"faults": {"rate_content_filter": 0.6, "rate_429": 0.6}}):
        with pytest.raises(ValueError):
            SimConfig.model_validate(bad)
    assert Faults(rate_content_filter=0.2).rates()[-1] == ("content_filter", 0.2)


def test_slow_draw_is_seeded_per_profile() -> None:
    from bastion.sim.state import ProfileStats, SimState

    cfg = SimConfig.model_validate({"latency": {"median_ms": 10, "slow_rate": 0.3, "slow_factor": 5}})

    def delays(profile: str) -> list[float]:
        state = SimState(cfg)
        return [state.delay_s(state.deployment(profile), None, ProfileStats()) for _ in range(200)]

    a = delays("p")
    assert a == delays("p") and a != delays("q")
    assert 30 < sum(d == 0.05 for d in a) < 90 and all(d in (0.01, 0.05) for d in a)
