"""The semantic cache's embedder (offline all-MiniLM-L6-v2) and nearest-neighbour index.

The index tests need numpy, the embedder tests the ``semantic`` extra (``pip install -e '.[dev,semantic]'``);
each group is skipped with the reason when its part is missing.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

np = pytest.importorskip("numpy", reason="numpy comes with the semantic extra: pip install -e '.[semantic]'")

from bastion.cache import embedder as emb  # noqa: E402
from bastion.cache.semantic import DEFAULT_THRESHOLD, SemanticIndex, lexically_compatible  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PAIRS = Path(__file__).resolve().parent / "data" / "paraphrases.jsonl"

needs_model = pytest.mark.skipif(
    not emb.available(), reason=f"the semantic extra is not installed ({emb.INSTALL_HINT})"
)


def unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)


def rand_units(n: int, dim: int = 384, seed: int = 0) -> np.ndarray:
    return unit(np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32))


@pytest.fixture(scope="module")
def embedder() -> emb.Embedder:
    if not emb.available():
        pytest.skip(f"the semantic extra is not installed ({emb.INSTALL_HINT})")
    return emb.Embedder.shared()


# ---- embedder --------------------------------------------------------------------------------------------


@needs_model
def test_embed_shape_dtype_unit_norm(embedder: emb.Embedder) -> None:
    v = embedder.embed(["How do I reset my password?", "", "Ünïcödé ✓ 中文 text", "x" * 5000])
    assert v.shape == (4, 384) and v.dtype == np.float32
    assert np.all(np.isfinite(v))
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert embedder.embed([]).shape == (0, 384)
    with pytest.raises(TypeError):
        embedder.embed("not a list")  # type: ignore[arg-type]


@needs_model
def test_embed_deterministic_and_batch_independent(embedder: emb.Embedder) -> None:
    texts = ["What is the capital of France?", "short", "a much longer sentence " * 20]
    a = embedder.embed(texts)
    b = embedder.embed(texts)
    assert np.array_equal(a, b)
    singles = np.stack([embedder.embed([t])[0] for t in texts])
    np.testing.assert_allclose(a, singles, atol=1e-5)  # padding in a batch changes nothing
    assert emb.Embedder.shared() is embedder


@needs_model
def test_embed_truncates_at_256_tokens(embedder: emb.Embedder) -> None:
    assert len(embedder._tokenizer.encode("word " * 1000).ids) == emb.MAX_TOKENS
    head = "lorem ipsum dolor " * 120  # > 256 tokens: whatever follows is cut off
    v = embedder.embed([head + "apples", head + "quantum chromodynamics"])
    assert float(v[0] @ v[1]) > 0.9999


@needs_model
def test_similarity_ordering(embedder: emb.Embedder) -> None:
    # reference values from sentence-transformers' all-MiniLM-L6-v2 (PyTorch): 0.8939, 0.6788, 0.5096
    v = embedder.embed(
        [
            "The new movie is awesome",
            "The new movie is so great",
            "The cat sits outside",
            "The cat plays in the garden",
            "I love pasta",
            "Do you like pizza?",
        ]
    )
    s = v @ v.T
    assert abs(s[0, 1] - 0.8939) < 0.02
    assert abs(s[2, 3] - 0.6788) < 0.02
    assert abs(s[4, 5] - 0.5096) < 0.02
    assert s[0, 1] > s[0, 4] > s[0, 2]


OFFLINE_SCRIPT = r"""
import socket, sys
attempts = []
def refuse(*a, **k):
    attempts.append(a)
    raise OSError("network disabled by test")
socket.socket.connect = refuse
socket.socket.connect_ex = refuse
socket.create_connection = refuse
socket.getaddrinfo = refuse
from bastion.cache.embedder import Embedder
v = Embedder.shared().embed(["offline please", "no network"])
assert v.shape == (2, 384), v.shape
print("attempts", len(attempts))
sys.exit(1 if attempts else 0)
"""


@needs_model
def test_loads_and_embeds_with_network_disabled(tmp_path: Path) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),  # no hub cache, no config
        "PYTHONPATH": str(ROOT / "src"),
        "HF_HUB_OFFLINE": "0",
        "TRANSFORMERS_OFFLINE": "0",
    }
    proc = subprocess.run(
        [sys.executable, "-c", OFFLINE_SCRIPT],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "attempts 0" in proc.stdout


def test_missing_extra_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(emb, "_missing", lambda: ["onnxruntime"])
    with pytest.raises(emb.EmbedderUnavailable, match=r"pip install 'bastion-gateway\[semantic\]'"):
        emb.Embedder()


# ---- index -----------------------------------------------------------------------------------------------

P = ("tenant-a", "alias", "ctx")


def test_add_search_remove_threshold() -> None:
    idx = SemanticIndex()
    vs = rand_units(3)
    for i, v in enumerate(vs):
        idx.add(P, f"e{i}", v)
    assert len(idx) == 3 and idx.partition_size(P) == 3
    hit = idx.search(P, vs[1], 0.9)
    assert hit is not None and hit[0] == "e1" and hit[1] == pytest.approx(1.0, abs=1e-5)
    # a vector at cosine 0.8 from e1: found at 0.75, not at 0.85
    ortho = unit(np.random.default_rng(9).standard_normal(384).astype(np.float32))
    ortho = unit(ortho - (ortho @ vs[1]) * vs[1])
    q = 0.8 * vs[1] + 0.6 * ortho
    got = idx.search(P, q, 0.75)
    assert got is not None and got[0] == "e1" and got[1] == pytest.approx(0.8, abs=1e-4)
    assert idx.search(P, q, 0.85) is None
    idx.remove("e1")
    idx.remove("e1")  # unknown: no-op
    idx.remove("never-added")
    assert len(idx) == 2 and idx.search(P, vs[1], 0.9) is None
    assert idx.search(P, vs[2], 0.9)[0] == "e2"  # type: ignore[index]
    assert idx.search(("other",), vs[2], 0.0) is None
    idx.clear()
    assert len(idx) == 0 and idx.partition_size(P) == 0 and idx.search(P, vs[2], 0.0) is None


def test_partitions_never_compared() -> None:
    idx = SemanticIndex()
    v = rand_units(1)[0]
    idx.add(("tenant-a", "alias", "ctx"), "a-entry", v)
    # the very same vector, in every neighbouring partition: not found
    for other in [
        ("tenant-b", "alias", "ctx"),
        ("tenant-a", "alias2", "ctx"),
        ("tenant-a", "alias", "ctx2"),
        (),
    ]:
        assert idx.search(other, v, 0.0) is None
        assert idx.search(other, v, -1.0) is None
    idx.add(("tenant-b", "alias", "ctx"), "b-entry", v)
    assert idx.search(("tenant-a", "alias", "ctx"), v, 0.5)[0] == "a-entry"  # type: ignore[index]
    assert idx.search(("tenant-b", "alias", "ctx"), v, 0.5)[0] == "b-entry"  # type: ignore[index]
    with pytest.raises(TypeError):
        idx.add(["tenant-a"], "x", v)  # type: ignore[arg-type]


def test_re_add_replaces_and_moves() -> None:
    idx = SemanticIndex()
    a, b = rand_units(2)
    idx.add(P, "e", a)
    idx.add(P, "e", b)
    assert len(idx) == 1 and idx.search(P, a, 0.9) is None and idx.search(P, b, 0.9)[0] == "e"  # type: ignore[index]
    idx.add(("elsewhere",), "e", b)
    assert idx.partition_size(P) == 0 and idx.search(P, b, 0.0) is None
    assert idx.search(("elsewhere",), b, 0.9)[0] == "e"  # type: ignore[index]


def test_full_partition_drops_oldest_and_input_checks() -> None:
    idx = SemanticIndex(max_entries_per_partition=5)
    vs = rand_units(7)
    for i, v in enumerate(vs):
        idx.add(P, f"e{i}", v)
    assert idx.partition_size(P) == 5 and len(idx) == 5
    assert idx.search(P, vs[0], 0.99) is None and idx.search(P, vs[1], 0.99) is None
    assert idx.search(P, vs[6], 0.99)[0] == "e6"  # type: ignore[index]
    idx.add(P, "unnormalised", vs[2] * 7.0)  # normalised on the way in
    assert idx.search(P, vs[2] * 0.1, 0.99)[0] in {"e2", "unnormalised"}  # type: ignore[index]
    with pytest.raises(ValueError):
        idx.add(P, "zero", np.zeros(384, np.float32))
    with pytest.raises(ValueError):
        idx.add(P, "short", np.ones(10, np.float32))
    assert idx.search(P, np.ones(10, np.float32), 0.0) is None
    with pytest.raises(ValueError):
        SemanticIndex(0)


def test_lexical_guard_skips_to_next_candidate() -> None:
    idx = SemanticIndex()
    base = rand_units(1, seed=3)[0]
    near = unit(base + 0.05 * rand_units(1, seed=4)[0])
    idx.add(P, "int-to-str", base, text="How do I convert an integer to a string in Java?")
    idx.add(P, "str-to-int", near, text="Convert a string into an integer in Java, please")
    q = "How do I convert a string to an integer in Java?"
    # by cosine alone the nearest is the wrong question; with the text the guard skips it
    assert idx.search(P, base, 0.5)[0] == "int-to-str"  # type: ignore[index]
    got = idx.search(P, base, 0.5, text=q)
    assert got is not None and got[0] == "str-to-int" and got[1] < 0.999
    idx.remove("str-to-int")
    assert idx.search(P, base, 0.5, text=q) is None
    idx.add(P, "no-text", near)  # stored without text: nothing to check against
    assert idx.search(P, base, 0.5, text=q)[0] == "no-text"  # type: ignore[index]


@pytest.mark.parametrize(
    ("a", "b", "ok"),
    [
        ("How do I reset my password?", "how do i reset my password", True),
        ("What is the capital of France?", "Hey, can you tell me what the capital of France is?", True),
        ("What is the capital of France?", "What is the capital of Germany?", False),
        ("Convert 5 km to miles", "Convert 5 miles to km", False),
        ("Convert 5 km to miles", "Convert 10 km to miles", False),
        ("When did World War I end?", "When did World War II end?", False),
        ("How do I turn on notifications?", "How do I turn off notifications?", False),
        ("Is coffee good for you?", "Is coffee not good for you?", False),
        ("How do I install Docker?", "How do I install Docker Compose?", False),
        ("How do I upgrade my plan?", "How can I move to a higher subscription tier?", True),
        ("summarise: " + "x " * 400 + "alpha", "summarise: " + "x " * 400 + "beta", False),
    ],
)
def test_lexically_compatible(a: str, b: str, ok: bool) -> None:
    assert lexically_compatible(a, b) is ok
    assert lexically_compatible(b, a) is ok


def test_100k_entries_in_one_partition() -> None:
    n, dim = 100_000, 384
    xs = rand_units(n, dim, seed=1)
    idx = SemanticIndex()
    for i in range(n):
        idx.add(P, f"id{i}", xs[i])
    idx.add(("other-tenant", "alias", "ctx"), "foreign", xs[123])
    assert idx.partition_size(P) == n
    rng = np.random.default_rng(2)
    noise = unit(rng.standard_normal((20, dim)).astype(np.float32))
    targets = rng.choice(n, 20, replace=False)
    for t, e in zip(targets, noise, strict=True):
        q = unit(xs[t] + 0.35 * e)  # cosine ~0.94 to its source; random others are ~0 +- 0.05
        got = idx.search(P, q, 0.8)
        assert got is not None and got[0] == f"id{t}", (t, got)
        assert got[1] == pytest.approx(float(xs[t] @ q), abs=1e-4)
        assert idx.search(P, unit(rng.standard_normal(dim).astype(np.float32)), 0.8) is None
    # remove a third (swap-remove reorders rows): results still equal an exact reference
    gone = set(rng.choice(n, n // 3, replace=False).tolist())
    for i in gone:
        idx.remove(f"id{i}")
    assert idx.partition_size(P) == n - len(gone)
    keep = np.array(sorted(set(range(n)) - gone))
    for _ in range(10):
        q = unit(rng.standard_normal(dim).astype(np.float32))
        ref = keep[int(np.argmax(xs[keep] @ q))]
        got = idx.search(P, q, -1.0)
        assert got is not None and got[0] == f"id{ref}"
    assert idx.search(P, xs[next(iter(gone))], 0.99) is None
    assert idx.search(("other-tenant", "alias", "ctx"), xs[123], 0.99)[0] == "foreign"  # type: ignore[index]


def test_concurrent_add_remove_search() -> None:
    idx = SemanticIndex(max_entries_per_partition=500)
    vs = rand_units(2000, seed=5)
    errors: list[BaseException] = []

    def worker(w: int) -> None:
        try:
            part = ("t", "a", str(w % 2))
            for i in range(w, 2000, 4):
                idx.add(part, f"{w}-{i}", vs[i], text=f"question {i}")
                if i % 3 == 0:
                    idx.remove(f"{w}-{i - 4}")
                got = idx.search(part, vs[i], 0.99, text=f"question {i}")
                assert got is not None and got[0] == f"{w}-{i}"
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    assert len(idx) == idx.partition_size(("t", "a", "0")) + idx.partition_size(("t", "a", "1"))
    assert idx.partition_size(("t", "a", "0")) <= 500


# ---- quality on labelled pairs ---------------------------------------------------------------------------


@needs_model
def test_default_threshold_quality_on_labelled_pairs(embedder: emb.Embedder) -> None:
    """Wrong hits (label-0 pairs served as each other) stay under 1% at DEFAULT_THRESHOLD, through the index."""
    rows = [json.loads(line) for line in PAIRS.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert len(rows) >= 150 and {r["label"] for r in rows} == {0, 1}
    va = embedder.embed([r["a"] for r in rows])
    vb = embedder.embed([r["b"] for r in rows])
    idx = SemanticIndex()
    for i, r in enumerate(rows):
        idx.add(("t", "m", str(i)), f"a{i}", va[i], text=r["a"])
    hits = np.array(
        [
            idx.search(("t", "m", str(i)), vb[i], DEFAULT_THRESHOLD, text=r["b"]) is not None
            for i, r in enumerate(rows)
        ]
    )
    raw = np.array([float(va[i] @ vb[i]) >= DEFAULT_THRESHOLD for i in range(len(rows))])
    y = np.array([r["label"] for r in rows])
    pos, neg = int((y == 1).sum()), int((y == 0).sum())
    tp, fp = int((hits & (y == 1)).sum()), int((hits & (y == 0)).sum())
    precision = tp / max(tp + fp, 1)
    recall = tp / pos
    wrong_rate = fp / neg
    print(
        f"\nsemantic cache at threshold {DEFAULT_THRESHOLD}: {len(rows)} pairs ({pos} paraphrases, {neg} hard "
        f"negatives): precision {precision:.3f}, recall {recall:.3f}, wrong hits {fp}/{neg} ({wrong_rate:.1%}); "
        f"cosine alone would serve {int((raw & (y == 0)).sum())}/{neg} wrong at recall "
        f"{(raw & (y == 1)).sum() / pos:.3f}"
    )
    assert wrong_rate < 0.01
    assert recall >= 0.2  # measured 0.236: the guard is conservative on purpose, but must not collapse


def test_bench_cache_lookup_runs(tmp_path: Path) -> None:
    out = tmp_path / "lookup.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "cache_lookup.py"), "--sizes", "500,2000", "--queries", "20",
         "--json", str(out)],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr
    result = json.loads(out.read_text())
    assert json.loads(proc.stdout) == result and "| entries |" in proc.stderr
    assert [r["entries"] for r in result["runs"]] == [500, 2000]
    assert all(r["search"]["p50_ms"] > 0 for r in result["runs"])
    if emb.available():
        assert all(r["hits"] > 0 and r["embed+search"]["p99_ms"] > 0 for r in result["runs"])
