"""Nearest-neighbour index for the semantic cache: exact cosine search per partition, plus a lexical guard.

Partitions
    Every entry lives in one partition, an opaque tuple built by the caller as ``(tenant, alias,
    context_hash)``. A search only ever reads the matrix of the partition it names, so entries of another
    tenant, another alias or another conversation prefix are never compared (isolation by construction).

Index: exact brute force on a contiguous float32 matrix, chosen over HNSW
    Each partition keeps its unit vectors in one ``(capacity, 384)`` float32 matrix, grown by 1.5x and
    compacted by swap-remove, so a search is one matrix-vector product over ``n`` contiguous rows,
    computed with ``numpy.einsum`` (numpy's own SIMD loop: single-threaded, releases the GIL, and unlike
    the BLAS ``X @ q`` it does not spread over every core and then fight the event loop and the other
    requests for them). Measured on this 2-core machine, 100,000 random unit vectors of 384 dims, one
    query at a time, one thread::

        exact, numpy einsum (this module)        p50  7.4 ms   p99  8.0 ms   recall 100%   154 MB
        exact, numpy X @ q (OpenBLAS, 1 thread)  p50 12.6 ms   p99 13.0 ms
        exact, numpy X @ q (OpenBLAS, 2 threads, machine busy)  p50 16-51 ms  p99 55-270 ms
        exact, usearch 2.26 brute force i8       p50  9.6 ms
        HNSW, usearch 2.26 i8, M=16, ef=64       p50  0.51 ms  p99 0.76 ms   recall 88%    85 MB
        HNSW, usearch 2.26 i8, M=16, ef=256      p50  1.9 ms   p99 2.3 ms    recall 99.7%
        HNSW, usearch 2.26 i8, M=16, ef=1024     p50  7.1 ms   p99 8.1 ms    recall 100%
        HNSW insert at 100k entries: 1.1 ms each (58 s to build 100k on 2 threads); removals are tombstones

    (recall: the planted near-duplicate, cosine ~0.95, found as the top hit). HNSW is 4-15x faster per
    search but approximate, 1 ms per insert, and needs a compiled dependency; the exact matrix costs
    nothing to insert into or remove from, never misses, and returns every candidate above the threshold,
    which the lexical guard below needs. An embedding costs 3-6 ms anyway, so a lookup at the largest
    allowed partition (100,000 entries) is ~14 ms (p50, embed + search) against an upstream call of hundreds of ms; typical
    partitions are far smaller (search 0.2 ms at 1,000 entries, 0.9 ms at 10,000). ``bench/cache_lookup.py`` measures it.

The lexical guard: why cosine alone is not enough
    all-MiniLM-L6-v2 (like every small bi-encoder) cannot tell questions apart that differ by one swapped
    or substituted word: "convert a string to an integer in Java" vs "... an integer to a string ..." scores
    0.997, "convert 5 km to miles" vs "5 miles to km" 0.987, "weather in London today" vs "... tomorrow"
    0.958, "enable" vs "disable two-factor authentication" 0.884. On ``tests/data/paraphrases.jsonl``
    (321 labelled pairs: 165 paraphrases, 156 hard negatives of that kind) no cosine threshold keeps wrong
    hits under 1% with any recall left: 0.70 serves 96/156 wrong (recall 0.92), 0.90 15/156 (recall 0.40),
    0.95 still 7/156 (recall 0.12). So when both texts are known
    (``add(..., text=)`` and ``search(..., text=)``) a candidate above the threshold is accepted only if
    :func:`lexically_compatible` agrees: the same numbers, and when each text has at most two content words
    (stop and framing words removed, crudely stemmed) that the other lacks, the same content words in the
    same order. A near-identical wording with a word swapped, substituted or added is exactly where the
    embedding cannot be trusted and the meaning usually changed; texts reworded throughout (three or more
    different content words on a side) are left to the embedding. With the guard, ``DEFAULT_THRESHOLD``
    (0.70) gives 0 wrong hits on the 156 hard negatives (the lowest threshold with none is 0.65; 0.55 lets
    1 through) at precision 1.0 and recall 0.236 of the 165 paraphrases. The rules were written on the
    first 221 pairs and revised once after the next 60 showed that added words and particles ("Docker" vs
    "Docker Compose", "turn on" vs "turn off") got through (4/30 of those negatives at 0.8); on the last 40
    pairs, written after that, they let 0/20 negatives through at recall 0.25. The
    semantic cache catches re-askings that differ in phrasing, filler, politeness, casing and punctuation,
    and deliberately misses paraphrases that substitute a content word.
    Without a text on both sides the guard cannot run and only the cosine decides: callers should pass it.
"""

from __future__ import annotations

import re
import threading
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

DEFAULT_THRESHOLD = 0.70
_MIN_CAPACITY = 64
_GROWTH = 1.5
_MAX_CANDIDATES = 32  # candidates above the threshold checked against the guard, best first
_LONG_CHARS = 600  # beyond this a text may exceed the embedder's 256-token window: require same content

# ---- lexical guard --------------------------------------------------------------------------------------

_WORD = re.compile(r"[a-z0-9]+(?:[.'][a-z0-9]+)*")
# function words and request framing ("give me tips to ...", "what's the best way to ...") that do not
# change which question is asked; particles (on/off/up/down/out) and negations are content on purpose
_STOP = frozenset(
    """
    a an the this that these those it its it's i i'm me my mine we our us you your yours he she they them
    their his her is am are was were be been being do does did doing done have has had having will would
    shall should can could may might must what how who whom which whose what's how's who's
    to of in at by for from with about as into than then so and or but if
    please pls kindly just hey hi hello thanks thank tell give show explain describe let know want wanna
    need like help some any there here also too very really much many
    way ways tip tips step steps idea ideas suggest suggestion suggestions recommend recommendation
    recommendations guide process method best good right proper easy easiest simple simply quick quickly
    example examples
    """.split()
)
_NEGATION = frozenset(
    "not no never without nor cannot can't don't doesn't didn't isn't aren't won't shouldn't wouldn't".split()
)
_ROMAN = frozenset("ii iii iv v vi vii viii ix x xi xii".split())


def _stem(w: str) -> str:
    if len(w) > 3 and w.endswith("s") and not w.endswith(("ss", "us", "is")):
        w = w[:-1]
    for suffix in ("ing", "ed"):
        if w.endswith(suffix) and len(w) - len(suffix) >= 3:
            w = w[: -len(suffix)]
            break
    if len(w) > 3 and w.endswith("e"):
        w = w[:-1]
    return w


@dataclass(frozen=True, slots=True)
class _Lex:
    numbers: tuple[str, ...]
    content: tuple[str, ...]
    long: bool


def _lex(text: str) -> _Lex:
    words = _WORD.findall(text.lower())
    numbers = tuple(sorted(w for w in words if w in _ROMAN or any(c.isdigit() for c in w)))
    content = []
    for w in words:
        if w.endswith("'s"):
            w = w[:-2]
        if w in _NEGATION:
            content.append("not")
        elif w not in _STOP:
            content.append(_stem(w))
    return _Lex(numbers, tuple(content), len(text) > _LONG_CHARS)


def _compatible(a: _Lex, b: _Lex) -> bool:
    if a.numbers != b.numbers:
        return False  # "15% of 200" vs "20% of 150", "World War I" vs "World War II"
    if a.content == b.content:
        return True  # only function words, framing, casing or punctuation differ
    if a.long or b.long:
        return False  # the embedding saw at most the first 256 tokens
    if Counter(a.content) == Counter(b.content):
        return False  # same words, another order: "string to integer" vs "integer to string"
    sa, sb = set(a.content), set(b.content)
    only_a, only_b = sa - sb, sb - sa
    if len(only_a) <= 2 and len(only_b) <= 2:
        return False  # a near-identical question with a word substituted or added: France -> Germany
    return True  # reworded throughout: the embedding decides


def lexically_compatible(a: str, b: str) -> bool:
    """False when ``a`` and ``b`` are near-identical wordings that differ in a way embeddings miss."""
    return _compatible(_lex(a), _lex(b))


# ---- index ----------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Partition:
    dim: int
    mat: np.ndarray
    ids: list[str] = field(default_factory=list)
    lex: list[_Lex | None] = field(default_factory=list)
    seq: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))  # insertion order, rows as mat
    row: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _unit(vector: np.ndarray) -> np.ndarray:
    v = np.asarray(vector, dtype=np.float32).reshape(-1)
    n = float(np.linalg.norm(v))
    if not np.isfinite(n) or n == 0.0:
        raise ValueError("vector must be finite and non-zero")
    return v / n


class SemanticIndex:
    """Cosine nearest neighbour per partition. Thread-safe; search in different partitions runs in parallel."""

    def __init__(self, max_entries_per_partition: int = 100_000) -> None:
        if max_entries_per_partition < 1:
            raise ValueError("max_entries_per_partition must be >= 1")
        self.max_entries_per_partition = max_entries_per_partition
        self._lock = threading.Lock()  # partitions and _where; taken before a partition's lock, never after
        self._parts: dict[tuple[str, ...], _Partition] = {}
        self._where: dict[str, tuple[str, ...]] = {}
        self._seq = 0

    def __len__(self) -> int:
        return len(self._where)

    def partition_size(self, partition: tuple[str, ...]) -> int:
        p = self._parts.get(partition)
        return len(p.ids) if p is not None else 0

    def clear(self) -> None:
        with self._lock:
            self._parts.clear()
            self._where.clear()

    def add(
        self, partition: tuple[str, ...], entry_id: str, vector: np.ndarray, text: str | None = None
    ) -> None:
        """Insert (or replace) ``entry_id``. ``text``, the embedded text, enables the lexical guard.

        A full partition drops its oldest entry to make room.
        """
        if not isinstance(partition, tuple):
            raise TypeError("partition must be a tuple")
        v = _unit(vector)
        lex = _lex(text) if text is not None else None
        with self._lock:
            old = self._where.get(entry_id)
            if old is not None:
                self._remove_locked(old, entry_id)
            p = self._parts.get(partition)
            if p is None:
                p = self._parts[partition] = _Partition(
                    v.shape[0], np.empty((_MIN_CAPACITY, v.shape[0]), np.float32)
                )
                p.seq = np.empty(_MIN_CAPACITY, np.int64)
            if v.shape[0] != p.dim:
                raise ValueError(f"vector has {v.shape[0]} dimensions, the partition {p.dim}")
            with p.lock:
                if len(p.ids) >= self.max_entries_per_partition:
                    oldest = p.ids[int(np.argmin(p.seq[: len(p.ids)]))]
                    self._swap_remove(p, oldest)
                    del self._where[oldest]
                n = len(p.ids)
                if n == p.mat.shape[0]:
                    cap = min(max(int(n * _GROWTH), _MIN_CAPACITY), self.max_entries_per_partition)
                    grown = np.empty((max(cap, n + 1), p.dim), np.float32)
                    grown[:n] = p.mat[:n]
                    p.mat = grown
                    p.seq = np.resize(p.seq, grown.shape[0])
                p.mat[n] = v
                p.ids.append(entry_id)
                p.lex.append(lex)
                self._seq += 1
                p.seq[n] = self._seq
                p.row[entry_id] = n
            self._where[entry_id] = partition

    def remove(self, entry_id: str) -> None:
        """Forget ``entry_id`` (no-op when unknown)."""
        with self._lock:
            partition = self._where.get(entry_id)
            if partition is not None:
                self._remove_locked(partition, entry_id)

    def _remove_locked(self, partition: tuple[str, ...], entry_id: str) -> None:
        p = self._parts[partition]
        with p.lock:
            self._swap_remove(p, entry_id)
            if not p.ids:
                del self._parts[partition]
        del self._where[entry_id]

    @staticmethod
    def _swap_remove(p: _Partition, entry_id: str) -> None:
        i = p.row.pop(entry_id)
        last = len(p.ids) - 1
        if i != last:
            p.mat[i] = p.mat[last]
            moved = p.ids[i] = p.ids[last]
            p.lex[i] = p.lex[last]
            p.seq[i] = p.seq[last]
            p.row[moved] = i
        p.ids.pop()
        p.lex.pop()
        if p.mat.shape[0] > _MIN_CAPACITY and last < p.mat.shape[0] // 4:  # give memory back
            cap = max(last * 2, _MIN_CAPACITY)
            p.mat = p.mat[:cap].copy()
            p.seq = p.seq[:cap].copy()

    def search(
        self, partition: tuple[str, ...], vector: np.ndarray, threshold: float, text: str | None = None
    ) -> tuple[str, float] | None:
        """The most similar entry of ``partition`` with cosine >= ``threshold``, as (entry_id, similarity).

        With ``text`` (the query's embedded text), candidates whose stored text is lexically incompatible
        are skipped and the next best is tried.
        """
        p = self._parts.get(partition)
        if p is None:
            return None
        q = _unit(vector)
        lex = _lex(text) if text is not None else None
        with p.lock:
            n = len(p.ids)
            if n == 0 or q.shape[0] != p.dim:
                return None
            sims = np.einsum("ij,j->i", p.mat[:n], q)
            if lex is None:
                i = int(np.argmax(sims))
                s = float(sims[i])
                return (p.ids[i], min(s, 1.0)) if s >= threshold else None
            cand = np.flatnonzero(sims >= threshold)
            if cand.size == 0:
                return None
            if cand.size > _MAX_CANDIDATES:
                cand = cand[np.argpartition(-sims[cand], _MAX_CANDIDATES)[:_MAX_CANDIDATES]]
            for i in cand[np.argsort(-sims[cand], kind="stable")]:
                other = p.lex[i]
                if other is None or _compatible(lex, other):
                    return p.ids[i], min(float(sims[i]), 1.0)
            return None
